// The live numbers: GET /metrics (Prometheus text format) parsed into each stage's rate (per
// second, from a counter's delta between two samples: events in for a stage fed by topics,
// requests answered 2xx on its routes for a stage fed over HTTP), lag and dead letters,
// painted into the stage boxes. A number the host does not export shows "—".
import { $, DASH, adminFetch, formatCount, formatRate, shortVersion } from './util.js';
import { pluginVersion, stageNames, state } from './state.js';

/** The metric names the console reads (host/src/observe/catalogue.rs). */
const METRIC = {
  eventsIn: 'stagehost_stage_events_in_total',
  lag: 'stagehost_stage_lag_records',
  deadLetters: 'stagehost_stage_dead_letters_total',
  pluginInfo: 'stagehost_plugin_info',
  httpRequests: 'stagehost_http_requests_total',
};


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

/** Requests answered 2xx per stage fed over HTTP, summed over its routes (`METHOD path`). */
function ingressPerStage(samples, sources) {
  const sums = {};
  for (const s of samples) {
    if (s.name !== METRIC.httpRequests || !String(s.labels.status).startsWith('2')) continue;
    const source = sources.find((r) => r.name === `${s.labels.method} ${s.labels.route}`);
    if (source) sums[source.stage] = (sums[source.stage] || 0) + s.value;
  }
  return sums;
}

/** Samples GET /metrics and works out each stage's numbers (state.live). */
export async function pollMetrics() {
  let text;
  try {
    const response = await adminFetch('/metrics');
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
  const topology = state.topology || { stages: [], sources: [] };
  const http = new Set(topology.stages.filter((s) => s.inputs.includes('http')).map((s) => s.name));
  const counts = { ...(perStage(samples, METRIC.eventsIn) || {}), ...ingressPerStage(samples, topology.sources) };
  const lags = perStage(samples, METRIC.lag);
  const errors = perStage(samples, METRIC.deadLetters) || {};
  const live = {};
  for (const stage of stageNames()) {
    let rate;
    const seconds = (now - state.countsAt) / 1000;
    if (state.counts && seconds > 0) {
      // A counter not exported yet has counted nothing.
      rate = Math.max(0, ((counts[stage] || 0) - (state.counts[stage] || 0)) / seconds);
    }
    live[stage] = {
      rate,
      lag: http.has(stage) || !lags ? undefined : (lags[stage] ?? 0),
      errors: errors[stage] ?? 0,
    };
  }
  state.metricVersions = {};
  for (const s of samples) {
    if (s.name === METRIC.pluginInfo && s.labels.stage && s.value === 1) state.metricVersions[s.labels.stage] = s.labels.version;
  }
  state.live = live;
  state.counts = counts;
  state.countsAt = now;
  metricsStatus(true, '');
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
