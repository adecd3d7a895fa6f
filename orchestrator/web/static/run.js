// A run's page: summary, flow graph, attempts, result or error, events. It listens to the run's
// stream and draws again each time the log grows, until the run has ended.
"use strict";

const RUN = decodeURIComponent(location.pathname.split("/").pop());
let CONTROL = false;

function controls(state) {
  const act = (label) => el("button", { id: label.toLowerCase(), type: "button" }, label);
  const buttons = [];
  if (CONTROL && state === "running") buttons.push(act("Cancel"));
  if (CONTROL && (state === "failed" || state === "cancelled")) buttons.push(act("Retry"));
  for (const button of buttons) button.addEventListener("click", () => control(button.id));
  return buttons;
}

async function control(action) {
  if (!confirm(`${action} run ${RUN}?`)) return;
  try {
    const done = await apiPost(`/api/v1/runs/${encodeURIComponent(RUN)}/${action}`, action === "cancel" ? { reason: "cancelled from the run's page" } : {});
    if (action === "retry") location.assign("/runs/" + encodeURIComponent(done.run));
    else redraw();
  } catch (error) {
    showError(document.getElementById("controls"), error);
  }
}

function summary(status) {
  const nodes = Object.entries(status.nodes || {}).filter(([, n]) => n).map(([s, n]) => `${s}=${n}`).join(" ");
  return el("table", {}, el("tbody", {},
    ...[["state", badge(status.state)], ["flow", status.flow || "-"], ["submitted", when(status.submitted_at)],
      ["ended", when(status.ended_at)], ["duration s", status.duration_s ?? "-"], ["nodes", nodes || "-"],
      ["attempts", status.attempts]].map(([name, value]) => el("tr", {}, el("th", {}, name), el("td", {}, value)))));
}

function outcome(status) {
  document.getElementById("outcome-title").textContent = status.state === "failed" ? "Error" : "Result";
  if (status.state === "failed") {
    const errors = (status.error || []).map((e) =>
      el("div", { class: "error-entry" }, el("p", {}, `${e.node || ""} ${e.type || ""}: ${e.message || ""}`),
        e.traceback ? el("pre", {}, e.traceback) : null));
    return el("div", { id: "error-panel" }, ...errors);
  }
  return el("pre", { id: "result-panel" }, status.state === "succeeded" ? JSON.stringify(status.result, null, 2) : "(not ended yet)");
}

function events(trail) {
  const head = el("tr", {}, ...["run", "seq", "at", "node", "by", "what happened"].map((n) => el("th", {}, n)));
  const rows = trail.map((e) => el("tr", { "data-seq": e.seq },
    el("td", { class: "mono" }, e.run === RUN ? "this run" : el("a", { href: "/runs/" + encodeURIComponent(e.run), class: "chained" }, e.run)),
    el("td", { class: "num" }, e.seq), el("td", { class: "mono" }, when(e.at)), el("td", {}, e.node || "-"),
    el("td", { class: "mono" }, e.worker || e.by || "-"), el("td", {}, e.summary)));
  return el("table", { id: "events-table" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

const MAX_UNEVEN = 3;
let uneven = 0;

async function draw() {
  try {
    const [status, graph, trail] = await Promise.all([
      api(`/api/v1/runs/${encodeURIComponent(RUN)}`),
      api(`/api/v1/runs/${encodeURIComponent(RUN)}/graph`),
      api(`/api/v1/runs/${encodeURIComponent(RUN)}/events`),
    ]);
    document.getElementById("title").textContent = "Run " + RUN;
    document.getElementById("summary").replaceChildren(summary(status));
    document.getElementById("controls").replaceChildren(...controls(status.state));
    drawGraph(document.getElementById("graph"), graph.nodes);
    drawTimeline(document.getElementById("timeline"), graph.attempts);
    document.getElementById("outcome").replaceChildren(outcome(status));
    document.getElementById("events").replaceChildren(events(trail));
    document.body.dataset.lastSeq = status.last_seq;
    // The status and the graph read either side of an append disagree: look again, a few times at
    // most (a read model far behind its log must not keep the page fetching), before saying the state.
    uneven = graph.last_seq === status.last_seq ? 0 : uneven + 1;
    if (uneven === 0 || uneven > MAX_UNEVEN) {
      document.body.dataset.state = status.state;
    } else {
      drawAgain = true;
    }
  } catch (error) {
    showError(document.getElementById("summary"), error);
  }
}

const ENDED = new Set(["succeeded", "failed", "cancelled"]);
let drawing = null;
let drawAgain = false;

// One draw at a time, the last change always drawn: an older draw can never finish after a newer one.
async function redraw() {
  if (drawing) { drawAgain = true; return; }
  do {
    drawAgain = false;
    drawing = draw();
    await drawing;
  } while (drawAgain);
  drawing = null;
}

// Follow the run's stream; once it closes, draw what the log says and, if the run goes on (the
// server ended the stream, or the connection dropped), listen again a second later.
function follow() {
  listen(`/api/v1/runs/${encodeURIComponent(RUN)}/stream`, { changed: redraw })
    .catch(() => {})
    .then(redraw)
    .then(() => { if (!ENDED.has(document.body.dataset.state)) setTimeout(follow, 1000); });
}

header("Runs");
api("/api/v1").then((info) => { CONTROL = info.control; }).catch(() => {}).finally(() => draw().then(follow));
