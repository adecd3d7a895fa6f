"""How many events per second a listener keeps up with, and what exactly-once triggering costs.

    .venv/bin/python -m bench.listeners [--events 20000] [--per-run 100] [--samples 200]
                                        [--stores embedded,memory,mongomock] [--mongomock-events 1000]
                                        [--executor inline] [--timeout 120]

For each store (the embedded default in a temporary ``home``, ``memory://`` and
in-process ``mongomock://``, which is not MongoDB), a log of N domain events is
built by runs of one command emitting ``--per-run`` events each, afresh for
each phase (so no phase pays for the runs another logged, nor has another's
listener reading along):

- observe: a listener with ``since="start"`` that returns None; the time from
  ``listen()`` until it has been called with all N events;
- trigger: a listener that answers each event with ``call("noop")``, one run
  keyed on the event (exactly-once triggering); the time from ``listen()``
  until all N ``run.submitted`` are in the feed, and until all N runs succeeded;
- submit / keyed submit: the same N ``call("noop")`` flows handed to
  ``orch.submit_future`` (``submit`` without blocking) all at once, without and
  with ``key=``, timed the same way: keyed submission is what exactly-once
  triggering is built on, so "trigger" minus "keyed submit" is the listener's
  own share (feed reads, checkpoints, a batch of 500 at a time).

The feed is watched from the benchmark's thread (a read every 5 ms, or three
times as long as the last read took, so a slow feed is not read all the time),
in every phase alike. Then live tailing on the embedded store: runs submitted one at a
time, each emitting one event stamped with ``perf_counter()``; the latency is
from ``emit`` to the listener being called with it (p50, p95).

The executor is ``inline`` by default: the commands (all trivial) run on the
engine thread, so no worker pool competes with the listener host for the GIL,
and what is timed is the log, the engine and the listeners.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import Event, Orchestrator, Registry, call, emit
from orchestrator.core.ports import EventStore, FeedStore
from orchestrator.store import open_store

TICK = "bench.tick"
PING = "bench.ping"
RUN_ENDS = ("run.succeeded", "run.failed", "run.cancelled")
POLL_S = 0.005
FEED_READ = 5_000


def burst(start: int, count: int) -> int:
    """Emit ``count`` events numbered from ``start`` (builds the log quickly: many events per run)."""
    for i in range(start, start + count):
        emit(TICK, {"i": i})
    return count


def noop() -> None:
    return None


def ping() -> None:
    emit(PING, {"t": time.perf_counter()})


def registry() -> Registry:
    commands = Registry()
    commands.register("burst", burst)
    commands.register("noop", noop)
    commands.register("ping", ping)
    return commands


@dataclass
class Row:
    store: str
    phase: str
    items: int
    first_s: float
    """Observe: all events seen; trigger and submits: all runs submitted."""
    done_s: float | None = None
    """Trigger and submits: all runs finished."""
    note: str = ""


@dataclass
class Counter:
    """What a listener has been called with; one listener's calls never overlap, so no lock."""

    target: int
    seen: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def count(self, event: Event) -> None:
        self.seen += 1
        if self.seen >= self.target:
            self.done.set()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000, help="events in the log (embedded, memory)")
    parser.add_argument("--mongomock-events", type=int, default=1_000, help="events in the mongomock log")
    parser.add_argument("--per-run", type=int, default=100, help="events one run emits (at most 1000)")
    parser.add_argument("--samples", type=int, default=200, help="live-tailing latency samples")
    parser.add_argument("--stores", default="embedded,memory,mongomock")
    parser.add_argument("--executor", default="inline", help="inline or threads (threads://N)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds any one phase may take")
    args = parser.parse_args()
    rows: list[Row] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="evenflow-bench-") as tmp:
        for store in [name for name in args.stores.split(",") if name]:
            events = args.mongomock_events if store == "mongomock" else args.events
            rows += throughput(store, Path(tmp) / store, events, args.per_run, args.executor, args.timeout)
        latencies = tailing(Path(tmp) / "tailing", args.samples, args.executor, args.timeout)
    _print(rows, latencies, args.executor)
    print(f"\n(whole benchmark: {time.perf_counter() - started:.0f}s)")


