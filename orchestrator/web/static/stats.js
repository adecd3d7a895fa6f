// Stats: per-command figures, events per hour as bars, failures by error, and the workers.
"use strict";

function tableOf(id, headers, rows) {
  return el("table", { id }, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c ?? "-"))))));
}

function bars(buckets) {
  if (!buckets.length) return el("p", { class: "muted" }, "No events.");
  const most = Math.max(...buckets.map((b) => b.count)), W = 12, H = 120;
  const picture = svg("svg", { width: buckets.length * (W + 2) + 10, height: H + 20, id: "throughput-chart" });
  buckets.forEach((b, i) => {
    const h = Math.max(1, (b.count / most) * H);
    picture.append(svg("rect", { x: i * (W + 2), y: H - h, width: W, height: h, fill: "#1565c0" },
      svg("title", {}, `${when(b.start)}: ${b.count}`)));
  });
  return picture;
}

async function load() {
  const fixed = (v) => (v === null || v === undefined ? "-" : Number(v).toPrecision(3));
  try {
    const [stats, buckets, failures, workers, listeners] = await Promise.all([
      api("/api/v1/stats"), api("/api/v1/throughput?bucket=1h"), api("/api/v1/failures"), api("/api/v1/workers"),
      api("/api/v1/listeners"),
    ]);
    document.getElementById("stats").replaceChildren(tableOf("stats-table",
      ["command", "calls", "ok", "failed", "retries", "mean s", "p95 s", "max s"],
      stats.map((s) => [s.command, s.calls, s.successes, s.failures, s.retries,
        fixed(s.mean_duration_s), fixed(s.p95_duration_s), fixed(s.max_duration_s)])));
    document.getElementById("throughput").replaceChildren(bars(buckets));
    document.getElementById("failures").replaceChildren(tableOf("failures-table",
      ["error", "command", "count", "latest", "message"],
      failures.map((f) => [f.error_type, f.command, f.count, when(f.latest.at), f.latest.message])));
    document.getElementById("workers").replaceChildren(tableOf("workers-table",
      ["worker", "attempts", "busy s", "failed"], workers.map((w) => [w.worker, w.calls, fixed(w.busy_s), w.failures])));
    document.getElementById("listeners").replaceChildren(tableOf("listeners-table",
      ["listener", "events behind", "first unread logged"],
      listeners.map((l) => [l.name, l.behind + (l.at_least ? "+" : ""), when(l.oldest_unread_at)])));
  } catch (error) {
    showError(document.getElementById("stats"), error);
  }
}

header("Stats");
load();
