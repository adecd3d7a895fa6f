// The flow drawn as a tree, left to right: each node a box coloured by its state, a group's kind
// (sequence, parallel, chord, each) written in its box; hidden children of a big map as one box of
// counts. And the attempts as a timeline: one bar per attempt, from start to end, by node.
"use strict";

const BOX_W = 150, BOX_H = 26, GAP_X = 40, GAP_Y = 8;

function layout(nodes) {
  const byPath = new Map(nodes.map((node) => [node.path, node]));
  const places = new Map();
  let row = 0;
  function place(node, depth) {
    const kids = node.children.map((path) => byPath.get(path)).filter(Boolean);
    const extra = Object.keys(node.hidden || {}).length ? 1 : 0;
    if (!kids.length && !extra) { places.set(node.path, { x: depth, y: row++ }); return; }
    const ys = kids.map((kid) => { place(kid, depth + 1); return places.get(kid.path).y; });
    if (extra) { places.set(node.path + "/hidden", { x: depth + 1, y: row }); ys.push(row++); }
    places.set(node.path, { x: depth, y: (Math.min(...ys) + Math.max(...ys)) / 2 });
  }
  const root = nodes.find((node) => node.parent === null);
  if (root) place(root, 0);
  return { places, rows: row };
}

function label(node) {
  if (node.kind === "call") return node.command + (node.attempts > 1 ? ` ×${node.attempts}` : "");
  return node.kind + (node.command ? " " + node.command : "");
}

function drawGraph(where, nodes) {
  const { places, rows } = layout(nodes);
  const depth = Math.max(0, ...[...places.values()].map((p) => p.x)) + 1;
  const at = (p) => ({ x: 4 + p.x * (BOX_W + GAP_X), y: 4 + p.y * (BOX_H + GAP_Y) });
  const picture = svg("svg", { width: depth * (BOX_W + GAP_X), height: rows * (BOX_H + GAP_Y) + 8, id: "flow-graph" });
  for (const node of nodes) {
    const from = at(places.get(node.path));
    const targets = [...node.children, ...(Object.keys(node.hidden).length ? [node.path + "/hidden"] : [])];
    for (const path of targets) {
      const to = places.get(path);
      if (!to) continue;
      const end = at(to);
      picture.append(svg("line", { x1: from.x + BOX_W, y1: from.y + BOX_H / 2, x2: end.x, y2: end.y + BOX_H / 2, stroke: "#9aa3b2" }));
    }
  }
  for (const node of nodes) {
    const p = at(places.get(node.path));
    const box = svg("g", { class: "node", "data-path": node.path, "data-state": node.state },
      svg("rect", { x: p.x, y: p.y, width: BOX_W, height: BOX_H, rx: 4, fill: STATE_COLOURS[node.state] || "#9e9e9e" }),
      svg("text", { x: p.x + 6, y: p.y + 17, fill: "#fff" }, label(node).slice(0, 22)),
      svg("title", {}, `${node.path}: ${node.state}${node.error ? " — " + node.error : ""}`));
    picture.append(box);
    if (Object.keys(node.hidden).length) {
      const q = at(places.get(node.path + "/hidden"));
      const counts = Object.entries(node.hidden).map(([state, n]) => `${state}=${n}`).join(" ");
      picture.append(svg("g", { class: "hidden-children", "data-path": node.path },
        svg("rect", { x: q.x, y: q.y, width: BOX_W, height: BOX_H, rx: 4, fill: "#cfd4dc" }),
        svg("text", { x: q.x + 6, y: q.y + 17, fill: "#1d2330" }, ("+ " + counts).slice(0, 24)),
        svg("title", {}, counts)));
    }
  }
  where.replaceChildren(picture);
}

function drawTimeline(where, attempts) {
  if (!attempts.length) { where.replaceChildren(el("p", { class: "muted" }, "No attempts yet.")); return; }
  const time = (iso) => (iso ? Date.parse(iso) : Date.now());
  const start = Math.min(...attempts.map((a) => time(a.started_at || a.dispatched_at)));
  const end = Math.max(...attempts.map((a) => time(a.ended_at)), start + 1);
  const LEFT = 220, WIDTH = 640, ROW = 18;
  const x = (t) => LEFT + ((t - start) / (end - start)) * WIDTH;
  const picture = svg("svg", { width: LEFT + WIDTH + 10, height: attempts.length * ROW + 24, id: "timeline-chart" });
  attempts.forEach((a, i) => {
    const y = i * ROW + 4, from = time(a.started_at || a.dispatched_at), to = time(a.ended_at);
    const colour = STATE_COLOURS[a.outcome || "running"];
    picture.append(svg("g", { class: "attempt", "data-node": a.node, "data-attempt": a.attempt, "data-outcome": a.outcome || "running" },
      svg("text", { x: 0, y: y + 12 }, `${a.node} #${a.attempt} ${a.command}`.slice(0, 34)),
      svg("rect", { x: x(from), y, width: Math.max(2, x(to) - x(from)), height: ROW - 4, fill: colour }),
      svg("title", {}, `${a.command} attempt ${a.attempt} on ${a.worker || "?"}: ${a.outcome || "running"}` +
        (a.reason ? ` (${a.reason})` : "") + (a.error_type ? ` ${a.error_type}` : ""))));
  });
  picture.append(svg("text", { x: LEFT, y: attempts.length * ROW + 18, class: "muted" }, `${((end - start) / 1000).toFixed(3)} s`));
  where.replaceChildren(picture);
}