# --- throughput ------------------------------------------------------------------------------


def throughput(store_name: str, home: Path, n: int, per_run: int, executor: str, timeout: float) -> list[Row]:
    """Each phase on its own store holding the same log, so no phase pays for the runs of another."""
    url = None if store_name == "embedded" else f"{store_name}://"
    phases: list[Callable[[Callable[[], Orchestrator], EventStore], Row]] = [
        lambda fresh, store: observe(fresh, store_name, n, timeout),
        lambda fresh, store: trigger(fresh, store, store_name, n, timeout),
        lambda fresh, store: submits(fresh, store, store_name, n, timeout, keyed=False),
        lambda fresh, store: submits(fresh, store, store_name, n, timeout, keyed=True),
    ]
    rows = []
    for number, phase in enumerate(phases):
        store = open_store(url, home=home / str(number))
        try:
            built = build_log(store, n, per_run, executor, timeout)
            if number == 0:
                runs = -(-n // per_run)
                print(f"{store_name}: {n:,} events from {runs} runs, logged in {built:.1f}s", flush=True)

            def fresh(store: EventStore = store) -> Orchestrator:
                return Orchestrator(registry(), executor=executor, store=store).start()

            rows.append(phase(fresh, store))
        finally:
            store.close()
    return rows


def build_log(store: EventStore, n: int, per_run: int, executor: str, timeout: float) -> float:
    if not 1 <= per_run <= 1000:
        raise SystemExit("--per-run must be from 1 to 1000 (what one attempt may emit)")
    start = time.perf_counter()
    with Orchestrator(registry(), executor=executor, store=store) as orch:
        handles = [orch.submit(call("burst", i, min(per_run, n - i))) for i in range(0, n, per_run)]
        deadline = time.monotonic() + timeout
        for handle in handles:
            handle.result(timeout=max(0.0, deadline - time.monotonic()))
    return time.perf_counter() - start


def observe(fresh: Callable[[], Orchestrator], store: str, n: int, timeout: float) -> Row:
    counter = Counter(n)
    orch = fresh()
    try:
        start = time.perf_counter()
        orch.listen(TICK, counter.count, name="bench observe", since="start")
        if not counter.done.wait(timeout):
            raise TimeoutError(f"{store}: the listener saw {counter.seen:,} of {n:,} events in {timeout}s")
        return Row(store, "observe (returns None)", n, time.perf_counter() - start)
    finally:
        orch.close()


def trigger(fresh: Callable[[], Orchestrator], store: EventStore, name: str, n: int, timeout: float) -> Row:
    orch = fresh()
    try:
        feed = Runs(store)
        start = time.perf_counter()
        orch.listen(TICK, lambda event: call("noop"), name="bench trigger", since="start")
        submitted, done = feed.follow(n, start, timeout)
        return Row(name, "trigger call('noop') per event", n, submitted, done, feed.note)
    finally:
        orch.close()


def submits(
    fresh: Callable[[], Orchestrator], store: EventStore, name: str, n: int, timeout: float, *, keyed: bool
) -> Row:
    orch = fresh()
    try:
        feed = Runs(store)
        start = time.perf_counter()
        futures: list[Future[str]] = [
            orch.submit_future(call("noop"), key=f"bench-{i}" if keyed else None) for i in range(n)
        ]
        submitted, done = feed.follow(n, start, timeout)
        for future in futures:  # every submission was answered (none refused)
            future.result(timeout=timeout)
        phase = "keyed submit (key=)" if keyed else "submit (no key)"
        return Row(name, phase, n, submitted, done, feed.note)
    finally:
        orch.close()


class Runs:
    """Counts the runs submitted and ended in the feed from the position at construction."""

    PATTERNS = ("run.submitted", *RUN_ENDS)

    def __init__(self, store: EventStore) -> None:
        assert isinstance(store, FeedStore)
        self.store = store
        self.position: Any = store.feed_head(self.PATTERNS)
        self.submitted = self.ended = self.failed = 0
        self.note = ""

    def follow(self, n: int, start: float, timeout: float) -> tuple[float, float]:
        """Seconds from ``start`` until ``n`` runs were submitted, and until ``n`` runs ended."""
        deadline = start + timeout
        submitted_s: float | None = None
        wait = threading.Event()
        while time.perf_counter() < deadline:
            read_at = time.perf_counter()
            events, self.position = self.store.read_feed(self.position, self.PATTERNS, FEED_READ)
            pause = max(POLL_S, 3 * (time.perf_counter() - read_at))  # a slow feed is read less often
            for event in events:
                if event.type == "run.submitted":
                    self.submitted += 1
                else:
                    self.ended += 1
                    self.failed += event.type != "run.succeeded"
            now = time.perf_counter()
            if submitted_s is None and self.submitted >= n:
                submitted_s = now - start
            if self.ended >= n:
                notes = [f"{self.failed} runs did not succeed"] if self.failed else []
                notes += [f"{self.submitted - n} runs more than expected"] if self.submitted > n else []
                self.note = "; ".join(notes)
                return submitted_s if submitted_s is not None else now - start, now - start
            if len(events) < FEED_READ:
                wait.wait(pause)
        raise TimeoutError(
            f"{self.submitted:,} of {n:,} runs submitted and {self.ended:,} ended in {timeout}s"
        )


# --- live tailing ----------------------------------------------------------------------------


def tailing(home: Path, samples: int, executor: str, timeout: float) -> list[float]:
    """Seconds from ``emit`` in a command to the listener's call, one run at a time (embedded store)."""
    latencies: list[float] = []
    heard = threading.Event()

    def listener(event: Event) -> None:
        latencies.append(time.perf_counter() - float(event.data["t"]))
        heard.set()

    with Orchestrator(registry(), executor=executor, home=home) as orch:
        orch.run(call("noop"), timeout=timeout)  # warm up
        orch.listen(PING, listener, name="bench tailing")
        deadline = time.monotonic() + timeout
        for i in range(samples):
            heard.clear()
            orch.submit(call("ping"))
            if not heard.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"live tailing: {i} of {samples} events heard in {timeout}s")
    return latencies


