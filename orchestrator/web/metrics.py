"""``/metrics``: the log's counters in Prometheus' text format, read from the store at each scrape.

Counters come from the same rollups and pipelines as ``stats`` and
``activity`` (all time), read once each, so a scrape costs O(commands +
workers) on the embedded store, plus each listener's lag: the events after its
place, counted up to ``LAG_CAP``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from projections.command_stats import DurationHistogram, histograms_of_rows, stats_of_rows
from projections.worker_activity import WorkerActivity

from ..core.events import utcnow
from ..core.histogram import BUCKETS_PER_DECADE
from ..store.checkpoints import ListenerLag, lags
from .api import Reader


class LogCollector(Collector):
    """Collects on each scrape from a fresh read of the log."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def collect(self) -> Iterator[Metric]:
        with self.reader() as source:
            rows = source.command_rows(None)
            states = source.run_states()
            workers = source.worker_activity(None)
            listeners = lags(source.store)
        attempts = CounterMetricFamily(
            "evenflow_attempts", "Attempts that ended, by command and outcome", labels=["command", "outcome"]
        )
        retries = CounterMetricFamily("evenflow_retries", "Retries scheduled, by command", labels=["command"])
        slowest = GaugeMetricFamily(
            "evenflow_attempt_duration_max_seconds", "The longest attempt, by command", labels=["command"]
        )
        for row in stats_of_rows(rows):
            command = row.command or ""
            for outcome, count in (("succeeded", row.successes + row.expansions), ("failed", row.failures)):
                attempts.add_metric([command, outcome], count)
            retries.add_metric([command], row.retries)
            if row.max_duration_s is not None:
                slowest.add_metric([command], row.max_duration_s)
        runs = GaugeMetricFamily("evenflow_runs", "Runs in the log, by state", labels=["state"])
        for state, count in (states or {}).items():
            runs.add_metric([state], count)
        yield from (runs, attempts, retries, slowest, _durations(histograms_of_rows(rows)))
        yield from _worker_metrics(workers)
        yield from _listener_metrics(listeners or ())


def _worker_metrics(workers: list[WorkerActivity]) -> Iterator[Metric]:
    calls = CounterMetricFamily("evenflow_worker_attempts", "Attempts started, by worker", labels=["worker"])
    busy = CounterMetricFamily(
        "evenflow_worker_busy_seconds", "Time spent running attempts", labels=["worker"]
    )
    failed = CounterMetricFamily(
        "evenflow_worker_failures", "Attempts that failed, by worker", labels=["worker"]
    )
    for row in workers:
        worker = row.worker or ""
        calls.add_metric([worker], row.calls)
        busy.add_metric([worker], row.busy_s)
        failed.add_metric([worker], row.failures)
    yield from (calls, busy, failed)


@dataclass(frozen=True)
class Live:
    """What only a running service knows: its connected workers and the attempts it has in flight."""

    workers: Sequence[Any]
    """Each with ``name``, ``slots`` and ``busy`` (the transport's ``WorkerInfo``)."""
    inflight: int
    appends: tuple[int, float, float] = (0, 0.0, 0.0)
    """The store's appends so far: how many, their total and longest seconds."""


class LiveCollector(Collector):
    """The service's own figures, read at each scrape (``serve --http``)."""

    def __init__(self, live: Callable[[], Live]) -> None:
        self.live = live

    def collect(self) -> Iterator[Metric]:
        now = self.live()
        connected = GaugeMetricFamily("evenflow_workers_connected", "Workers connected to the service")
        connected.add_metric([], len(now.workers))
        slots = GaugeMetricFamily(
            "evenflow_worker_slots", "Attempts a worker may run at once", labels=["worker"]
        )
        busy = GaugeMetricFamily(
            "evenflow_worker_busy_slots", "Attempts a worker is running", labels=["worker"]
        )
        for worker in now.workers:
            slots.add_metric([worker.name], worker.slots)
            busy.add_metric([worker.name], worker.busy)
        inflight = GaugeMetricFamily(
            "evenflow_attempts_in_flight", "Attempts dispatched and not yet ended (queued or running)"
        )
        inflight.add_metric([], now.inflight)
        queued = GaugeMetricFamily(
            "evenflow_attempts_queued", "Attempts in flight that no worker holds yet (waiting for a slot)"
        )
        queued.add_metric([], max(0, now.inflight - sum(worker.busy for worker in now.workers)))
        count, total, longest = now.appends
        what = "Durable appends of the log (each turn waits for one)"
        appends = SummaryMetricFamily("evenflow_append_seconds", what, count_value=count, sum_value=total)
        slowest = GaugeMetricFamily("evenflow_append_max_seconds", "The longest append so far")
        slowest.add_metric([], longest)
        yield from (connected, slots, busy, inflight, queued, appends, slowest)


def _listener_metrics(listeners: Sequence[ListenerLag]) -> Iterator[Metric]:
    by = ["listener"]
    behind = GaugeMetricFamily("evenflow_listener_behind_events", "Events logged after its place", labels=by)
    lag = GaugeMetricFamily(
        "evenflow_listener_lag_seconds", "How long ago the first event after its place was logged", labels=by
    )
    for row in listeners:
        behind.add_metric([row.name], row.behind)
        if row.oldest_unread_at is not None:
            lag.add_metric([row.name], max(0.0, (utcnow() - row.oldest_unread_at).total_seconds()))
    yield from (behind, lag)


QUARTER_DECADES = range(-24, 9)
"""Prometheus bucket bounds 10^(j/4) s, 1 µs to 100 s: each an exact bound of the log's finer
buckets (B = 100 a decade), so every count is exact."""


def _durations(histograms: Sequence[DurationHistogram]) -> Metric:
    family = HistogramMetricFamily(
        "evenflow_attempt_duration_seconds",
        "How long successful attempts ran, by command",
        labels=["command"],
    )
    step = BUCKETS_PER_DECADE // 4
    for row in histograms:
        buckets = [(f"{10 ** (j / 4):.6g}", row.at_most(j * step)) for j in QUARTER_DECADES]
        family.add_metric([row.command or ""], [*buckets, ("+Inf", row.count)], sum_value=row.total_s)
    return family
