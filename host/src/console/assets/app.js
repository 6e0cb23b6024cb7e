// The stagehost console: polls the admin API and draws the pipeline. Vanilla JS and SVG.
//
// - /api/topology once: the drawing (stages, topics, routes; arrows between them).
// - /metrics and /plugins every POLL_MS: each stage's rate (events in, per second, from the
//   counter's delta), lag and dead letters; the plugin versions. A number the host does not
//   export shows "—".
// - /api/dlq every DLQ_POLL_MS: the pending dead letters.
// - Actions use the admin API the CLI uses: POST /plugins/{stage}/rollback,
//   POST /api/dlq/replay, GET /api/trace/{key}.
'use strict';
(() => {
  const POLL_MS = 1500;
  const DLQ_POLL_MS = 2000;
  const DASH = '\u2014';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const METRIC = {
    eventsIn: 'stagehost_stage_events_in_total',
    lag: 'stagehost_stage_lag_records',
    deadLetters: 'stagehost_stage_dead_letters_total',
    pluginInfo: 'stagehost_plugin_info',
  };

  const state = {
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

  // ---- small helpers ---------------------------------------------------------------------

  const $ = (selector) => document.querySelector(selector);

  /** An HTML element with attributes (`text` sets its text) and children. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null) continue;
      if (key === 'text') node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  /** An SVG element with attributes. */
  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null) continue;
      if (key === 'text') node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  /** Fetches JSON; throws an Error carrying the host's `{"error"}` message. */
  async function api(method, url, body) {
    const options = { method, cache: 'no-store', headers: {} };
    if (body !== undefined) {
      options.headers['content-type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
    if (!response.ok) {
      const why = (json && json.error) || text || response.statusText;
      throw new Error(`${why} (HTTP ${response.status})`);
    }
    return json;
  }

  function say(id, text, kind = '') {
    const node = $(id);
    node.textContent = text;
    node.className = `message ${kind}`;
  }

  const shortVersion = (v) => (v ? String(v).replace(/^sha256:/, '').slice(0, 8) : DASH);
  const topicName = (name) => (state.prefix && name.startsWith(state.prefix) ? name.slice(state.prefix.length) : name);
  const clock = (iso) => {
    const at = new Date(iso);
    return Number.isNaN(at.getTime()) ? DASH : at.toISOString().slice(11, 19);
  };
  const clockMs = (iso) => {
    const at = new Date(iso);
    return Number.isNaN(at.getTime()) ? DASH : at.toISOString().slice(11, 23);
  };
  function age(seconds) {
    if (seconds === null || seconds === undefined) return DASH;
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
    if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }
  function formatRate(rate) {
    if (rate === undefined || rate === null || !Number.isFinite(rate)) return DASH;
    return rate < 10 ? rate.toFixed(1) : String(Math.round(rate));
  }
  const formatCount = (n) => (n === undefined || n === null || !Number.isFinite(n) ? DASH : String(Math.round(n)));

  /** The longest common prefix of the names that ends in `-`, `.` or `_` (test runs prefix
   *  every topic), or "". */
  function commonPrefix(names) {
    if (names.length < 2) return '';
    let prefix = names[0];
    for (const name of names) while (!name.startsWith(prefix)) prefix = prefix.slice(0, -1);
    const cut = Math.max(prefix.lastIndexOf('-'), prefix.lastIndexOf('.'), prefix.lastIndexOf('_'));
    return cut >= 0 ? prefix.slice(0, cut + 1) : '';
  }

  // ---- Prometheus text format ------------------------------------------------------------

  /** The samples of a Prometheus text exposition: [{name, labels, value}]. */
  function parseMetrics(text) {
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

  async function pollMetrics() {
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

  function stageNames() {
    return state.topology ? state.topology.stages.map((s) => s.name) : [];
  }

  /** Writes the live numbers and versions into the stage boxes. */
  function paintLive() {
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

  function pluginVersion(stage) {
    const report = state.plugins && state.plugins.find((p) => p.stage === stage);
    return (report && report.version) || state.metricVersions[stage] || null;
  }

  // ---- topology --------------------------------------------------------------------------

  const SIZE = { stage: [196, 62], topic: [180, 26], source: [196, 26] };
  const GAP_Y = 20;
  const GAP_X = 22;
  const LANE = 12;

  /** Nodes with layers and positions, and edges with their routes. */
  function layout(topology) {
    const nodes = new Map();
    const add = (id, kind, label, extra = {}) => {
      if (!nodes.has(id)) nodes.set(id, { id, kind, label, order: nodes.size, ...extra });
      return nodes.get(id);
    };
    const edges = [];
    const edge = (from, to) => {
      if (!edges.some((e) => e.from === from && e.to === to)) edges.push({ from, to });
    };
    const stageIndex = new Map(topology.stages.map((s, i) => [s.name, i]));
    for (const source of topology.sources) {
      add(`source:${source.name}`, 'source', source.name, { source });
      edge(`source:${source.name}`, `stage:${source.stage}`);
    }
    const topics = new Map(topology.topics.map((t) => [t.name, t]));
    const readers = new Map();
    for (const stage of topology.stages) {
      add(`stage:${stage.name}`, 'stage', stage.name, { stage });
      for (const input of stage.inputs) {
        if (input === 'http') continue;
        add(`topic:${input}`, 'topic', input, { topic: topics.get(input) });
        edge(`topic:${input}`, `stage:${stage.name}`);
        if (!readers.has(input)) readers.set(input, []);
        readers.get(input).push(stageIndex.get(stage.name));
      }
    }
    for (const stage of topology.stages) {
      for (const output of stage.outputs) {
        add(`topic:${output.topic}`, 'topic', output.topic, { topic: topics.get(output.topic) });
        edge(`stage:${stage.name}`, `topic:${output.topic}`);
      }
    }
    // Back edges: a stage writing a topic that only stages before it (in pipeline order) read;
    // then any edge still closing a cycle.
    for (const e of edges) {
      if (!e.from.startsWith('stage:') || !e.to.startsWith('topic:')) continue;
      const writer = stageIndex.get(e.from.slice(6));
      const read = readers.get(e.to.slice(6)) || [];
      e.back = read.length > 0 && read.every((r) => r < writer);
    }
    breakCycles(nodes, edges);
    assignLayers(nodes, edges);
    place(nodes, edges);
    return { nodes, edges };
  }

  function breakCycles(nodes, edges) {
    const out = new Map([...nodes.keys()].map((id) => [id, []]));
    for (const e of edges) if (!e.back) out.get(e.from).push(e);
    const mark = new Map();
    const visit = (id) => {
      mark.set(id, 'open');
      for (const e of out.get(id)) {
        const m = mark.get(e.to);
        if (m === 'open') e.back = true;
        else if (!m) visit(e.to);
      }
      mark.set(id, 'done');
    };
    for (const id of nodes.keys()) if (!mark.has(id)) visit(id);
  }

  /** Longest path from the nodes nothing leads to, over the forward edges. */
  function assignLayers(nodes, edges) {
    const forward = edges.filter((e) => !e.back);
    const incoming = new Map([...nodes.keys()].map((id) => [id, 0]));
    for (const e of forward) incoming.set(e.to, incoming.get(e.to) + 1);
    const queue = [...nodes.keys()].filter((id) => incoming.get(id) === 0);
    for (const id of queue) nodes.get(id).layer = 0;
    while (queue.length) {
      const id = queue.shift();
      for (const e of forward) {
        if (e.from !== id) continue;
        const to = nodes.get(e.to);
        to.layer = Math.max(to.layer ?? 0, nodes.get(id).layer + 1);
        incoming.set(e.to, incoming.get(e.to) - 1);
        if (incoming.get(e.to) === 0) queue.push(e.to);
      }
    }
    for (const e of edges) e.span = nodes.get(e.to).layer - nodes.get(e.from).layer;
  }

  /** Positions: layers top to bottom, each centred; long edges on lanes to the right, back
   *  edges on lanes to the left. */
  function place(nodes, edges) {
    const layers = [];
    for (const node of nodes.values()) {
      [node.w, node.h] = SIZE[node.kind];
      // Routes are monospace: as wide as their text.
      if (node.kind === 'source') node.w = Math.max(node.w, node.label.length * 7.3 + 24);
      (layers[node.layer] ||= []).push(node);
    }
    const long = edges.filter((e) => !e.back && e.span > 1);
    const back = edges.filter((e) => e.back);
    const side = (id) => (long.some((e) => e.from === id || e.to === id) ? 1 : 0) - (back.some((e) => e.from === id || e.to === id) ? 1 : 0);
    let y = 0;
    for (const layer of layers) {
      if (!layer) continue;
      for (const node of layer) {
        const parents = edges.filter((e) => !e.back && e.to === node.id).map((e) => nodes.get(e.from));
        const placed = parents.filter((p) => p.x !== undefined);
        node.key = placed.length ? placed.reduce((sum, p) => sum + p.x + p.w / 2, 0) / placed.length : node.order;
        node.key += side(node.id) * 10000;
      }
      layer.sort((a, b) => a.key - b.key || a.order - b.order);
      const width = layer.reduce((sum, n) => sum + n.w, 0) + GAP_X * (layer.length - 1);
      let x = -width / 2;
      const height = Math.max(...layer.map((n) => n.h));
      for (const node of layer) {
        node.x = x;
        node.y = y + (height - node.h) / 2;
        x += node.w + GAP_X;
      }
      y += height + GAP_Y;
    }
    const all = [...nodes.values()];
    const right = Math.max(...all.map((n) => n.x + n.w)) + 18;
    const left = Math.min(...all.map((n) => n.x)) - 18;
    assignLanes(long, nodes, right, LANE);
    assignLanes(back, nodes, left, -LANE);
  }

  /** Gives each edge a vertical lane at `base + i * step`: shorter edges nearer the nodes,
   *  edges whose layers do not overlap sharing a lane. */
  function assignLanes(list, nodes, base, step) {
    const range = (e) => {
      const [a, b] = [nodes.get(e.from).layer, nodes.get(e.to).layer];
      return [Math.min(a, b), Math.max(a, b)];
    };
    const sorted = [...list].sort((x, y) => {
      const [xa, xb] = range(x);
      const [ya, yb] = range(y);
      return (xb - xa) - (yb - ya) || xa - ya;
    });
    const lanes = [];
    for (const e of sorted) {
      const [lo, hi] = range(e);
      let i = lanes.findIndex((taken) => taken.every(([a, b]) => hi < a || lo > b));
      if (i < 0) i = lanes.push([]) - 1;
      lanes[i].push([lo, hi]);
      e.lane = base + i * step;
    }
  }

  /** The SVG path of an edge. */
  function route(e, nodes) {
    const u = nodes.get(e.from);
    const v = nodes.get(e.to);
    const r = 7;
    if (e.back) {
      const ly = u.y + u.h / 2;
      const vy = v.y + v.h / 2;
      const x = e.lane;
      return `M${u.x} ${ly} H${x + r} Q${x} ${ly} ${x} ${ly - r} V${vy + r} Q${x} ${vy} ${x + r} ${vy} H${v.x - 1}`;
    }
    if (e.span > 1) {
      const uy = u.y + u.h / 2;
      const vy = v.y + v.h / 2;
      const x = e.lane;
      return `M${u.x + u.w} ${uy} H${x - r} Q${x} ${uy} ${x} ${uy + r} V${vy - r} Q${x} ${vy} ${x - r} ${vy} H${v.x + v.w + 1}`;
    }
    const x1 = u.x + u.w / 2;
    const y1 = u.y + u.h;
    const x2 = v.x + v.w / 2;
    const y2 = v.y - 1;
    const mid = (y1 + y2) / 2;
    return `M${x1} ${y1} C${x1} ${mid} ${x2} ${mid} ${x2} ${y2}`;
  }

  function drawTopology(topology) {
    const { nodes, edges } = layout(topology);
    const all = [...nodes.values()];
    const lanes = edges.filter((e) => e.lane !== undefined).map((e) => e.lane);
    const minX = Math.min(...all.map((n) => n.x), ...lanes) - 12;
    const maxX = Math.max(...all.map((n) => n.x + n.w), ...lanes) + 12;
    const maxY = Math.max(...all.map((n) => n.y + n.h)) + 8;
    const root = svg('svg', {
      viewBox: `${minX} -8 ${maxX - minX} ${maxY + 8}`,
      role: 'img',
      'aria-label': `pipeline of ${topology.stages.length} stages`,
    });
    root.append(svg('defs', {}, svg('marker', {
      id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
    }, svg('path', { d: 'M0 0 L10 5 L0 10 z', class: 'arrow' }))));
    for (const e of edges) {
      root.append(svg('path', { d: route(e, nodes), class: `edge${e.back ? ' back' : ''}`, 'marker-end': 'url(#arrow)' }));
    }
    for (const node of all) root.append(drawNode(node));
    const box = $('#topology');
    box.replaceChildren(root);
  }

  function drawNode(node) {
    const g = svg('g', { class: `node ${node.kind}`, transform: `translate(${node.x} ${node.y})` });
    const radius = node.kind === 'stage' ? 8 : node.h / 2;
    g.append(svg('rect', { width: node.w, height: node.h, rx: radius, ry: radius }));
    if (node.kind === 'stage') {
      const stage = node.stage;
      g.setAttribute('data-stage', stage.name);
      g.append(svg('title', { text: `stage ${stage.name} (${stage.mode.replace(/_/g, ' ')})\ninputs: ${stage.inputs.join(', ')}\noutputs: ${stage.outputs.map((o) => `${o.name} → ${o.topic}`).join(', ')}` }));
      g.append(svg('text', { x: 10, y: 18, class: 'name', text: stage.name }));
      g.append(svg('text', { x: node.w - 9, y: 17, class: 'mode', 'text-anchor': 'end', text: stage.mode === 'exactly_once' ? 'exactly once' : 'at least once' }));
      g.append(svg('text', { x: 10, y: 37, class: 'live' },
        svg('tspan', { class: 'rate', 'data-value': '', text: DASH }),
        svg('tspan', { text: ' ev/s   lag ' }),
        svg('tspan', { class: 'lag', 'data-value': '', text: DASH }),
        svg('tspan', { text: '   dlq ' }),
        svg('tspan', { class: 'err', 'data-value': '', text: DASH })));
      g.append(svg('text', { x: 10, y: 54, class: 'version', 'data-version': '', text: `v ${DASH}` }));
    } else if (node.kind === 'topic') {
      const topic = node.topic || { name: node.label, partitions: null, event_type: node.label };
      g.setAttribute('data-topic', topic.name);
      g.append(svg('title', { text: `topic ${topic.name}\n${topic.partitions ?? '?'} partitions, events ${topic.event_type}` }));
      const label = topicName(topic.name);
      const text = svg('text', { x: node.w / 2, y: 17, 'text-anchor': 'middle', text: label.length > 24 ? `${label.slice(0, 23)}…` : label });
      g.append(text);
    } else {
      g.setAttribute('data-source', node.label);
      g.append(svg('title', { text: `HTTP route ${node.label} → stage ${node.source.stage} (${node.source.event_type})` }));
      g.append(svg('text', { x: node.w / 2, y: 17, 'text-anchor': 'middle', class: 'mono', text: node.label }));
    }
    return g;
  }

  async function loadTopology() {
    for (;;) {
      try {
        const topology = await api('GET', '/api/topology');
        state.topology = topology;
        state.prefix = commonPrefix(topology.topics.map((t) => t.name));
        $('#topic-prefix').textContent = state.prefix ? `topics ${state.prefix}…` : '';
        drawTopology(topology);
        const notes = [`Every stage also writes what it cannot process to ${topicName(topology.dead_letter_topic)}`];
        if (topology.kpi_topic) notes[0] += ` and its KPIs to ${topicName(topology.kpi_topic)}`;
        for (const view of topology.views) notes.push(`GET ${view.path} reads ${topicName(view.topic)}`);
        $('#topology-note').textContent = `${notes.join('. ')}.`;
        paintLive();
        return;
      } catch (error) {
        $('#topology').replaceChildren(el('p', { class: 'message error', text: `cannot load the topology: ${error.message}; retrying` }));
        await new Promise((done) => setTimeout(done, 2000));
      }
    }
  }

  // ---- plugins ---------------------------------------------------------------------------

  async function pollPlugins() {
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

  // ---- dead letters ----------------------------------------------------------------------

  let dlqBusy = false;
  async function pollDeadLetters() {
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

  // ---- trace -----------------------------------------------------------------------------

  async function trace(key) {
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

  // ---- start -----------------------------------------------------------------------------

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
})();
