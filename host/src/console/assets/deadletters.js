// The dead-letter panel: the pending letters (GET /api/dlq), the envelope of the one clicked,
// and a replay button (POST /api/dlq/replay, as `stagehost dlq replay --id`).
import { $, DASH, age, api, el, say } from './util.js';
import { state, topicName } from './state.js';

let dlqBusy = false;
export async function pollDeadLetters() {
  if (dlqBusy) return;
  dlqBusy = true;
  try {
    const pending = await api('GET', '/api/dlq');
    state.letters = pending.letters;
    $('#dlq-count').textContent = `${pending.total} pending`;
    const key = pending.letters.map((l) => l.id).join(',');
    if (key === state.dlqKey) {
      for (const letter of pending.letters) {
        const cell = document.querySelector(`#dlq tr[data-id="${CSS.escape(letter.id)}"] .age`);
        if (cell) cell.textContent = age(letter.age_seconds);
      }
    } else {
      state.dlqKey = key;
      renderLetters(pending.letters);
    }
  } catch (error) {
    say('#dlq-message', `cannot read the dead letters: ${error.message}`, 'error');
  } finally {
    dlqBusy = false;
  }
}

function renderLetters(letters) {
  if (!letters.length) {
    $('#dlq tbody').replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'muted', text: 'no pending dead letter' })));
    showEnvelope(null);
    return;
  }
  const rows = letters.map((letter) => {
    const button = el('button', { class: 'replay', text: 'Replay', title: `send it back to ${letter.source_topic} for stage ${letter.stage}` });
    button.addEventListener('click', (event) => {
      event.stopPropagation();
      replay(letter, button);
    });
    const row = el('tr', { class: 'letter', 'data-id': letter.id, 'data-key': letter.key || '', title: letter.error },
      el('td', { class: 'reason', text: letter.reason }),
      el('td', { text: letter.stage }),
      el('td', { class: 'mono', text: `${topicName(letter.source_topic)} ${letter.partition}@${letter.offset}` }),
      el('td', { class: 'mono', text: letter.key || DASH }),
      el('td', { class: 'age num', text: age(letter.age_seconds) }),
      el('td', {}, button));
    row.addEventListener('click', () => showEnvelope(letter.id));
    return row;
  });
  $('#dlq tbody').replaceChildren(...rows);
  showEnvelope(state.selected);
}

function showEnvelope(id) {
  const letter = id && state.letters.find((l) => l.id === id);
  state.selected = letter ? id : null;
  for (const row of document.querySelectorAll('#dlq tr.letter')) row.classList.toggle('selected', row.getAttribute('data-id') === state.selected);
  const pre = $('#envelope');
  if (!letter) {
    pre.hidden = true;
    pre.textContent = '';
    return;
  }
  const { age_seconds: _, ...envelope } = letter;
  pre.textContent = JSON.stringify(envelope, null, 2);
  pre.hidden = false;
}

async function replay(letter, button) {
  if (!window.confirm(`Replay dead letter ${letter.id} to ${topicName(letter.source_topic)} for stage ${letter.stage}?`)) return;
  button.disabled = true;
  try {
    const report = await api('POST', '/api/dlq/replay', { stage: letter.stage, id: letter.id });
    const parts = [];
    if (report.replayed.length) parts.push(`replayed ${report.replayed.length}`);
    for (const [id, at] of report.already_replayed) parts.push(`${id.slice(0, 8)}… already replayed at ${at}`);
    for (const [id, why] of report.not_replayable) parts.push(`${id.slice(0, 8)}… cannot be replayed: ${why}`);
    say('#dlq-message', parts.join('; ') || 'nothing to replay', report.not_replayable.length ? 'error' : 'ok');
  } catch (error) {
    say('#dlq-message', `replay failed: ${error.message}`, 'error');
    button.disabled = false;
  }
  state.dlqKey = null;
  await pollDeadLetters();
}
