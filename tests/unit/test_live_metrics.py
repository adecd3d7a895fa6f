"""What only a running service knows, as /metrics shows it (``serve --http``)."""

from __future__ import annotations

import pytest

pytest.importorskip("prometheus_client", reason="the ui extra is not installed: pip install -e '.[ui]'")

from prometheus_client import CollectorRegistry, generate_latest

from orchestrator.transport.scheduler import WorkerInfo
from orchestrator.web.metrics import Live, LiveCollector


def scrape(live: Live) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(LiveCollector(lambda: live))
    lines = generate_latest(registry).decode().splitlines()
    return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in lines if line[:1] != "#")}


def worker(name: str, slots: int, busy: int) -> WorkerInfo:
    return WorkerInfo(name, frozenset({"square"}), frozenset(), slots, busy)


def test_queued_attempts_are_those_in_flight_no_worker_holds() -> None:
    figures = scrape(Live([worker("a", 4, 4), worker("b", 2, 1)], inflight=12))
    assert figures["evenflow_attempts_in_flight"] == 12
    assert figures["evenflow_attempts_queued"] == 7
    assert figures['evenflow_worker_busy_slots{worker="b"}'] == 1


def test_queued_is_never_negative_when_the_two_counts_are_read_apart() -> None:
    assert scrape(Live([worker("a", 4, 3)], inflight=1))["evenflow_attempts_queued"] == 0
