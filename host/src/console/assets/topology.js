// The topology drawing (SVG) from GET /api/topology, with a box per stage for the live numbers.
import { $, DASH, api, commonPrefix, el, svg } from './util.js';
import { state, topicName } from './state.js';
import { layout, route } from './graph.js';
import { paintLive } from './metrics.js';

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

export async function loadTopology() {
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
