// The key lookup: GET /api/trace/{key} (what `stagehost trace --json` prints) drawn as a
// timeline, one row per event with its hop and its place between the first and the last.
import { $, DASH, api, clockMs, el, say } from './util.js';
import { state, topicName } from './state.js';

export async function trace(key) {
  say('#trace-message', `tracing ${key}…`);
  let result;
  try {
    result = await api('GET', `/api/trace/${encodeURIComponent(key)}`);
  } catch (error) {
    say('#trace-message', `cannot trace ${key}: ${error.message}`, 'error');
    return;
  }
  const events = result.events;
  if (!events.length) {
    say('#trace-message', `no event of key ${key} on the pipeline's topics`, 'error');
    $('#trace').replaceChildren();
    return;
  }
  say('#trace-message', '');
  const first = events[0].timestamp_ms;
  const span = Math.max(1, result.total_ms || 0);
  const dead = state.topology ? state.topology.dead_letter_topic : null;
  const rows = events.map((event) => {
    const dot = el('div', { class: 'dot' });
    dot.style.left = `${((event.timestamp_ms - first) / span) * 100}%`;
    const by = event.source && event.source.startsWith('/stagehost/') ? event.source.slice(11) : event.source || DASH;
    return el('tr', { class: `event${event.topic === dead ? ' dead' : ''}`, title: JSON.stringify(event.payload, null, 2) },
      el('td', { class: 'when mono', text: clockMs(event.time) }),
      el('td', { class: 'num mono', text: event.hop_ms === null ? DASH : `+${event.hop_ms}` }),
      el('td', { class: 'bar' }, el('div', { class: 'track' }, dot)),
      el('td', { text: topicName(event.topic) }),
      el('td', { class: 'muted', text: `${event.partition}@${event.offset}` }),
      el('td', { text: by }));
  });
  const table = el('table', { class: 'timeline' },
    el('thead', {}, el('tr', {},
      el('th', { text: 'time (UTC)' }), el('th', { text: '+ms' }), el('th', { text: `0 → ${result.total_ms} ms` }),
      el('th', { text: 'topic' }), el('th', { text: 'at' }), el('th', { text: 'by' }))),
    el('tbody', {}, ...rows));
  const parts = [table];
  for (const letter of result.dead_letters) {
    parts.push(el('p', { class: 'message error', text: `dead letter: ${letter.reason} in stage ${letter.stage} (from ${topicName(letter.source_topic)} ${letter.partition}@${letter.offset})${letter.replayed_at ? `, replayed ${letter.replayed_at}` : ''}: ${letter.error}` }));
  }
  parts.push(el('p', { class: 'total', text: `${events.length} events, ${result.dead_letters.length} dead letter(s); first → last ${result.total_ms} ms` }));
  $('#trace').replaceChildren(...parts);
}
