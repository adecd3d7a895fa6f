// The runs list: filters live in the URL; the page asks again every two seconds, so new runs
// and runs that end show without a reload.
"use strict";

const REFRESH_MS = 2000;

function query() {
  const params = new URLSearchParams(location.search);
  for (const [name, value] of [...params]) if (!value) params.delete(name);
  return params;
}

function fillForm() {
  const form = document.getElementById("filters");
  for (const [name, value] of query()) if (form.elements[name]) form.elements[name].value = value;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams(new FormData(form));
    for (const [name, value] of [...params]) if (!value) params.delete(name);
    history.replaceState(null, "", "/runs" + (params.size ? "?" + params : ""));
    load();
  });
}

function row(run) {
  const nodes = Object.entries(run.nodes || {}).filter(([, n]) => n).map(([s, n]) => `${s}=${n}`).join(" ");
  return el("tr", { "data-run": run.run },
    el("td", { class: "mono" }, el("a", { href: "/runs/" + encodeURIComponent(run.run) }, run.run)),
    el("td", {}, run.flow || "-"),
    el("td", {}, badge(run.state)),
    el("td", { class: "mono" }, when(run.submitted_at)),
    el("td", { class: "num" }, run.duration_s === null ? "-" : run.duration_s.toFixed(3)),
    el("td", {}, nodes || "-"),
    el("td", { class: "num" }, run.attempts));
}

async function load() {
  const where = document.getElementById("runs");
  try {
    const page = await api("/api/v1/runs?" + query());
    const head = el("tr", {}, ...["run", "flow", "state", "submitted", "duration s", "nodes", "attempts"]
      .map((name) => el("th", {}, name)));
    const table = el("table", { id: "runs-table" }, el("thead", {}, head),
      el("tbody", {}, ...page.runs.map(row)));
    const more = page.next ? el("a", { href: "/runs?" + new URLSearchParams({ ...Object.fromEntries(query()), after: page.next }) }, "older runs →") : null;
    where.replaceChildren(page.runs.length ? table : el("p", { class: "muted" }, "No runs match."), more || "");
  } catch (error) {
    showError(where, error);
  }
}

header("Runs");
fillForm();
load();
setInterval(load, REFRESH_MS);
