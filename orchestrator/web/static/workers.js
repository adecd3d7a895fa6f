// Workers: what each worker the log names started, how long it was busy, what failed on it.
"use strict";

async function load() {
  const where = document.getElementById("workers");
  const since = new URLSearchParams(location.search).get("since") || "";
  document.getElementById("filters").elements.since.value = since;
  try {
    const workers = await api("/api/v1/workers" + (since ? "?since=" + encodeURIComponent(since) : ""));
    const head = el("tr", {}, ...["worker", "attempts", "busy s", "failed", "failed %"].map((h) => el("th", {}, h)));
    const rows = workers.map((w) => el("tr", { "data-worker": w.worker || "" },
      el("td", { class: "mono" }, w.worker || "-"), el("td", { class: "num" }, w.calls),
      el("td", { class: "num" }, w.busy_s.toFixed(3)), el("td", { class: "num" }, w.failures),
      el("td", { class: "num" }, w.calls ? ((100 * w.failures) / w.calls).toFixed(1) : "-")));
    where.replaceChildren(workers.length
      ? el("table", { id: "workers-table" }, el("thead", {}, head), el("tbody", {}, ...rows))
      : el("p", { class: "muted" }, "No attempts in this window."));
  } catch (error) {
    showError(where, error);
  }
}

header("Workers");
load();
