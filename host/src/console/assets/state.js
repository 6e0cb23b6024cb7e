// What the console knows, shared by its parts, and the look-ups made from it.

export const state = {
  topology: null,
  prefix: '',
  counts: null, // events in per stage at the previous sample
  countsAt: 0,
  live: {}, // stage -> {rate, lag, errors}
  metricVersions: {}, // stage -> version, from stagehost_plugin_info
  plugins: null, // GET /plugins
  pluginsKey: '',
  dlqKey: null, // ids of the letters shown, to redraw only when they change
  selected: null, // id of the dead letter whose envelope is shown
  letters: [],
};

/** A topic's name without the prefix every topic shares (test runs prefix them). */
export const topicName = (name) => (state.prefix && name.startsWith(state.prefix) ? name.slice(state.prefix.length) : name);

/** The stages of the topology, in pipeline order. */
export function stageNames() {
  return state.topology ? state.topology.stages.map((s) => s.name) : [];
}

/** A stage's live plugin version: from GET /plugins, else from stagehost_plugin_info. */
export function pluginVersion(stage) {
  const report = state.plugins && state.plugins.find((p) => p.stage === stage);
  return (report && report.version) || state.metricVersions[stage] || null;
}
