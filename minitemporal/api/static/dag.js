// The job's DAG as an SVG graph: columns by depth (the longest path from a root), nodes in a
// column ordered by the barycenter of their neighbours to reduce crossings, edges as arrows.

import { svg, clear } from "./dom.js";
import { stateLabel } from "./format.js";

export const BOX = { width: 176, height: 46, gapX: 64, gapY: 16, pad: 24 };
const MAX_LABEL = 22;

/**
 * Positions for nodes [{id, depends_on}]: {nodes: Map(id -> {x, y, depth, row}), edges:
 * [{from, to}], width, height, depths}. Pure: the tests import it.
 */
export function layout(nodes) {
  const index = new Map(nodes.map((n, i) => [n.id, i]));
  const parents = nodes.map((n) =>
    [...new Set(n.depends_on || [])].filter((d) => index.has(d)).map((d) => index.get(d)),
  );
  const children = nodes.map(() => []);
  parents.forEach((ps, i) => ps.forEach((p) => children[p].push(i)));

  // Longest path from a root, in topological order (Kahn). The api rejects cycles; should one
  // slip through, its nodes land in column 0 rather than hang the page.
  const depth = new Array(nodes.length).fill(0);
  const waiting = parents.map((ps) => ps.length);
  const queue = [];
  waiting.forEach((w, i) => w === 0 && queue.push(i));
  for (let head = 0; head < queue.length; head++) {
    const i = queue[head];
    for (const c of children[i]) {
      depth[c] = Math.max(depth[c], depth[i] + 1);
      if (--waiting[c] === 0) queue.push(c);
    }
  }

  const columns = [];
  nodes.forEach((_, i) => (columns[depth[i]] ||= []).push(i));
  for (let d = 0; d < columns.length; d++) columns[d] ||= [];
  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const row = new Array(nodes.length).fill(0);
  // A column shorter than the tallest is centred: its rows are offset by half the difference.
  const place = () =>
    columns.forEach((col) => {
      const offset = (tallest - col.length) / 2;
      col.forEach((i, r) => (row[i] = r + offset));
    });
  place();

  const barycenter = (i, neighbours) =>
    neighbours[i].length ? neighbours[i].reduce((s, j) => s + row[j], 0) / neighbours[i].length : row[i];
  const sortBy = (col, neighbours) => {
    const keyed = col.map((i, k) => [barycenter(i, neighbours), k, i]);
    keyed.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    return keyed.map((e) => e[2]);
  };
  for (let sweep = 0; sweep < 4; sweep++) {
    for (let d = 1; d < columns.length; d++) {
      columns[d] = sortBy(columns[d], parents);
      place();
    }
    for (let d = columns.length - 2; d >= 0; d--) {
      columns[d] = sortBy(columns[d], children);
      place();
    }
  }

  const positions = new Map();
  nodes.forEach((n, i) => {
    positions.set(n.id, {
      x: BOX.pad + depth[i] * (BOX.width + BOX.gapX),
      y: BOX.pad + row[i] * (BOX.height + BOX.gapY),
      depth: depth[i],
      row: row[i],
    });
  });
  const edges = [];
  parents.forEach((ps, i) => ps.forEach((p) => edges.push({ from: nodes[p].id, to: nodes[i].id })));
  return {
    nodes: positions,
    edges,
    depths: columns.length,
    width: BOX.pad * 2 + columns.length * BOX.width + Math.max(0, columns.length - 1) * BOX.gapX,
    height: BOX.pad * 2 + tallest * BOX.height + (tallest - 1) * BOX.gapY,
  };
}

function shorten(text) {
  return text.length > MAX_LABEL ? text.slice(0, MAX_LABEL - 1) + "…" : text;
}

function stateText(node) {
  const label = stateLabel(node.state);
  return node.attempt > 1 ? `${label} · attempt ${node.attempt}` : label;
}

function edgePath(a, b) {
  const x1 = a.x + BOX.width;
  const y1 = a.y + BOX.height / 2;
  const x2 = b.x - 2;
  const y2 = b.y + BOX.height / 2;
  const bend = Math.max(24, (x2 - x1) / 2);
  return `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`;
}

