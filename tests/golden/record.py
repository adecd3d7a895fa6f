"""Record a golden event log: real flows run by the evenflow of the day, their events and folded states.

    python -m tests.golden.record NAME

writes ``tests/golden/logs/NAME.jsonl`` (each stored event as MongoDB canonical
extended JSON, one per line, runs in submission order) and
``NAME.states.json`` (each run folded, as ``snapshot`` writes it). A log once
committed is never recorded again: it stands for what that day's evenflow
wrote, and every later evenflow must fold it to the same states. Record a new
log under a new name when new event types or fields appear.

The scenarios cover every event type and every way an attempt ends (raised,
timeout, lost, interrupted, a result the log refused), retries, cancellation,
a retried run, keys, maps, chords, expansions, listener triggers (also a
listener that fails and a cut cascade), and values at the edges of the type
mapping (ints beyond 32 bits, NaN, bytes, datetimes).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.json_util import CANONICAL_JSON_OPTIONS

from orchestrator import Orchestrator, RetryPolicy, call, chord, each, parallel, sequence
from orchestrator.core.errors import EvenflowError
from orchestrator.core.evolve import fold
from orchestrator.store import open_store
from tests.commands import make_registry
from tests.golden.snapshot import snapshot
from tests.support.polling import wait_until

LOGS = Path(__file__).parent / "logs"
STORED = CodecOptions(tz_aware=True, tzinfo=UTC)
NO_RETRY = RetryPolicy.no_retry()
QUICK = RetryPolicy(max_attempts=3, initial_delay=timedelta(milliseconds=20), jitter=0.0)


def main(name: str) -> None:
    target = LOGS / f"{name}.jsonl"
    if target.exists():
        raise SystemExit(f"{target} exists: a golden log is recorded once; choose a new name")
    with tempfile.TemporaryDirectory() as scratch:
        docs = record_embedded(Path(scratch)) + record_takeover()
    runs: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        runs.setdefault(doc["run"], []).append(doc)
    lines = [json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS) for doc in docs]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    states = {run: snapshot(fold(run, _events(run_docs))) for run, run_docs in runs.items()}
    text = json.dumps(states, indent=1, sort_keys=True, ensure_ascii=True) + "\n"
    (LOGS / f"{name}.states.json").write_text(text, encoding="utf-8")
    print(f"recorded {len(docs)} events of {len(runs)} runs in {target}")


def _events(docs: list[dict[str, Any]]) -> list[Any]:
    from orchestrator.core.events import from_doc

    return [from_doc(doc) for doc in sorted(docs, key=lambda doc: doc["seq"])]


# --- the embedded store: most scenarios --------------------------------------------------------


def record_embedded(home: Path) -> list[dict[str, Any]]:
    registry = make_registry()
    with Orchestrator(registry, store=f"embedded://{home}", executor="threads://4") as orch:
        _listeners(orch)
        for scenario in _SCENARIOS:
            scenario(orch, home)
        wait_until(lambda: not orch.store.unfinished_runs(), timeout=60, what="every run to end")
    with Orchestrator(registry, store=f"embedded://{home}", executor="processes://2") as orch:
        _finish(orch, sequence(call("inc", 1), call("kill_self").si()))  # lost: the worker process dies
    with Orchestrator(registry, store=f"embedded://{home}", cascade_limit=1) as orch:
        orch.listen("golden.echo", lambda event: call("emits", ["golden.echo"]), name="echo")
        _finish(orch, call("emits", ["golden.echo"]))  # a chain cut by the cascade limit
        wait_until(lambda: _refused_runs(home) >= 2, timeout=60, what="the cut chain to be logged")
        wait_until(lambda: not orch.store.unfinished_runs(), timeout=60, what="every run to end")
    return _journal(home)


def _listeners(orch: Orchestrator) -> None:
    orch.listen("golden.placed", lambda event: call("inc", event.data["index"]), name="on-placed")

    def broken(event: Any) -> None:
        raise RuntimeError(f"listener cannot handle {event.type}")

    orch.listen("golden.broken", broken, name="broken")


def _finish(orch: Orchestrator, flow: Any, **options: Any) -> str:
    """Submit and wait for the run's end, failed or not; its id."""
    run = orch.submit(flow, **options)
    with contextlib.suppress(EvenflowError):
        run.result(timeout=60)
    return run.id


def _plain(orch: Orchestrator, home: Path) -> None:
    _finish(orch, sequence(call("inc", 1), parallel(call("square"), call("triple")), call("total")))
    _finish(orch, call("async_double", 21), name="golden-named")
    _finish(orch, sequence(call("noop", [1, 2, 3]), each("square")))
    _finish(orch, chord([call("square", i) for i in range(4)], call("total")))
    _finish(orch, call("returns_flow", 3))
    keyed = call("describe", "k", flag=True)
    _finish(orch, keyed, key="golden-key")
    _finish(orch, keyed, key="golden-key")  # the same run again: nothing new is logged


def _values(orch: Orchestrator, home: Path) -> None:
    when = datetime(2026, 12, 5, 12, 30, 15, 123_000, tzinfo=UTC)
    edges = {
        "big": [2**31, 2**40, 2**62, -(2**63)],
        "floats": [float("nan"), float("inf"), float("-inf"), -0.0, 1.5],
        "bytes": b"\x00\xff golden",
        "when": when,
        "text": "naïve ✓ 𝄞",
        "nested": {"a.b": [{"c": None, "d": True}]},
    }
    _finish(orch, call("noop", edges))
    _finish(orch, sequence(call("noop", 2**40), call("add", 2**62)))


