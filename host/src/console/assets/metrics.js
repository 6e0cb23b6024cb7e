// The live numbers: GET /metrics (Prometheus text format) parsed into each stage's rate
// (events in per second, from the counter's delta between two samples), lag and dead
// letters, painted into the stage boxes. A number the host does not export shows "—".
import { $, DASH, formatCount, formatRate, shortVersion } from './util.js';
import { pluginVersion, stageNames, state } from './state.js';

/** The metric names the console reads (host/src/observe/catalogue.rs). */
const METRIC = {
  eventsIn: 'stagehost_stage_events_in_total',
  lag: 'stagehost_stage_lag_records',
  deadLetters: 'stagehost_stage_dead_letters_total',
  pluginInfo: 'stagehost_plugin_info',
};

// ---- Prometheus text format ------------------------------------------------------------

/** The samples of a Prometheus text exposition: [{name, labels, value}]. */
export function parseMetrics(text) {
  const samples = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      for (const l of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"/g)) {
        labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      }
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** Sums `name` per stage label: {stage: value}; null when the host exports no such series. */
function perStage(samples, name) {
  let seen = false;
  const sums = {};
  for (const s of samples) {
    if (s.name !== name || s.labels.stage === undefined || !Number.isFinite(s.value)) continue;
    seen = true;
    sums[s.labels.stage] = (sums[s.labels.stage] || 0) + s.value;
  }
  return seen ? sums : null;
}

// ---- live numbers ----------------------------------------------------------------------

export async function pollMetrics() {
  let text;
  try {
    const response = await fetch('/metrics', { cache: 'no-store' });
    if (!response.ok) throw new Error(`GET /metrics answered ${response.status}`);
    text = await response.text();
  } catch (error) {
    metricsStatus(false, String(error.message || error));
    state.live = {};
    state.counts = null;
    return;
  }
  const samples = parseMetrics(text);
  const now = performance.now();
  const counts = perStage(samples, METRIC.eventsIn);
  const lags = perStage(samples, METRIC.lag);
  const errors = perStage(samples, METRIC.deadLetters);
  const live = {};
  for (const stage of stageNames()) {
    let rate;
    if (counts && state.counts && counts[stage] !== undefined && state.counts[stage] !== undefined) {
      const seconds = (now - state.countsAt) / 1000;
      if (seconds > 0) rate = Math.max(0, (counts[stage] - state.counts[stage]) / seconds);
    } else if (counts && state.counts && counts[stage] === undefined) {
      rate = 0; // the stage has not counted an event yet
    }
    live[stage] = {
      rate,
      lag: lags ? (lags[stage] ?? 0) : undefined,
      errors: errors ? (errors[stage] ?? 0) : undefined,
    };
  }
  state.metricVersions = {};
  for (const s of samples) {
    if (s.name === METRIC.pluginInfo && s.labels.stage && s.value === 1) state.metricVersions[s.labels.stage] = s.labels.version;
  }
  state.live = live;
  state.counts = counts;
  state.countsAt = now;
  metricsStatus(counts !== null, counts === null ? `GET /metrics has no ${METRIC.eventsIn}` : '');
}

function metricsStatus(ok, why) {
  const pill = $('#metrics-status');
  pill.textContent = ok ? 'metrics live' : 'metrics unavailable';
  pill.className = `pill ${ok ? 'live' : 'off'}`;
  pill.title = ok ? 'numbers from GET /metrics' : `${why}: numbers show ${DASH}`;
}

/** Writes the live numbers and versions into the stage boxes. */
export function paintLive() {
  for (const stage of stageNames()) {
    const box = document.querySelector(`g.stage[data-stage="${CSS.escape(stage)}"]`);
    if (!box) continue;
    const live = state.live[stage] || {};
    setNumber(box.querySelector('.rate'), live.rate, formatRate(live.rate), 'flowing', live.rate > 0);
    setNumber(box.querySelector('.lag'), live.lag, formatCount(live.lag), 'busy', live.lag > 0);
    setNumber(box.querySelector('.err'), live.errors, formatCount(live.errors), 'bad', live.errors > 0);
    const version = pluginVersion(stage);
    const label = box.querySelector('.version');
    label.textContent = version ? `v ${shortVersion(version)}` : `v ${DASH}`;
    label.setAttribute('data-version', version || '');
  }
}

function setNumber(node, value, text, flag, on) {
  if (!node) return;
  node.textContent = text;
  node.setAttribute('data-value', value === undefined || value === null || !Number.isFinite(value) ? '' : String(value));
  node.classList.toggle(flag, Boolean(on));
}