/**
 * Draw `nodes` into the <svg> `root`. Returns {update(node), select(id), zoom(factor)}:
 * update() restyles one node in place (no relayout: a job's graph never changes shape).
 */
export function drawDag(root, nodes, { onSelect }) {
  clear(root);
  const geometry = layout(nodes);
  let scale = 1;
  const resize = () => {
    root.setAttribute("width", Math.round(geometry.width * scale));
    root.setAttribute("height", Math.round(geometry.height * scale));
  };
  root.setAttribute("viewBox", `0 0 ${geometry.width} ${geometry.height}`);
  resize();

  root.append(
    svg(
      "defs",
      {},
      svg(
        "marker",
        {
          id: "dag-arrow",
          viewBox: "0 0 10 10",
          refX: 9,
          refY: 5,
          markerUnits: "userSpaceOnUse",
          markerWidth: 8,
          markerHeight: 8,
          orient: "auto-start-reverse",
        },
        svg("path", { d: "M0,0 L10,5 L0,10 z", class: "dag-arrowhead" }),
      ),
    ),
  );

  const edgeLayer = svg("g", { class: "dag-edges" });
  const edgeEls = [];
  for (const { from, to } of geometry.edges) {
    const path = svg("path", {
      class: "dag-edge",
      d: edgePath(geometry.nodes.get(from), geometry.nodes.get(to)),
      "marker-end": "url(#dag-arrow)",
      "data-from": from,
      "data-to": to,
    });
    edgeEls.push(path);
    edgeLayer.append(path);
  }

  const nodeLayer = svg("g", { class: "dag-nodes" });
  const groups = new Map();
  let selected = null;
  for (const node of nodes) {
    const p = geometry.nodes.get(node.id);
    const title = svg("title", {});
    const stateEl = svg("text", { class: "dag-node-state", x: 12, y: 34 });
    const group = svg(
      "g",
      {
        class: "dag-node",
        transform: `translate(${p.x},${p.y})`,
        tabindex: 0,
        role: "button",
        "data-testid": "dag-node",
        "data-node-id": node.id,
        onclick: () => onSelect(node.id),
        onkeydown: (e) => {
          if (e.key === "Enter" || e.key === " ") {
            e.preventDefault();
            onSelect(node.id);
          }
        },
      },
      title,
      svg("rect", { class: "dag-node-box", width: BOX.width, height: BOX.height, rx: 7 }),
      svg("rect", { class: "dag-node-bar", width: 5, height: BOX.height, rx: 2 }),
      svg("text", { class: "dag-node-id", x: 12, y: 19 }, shorten(node.id)),
      stateEl,
    );
    groups.set(node.id, { group, title, stateEl });
    nodeLayer.append(group);
  }
  root.append(edgeLayer, nodeLayer);

  function update(node) {
    const g = groups.get(node.id);
    if (!g) return;
    g.group.setAttribute("data-state", node.state);
    g.group.setAttribute("data-attempt", node.attempt || 0);
    const chosen = node.id === selected ? " selected" : "";
    g.group.setAttribute("class", `dag-node state-${node.state}${chosen}`);
    g.group.setAttribute("aria-label", `${node.id}: ${stateLabel(node.state)}`);
    g.stateEl.textContent = stateText(node);
    const name = node.name && node.name !== node.id ? ` (${node.name})` : "";
    g.title.textContent = `${node.id}${name}\n${stateText(node)}`;
  }
  nodes.forEach(update);

  function select(id) {
    selected = id;
    for (const [nodeId, g] of groups) g.group.classList.toggle("selected", nodeId === id);
    for (const path of edgeEls) {
      const near = id !== null && (path.dataset.from === id || path.dataset.to === id);
      path.classList.toggle("near", near);
    }
  }

  function zoom(factor) {
    scale = factor === null ? 1 : Math.min(2, Math.max(0.2, scale * factor));
    resize();
    return scale;
  }

  return { update, select, zoom, geometry };
}