# --- the table -------------------------------------------------------------------------------


def _print(rows: list[Row], latencies: list[float], executor: str) -> None:
    print(f"\nexecutor {executor}; times from listen() / the first submit")
    print(f"{'store':10} {'phase':32} {'N':>7} {'to submitted s':>14} {'per s':>8} {'to finished s':>13} "
          f"{'per s':>8}  note")  # fmt: skip
    for row in rows:
        done = f"{row.done_s:13.2f} {row.items / row.done_s:8.0f}" if row.done_s is not None else " " * 22
        first = f"{row.first_s:14.2f} {row.items / row.first_s:8.0f}"
        print(f"{row.store:10} {row.phase:32} {row.items:7,} {first} {done}  {row.note}".rstrip())
    print()
    for store in dict.fromkeys(row.store for row in rows):
        found = {row.phase.split(" ")[0]: row for row in rows if row.store == store}
        trig, plain, keyed = found.get("trigger"), found.get("submit"), found.get("keyed")
        if trig is None or plain is None or keyed is None or trig.done_s is None:
            continue
        assert plain.done_s is not None and keyed.done_s is not None
        print(
            f"{store}: triggering took {trig.first_s / keyed.first_s:.1f}x a keyed submit and "
            f"{trig.first_s / plain.first_s:.1f}x an unkeyed one to log the runs; keyed/unkeyed "
            f"{keyed.first_s / plain.first_s:.1f}x; to finish: trigger {trig.done_s / plain.done_s:.1f}x, "
            f"keyed {keyed.done_s / plain.done_s:.1f}x unkeyed"
        )
    if latencies:
        ms = sorted(1000 * s for s in latencies)
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        print(
            f"\nlive tailing (embedded, {len(ms)} runs one at a time): emit -> listener called "
            f"p50 {statistics.median(ms):.2f} ms, p95 {p95:.2f} ms, max {ms[-1]:.2f} ms"
        )


if __name__ == "__main__":
    main()
