// The topology's layout, without the DOM: nodes (routes, stages, topics) in layers from top to
// bottom, edges between them; an edge skipping layers runs on a lane to the right, an edge
// back up (a stage writing a topic only earlier stages read) on a lane to the left.

const SIZE = { stage: [196, 62], topic: [180, 26], source: [196, 26] };
const GAP_Y = 20;
const GAP_X = 22;
const LANE = 12;

/** Nodes with layers and positions, and edges with their routes. */
export function layout(topology) {
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
export function route(e, nodes) {
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
