// The plugins panel: each stage's live version, when it went live, and a rollback button
// (POST /plugins/{stage}/rollback, as `stagehost plugin rollback`).
import { $, DASH, api, clock, el, say, shortVersion } from './util.js';
import { stageNames, state } from './state.js';
import { paintLive } from './metrics.js';

export async function pollPlugins() {
  try {
    state.plugins = await api('GET', '/plugins');
  } catch (error) {
    say('#plugins-message', `cannot list the plugins: ${error.message}`, 'error');
    return;
  }
  const order = stageNames();
  state.plugins.sort((a, b) => order.indexOf(a.stage) - order.indexOf(b.stage));
  const key = JSON.stringify(state.plugins);
  if (key === state.pluginsKey) return;
  state.pluginsKey = key;
  const rows = state.plugins.map((report) => {
    const current = report.history[report.history.length - 1] || {};
    const previous = report.history[report.history.length - 2];
    const since = current.live_since || current.deployed_at;
    const button = el('button', {
      class: 'rollback',
      'data-stage': report.stage,
      title: previous ? `back to ${previous.version}` : 'no earlier version to go back to',
      text: 'Roll back',
    });
    button.disabled = !previous;
    button.addEventListener('click', () => rollback(report.stage, report.version, previous && previous.version, button));
    return el('tr', { 'data-stage': report.stage },
      el('td', { text: report.stage }),
      el('td', { class: 'version mono', 'data-version': report.version, title: `${report.version}\n${current.path || ''}`, text: shortVersion(report.version) }),
      el('td', { class: 'mono', title: since || '', text: since ? clock(since) : DASH }),
      el('td', { class: 'num', text: String(report.swaps) }),
      el('td', {}, button));
  });
  $('#plugins tbody').replaceChildren(...rows);
}

async function rollback(stage, current, previous, button) {
  if (!window.confirm(`Roll stage ${stage} back from ${shortVersion(current)} to ${shortVersion(previous)}?`)) return;
  button.disabled = true;
  try {
    const outcome = await api('POST', `/plugins/${encodeURIComponent(stage)}/rollback`);
    say('#plugins-message', `${outcome.stage}: rolled back ${shortVersion(outcome.previous)} → ${shortVersion(outcome.version)}`, 'ok');
  } catch (error) {
    say('#plugins-message', `rollback of ${stage} refused: ${error.message}`, 'error');
  }
  state.pluginsKey = '';
  await pollPlugins();
  paintLive();
}