def _failures(orch: Orchestrator, home: Path) -> None:
    _finish(orch, call("flaky", "third time", failures=2).options(retry=QUICK))
    _finish(orch, call("flaky", "never", failures=5).options(retry=QUICK))
    _finish(orch, call("slow", 1.0).options(retry=NO_RETRY, timeout=timedelta(milliseconds=100)))
    _finish(orch, call("returns_set").options(retry=NO_RETRY))
    _finish(orch, call("returns_bad_flow").options(retry=NO_RETRY))
    _finish(orch, call("raise_unprintable").options(retry=NO_RETRY))
    _finish(orch, call("exit_self").options(retry=NO_RETRY))
    _finish(orch, sequence(call("noop", 5), each("square")))
    failing = parallel(call("raise_value_error", "cut").options(retry=NO_RETRY), call("slow", 0.3))
    _finish(orch, parallel(failing.branches, siblings="cancel"))
    _finish(orch, parallel(call("raise_value_error", "a").options(retry=NO_RETRY), call("inc", 1)))
    wait_until(lambda: _late_outcomes(home) >= 1, timeout=60, what="the timed-out attempt's late result")


def _cancel_and_retry(orch: Orchestrator, home: Path) -> None:
    gate = home / "cancel.gate"
    run = orch.submit(call("wait_for_file", str(gate), "late", 60.0))
    wait_until(lambda: orch.state(run.id).running(), timeout=60, what="the attempt to be dispatched")
    run.cancel("golden: not today")
    gate.touch()
    wait_until(lambda: _late_outcomes(home) >= 2, timeout=60, what="the cancelled attempt's result")
    marker = home / "retry.marker"
    failed = _finish(orch, sequence(call("inc", 1), call("wait_for_file", str(marker), 7, 0.05).si()))
    marker.touch()
    retried = orch.retry(failed)
    retried.result(timeout=60)
    orch.retry(failed)  # the same retry run again


def _emitted(orch: Orchestrator, home: Path) -> None:
    _finish(orch, call("emits", ["golden.placed", "golden.placed"]))
    _finish(orch, call("emits", ["golden.broken"]))
    _finish(orch, call("emits", ["golden.quiet"], fail=True).options(retry=NO_RETRY))
    wait_until(lambda: _listener_runs(home) >= 3, timeout=60, what="the listeners' runs to be logged")


_SCENARIOS: list[Callable[[Orchestrator, Path], None]] = [
    _plain,
    _values,
    _failures,
    _cancel_and_retry,
    _emitted,
]


def _query(home: Path, sql: str) -> int:
    with sqlite3.connect(f"{(home / 'events.sqlite3').as_uri()}?mode=ro", uri=True) as db:
        return int(db.execute(sql).fetchone()[0])


def _late_outcomes(home: Path) -> int:
    return _query(home, "SELECT count(*) FROM events WHERE type = 'outcome.ignored'")


def _listener_runs(home: Path) -> int:
    return sum(1 for doc in _journal(home) if doc["type"] == "run.submitted" and doc["data"].get("listener"))


def _refused_runs(home: Path) -> int:
    return sum(1 for doc in _journal(home) if doc["type"] == "run.submitted" and doc["data"].get("refused"))


def _journal(home: Path) -> list[dict[str, Any]]:
    """Every stored document, decoded as a server would hand it back, runs in the order they began."""
    with sqlite3.connect(f"{(home / 'events.sqlite3').as_uri()}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT doc FROM events ORDER BY rowid").fetchall()
    return _by_run([bson.decode(blob, STORED) for (blob,) in rows])


def _by_run(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order: dict[str, int] = {}
    for doc in docs:
        order.setdefault(doc["run"], len(order))
    return sorted(docs, key=lambda doc: (order[doc["run"]], doc["seq"]))


# --- two orchestrators on one MongoDB log: a takeover ---------------------------------------


def record_takeover() -> list[dict[str, Any]]:
    """An owner stops with an attempt in flight; another takes the run over (owner.changed, Interrupted)."""
    registry = make_registry()
    store = open_store("mongomock://golden")
    with tempfile.TemporaryDirectory() as scratch:
        gate = Path(scratch) / "takeover.gate"
        first = Orchestrator(registry, store=store, lease_s=1.0).start()
        run = first.submit(
            sequence(call("inc", 41), call("wait_for_file", str(gate), "taken over", 60.0).si())
        )
        wait_until(lambda: len(first.state(run.id).running()) == 1, timeout=60, what="attempt 1 in flight")
        closing = threading.Thread(target=first.close)
        closing.start()
        wait_until(lambda: all(released for _, released in store.read_leases().values()), timeout=60,
                   what="the first owner's lease to be released")  # fmt: skip
        with Orchestrator(registry, store=store, lease_s=1.0) as second:
            gate.touch()
            assert second.result(run.id, timeout=60) == "taken over"
        closing.join(60)
    docs = [
        bson.decode(bson.encode(doc), STORED) for doc in store.events.find({}).sort([("at", 1), ("_id", 1)])
    ]
    store.close()
    return _by_run(docs)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "landed")
