// The stagehost console: polls the admin API and draws the pipeline. Vanilla JS and SVG,
// one ES module per part.
//
// - GET /api/topology once: the drawing (topology.js, laid out by graph.js).
// - GET /metrics and GET /plugins every POLL_MS: live numbers (metrics.js), versions
//   (plugins.js).
// - GET /api/dlq every DLQ_POLL_MS: the pending dead letters (deadletters.js).
// - Actions use the admin API the CLI uses: POST /plugins/{stage}/rollback,
//   POST /api/dlq/replay, GET /api/trace/{key} (trace.js).
import { $ } from './util.js';
import { loadTopology } from './topology.js';
import { paintLive, pollMetrics } from './metrics.js';
import { pollPlugins } from './plugins.js';
import { pollDeadLetters } from './deadletters.js';
import { trace } from './trace.js';

const POLL_MS = 1500;
const DLQ_POLL_MS = 2000;

async function tick() {
  await Promise.allSettled([pollMetrics(), pollPlugins()]);
  paintLive();
  $('#updated').textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
}

$('#trace-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const key = $('#trace-key').value.trim();
  if (key) trace(key);
});
loadTopology().then(tick);
setInterval(tick, POLL_MS);

pollDeadLetters();
setInterval(pollDeadLetters, DLQ_POLL_MS);
