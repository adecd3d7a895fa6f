"""Re-executions per killed pool process: SIGKILL the children of ``processes://2`` during a fan-out.

    .venv/bin/python -m bench.kill_soak [--calls 3000] [--kills 40] [--work-ms 2] [--seed N]
                                        [--json FILE]

One run of ``--calls`` ledgered commands fanned out on ``processes://2`` over the embedded store,
every event durable. A killer thread waits until the ledger shows work done since its last kill,
lets a random 0-50 ms pass, and SIGKILLs a child that has run work; ``--kills`` times at most.
Every command appends a line to the ledger as it starts (``tests.commands``), so afterwards the
ledger holds every execution and a re-execution is a second line for one call.

The run must succeed with every call's value. The report gives re-executions per kill (a child
runs one command at a time, so a kill may cost the attempt running in it and nothing it had queued)
and checks that each call run twice first ran in a child that was then killed: an attempt that had
started there.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from orchestrator import Orchestrator, Registry, RetryPolicy, call, parallel
from tests.commands import LedgerEntry, ledger_read

from .commands import ledgered_work

SOAK_S = 120.0
"""The most the whole soak may take; the killer stops at it, the run is waited for until then."""
PROGRESS_S = 30.0
"""How long the killer waits for new work in the ledger before it gives up killing."""
MAX_PAUSE_S = 0.05
RETRY = RetryPolicy(max_attempts=20, initial_delay=timedelta(0), jitter=0)
"""A lost attempt is sent again at once: the soak counts re-executions, not retry delays."""


@dataclass
class Figures:
    calls: int
    kills: int
    executions: int
    re_executions: int
    run_again: int
    """Calls run more than once."""
    per_kill: float
    started_in_a_killed_child: int
    seconds: float


class Killer(threading.Thread):
    """Kills a child that has run work each time the ledger moves on, ``kills`` times at most."""

    def __init__(self, ledger: Path, kills: int, seed: int, deadline: float) -> None:
        super().__init__(name="kill-soak", daemon=True)
        self.ledger, self.kills, self.deadline = ledger, kills, deadline
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.killed: list[int] = []
        self._offset = 0

    def run(self) -> None:
        while len(self.killed) < self.kills and time.monotonic() < self.deadline:
            entries = self._progress()
            if entries is None:
                return
            if self.stop.wait(self.rng.uniform(0, MAX_PAUSE_S)):
                return
            victims = sorted({e.pid for e in entries[-50:] if e.pid not in self.killed and _ours(e.pid)})
            if victims:
                victim = self.rng.choice(victims)
                with contextlib.suppress(ProcessLookupError):  # it may have died since it was seen
                    os.kill(victim, signal.SIGKILL)
                    self.killed.append(victim)

    def _progress(self) -> list[LedgerEntry] | None:
        """The ledger's next entries once there are any; None when told to stop or waiting long."""
        until = min(self.deadline, time.monotonic() + PROGRESS_S)
        while not self.stop.wait(0.005):
            entries = self._new_entries()
            if entries:
                return entries
            if time.monotonic() >= until:
                return None
        return None

    def _new_entries(self) -> list[LedgerEntry]:
        """The lines appended since the last look (each is one write), not the whole ledger again."""
        try:
            with self.ledger.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        return [LedgerEntry(**json.loads(line)) for line in complete.splitlines() if line.strip()]


def _ours(pid: int) -> bool:
    """Whether ``pid`` is alive and descends from this process (a pid is never another's to kill)."""
    for _ in range(4):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == os.getpid():
            return True
    return False


def soak(calls: int, kills: int, work_s: float, seed: int) -> Figures:
    commands = Registry()
    commands.register("work", ledgered_work)
    with tempfile.TemporaryDirectory(prefix="evenflow-soak-") as home:
        ledger = Path(home) / "ledger.jsonl"
        flow = parallel([call("work", i, str(ledger), work_s).options(retry=RETRY) for i in range(calls)])
        with Orchestrator(commands, executor="processes://2", home=home) as orch:
            killer = Killer(ledger, kills, seed, time.monotonic() + SOAK_S)
            began = time.perf_counter()
            killer.start()
            try:
                result = orch.run(flow, timeout=SOAK_S)
            finally:
                killer.stop.set()
                killer.join()
            seconds = time.perf_counter() - began
        if result != list(range(calls)):
            raise AssertionError(f"the fan-out returned {str(result)[:80]}, not each call's value")
        return figures_of(ledger_read(str(ledger)), calls, killer.killed, seconds)


def figures_of(entries: list[LedgerEntry], calls: int, killed: list[int], seconds: float) -> Figures:
    runs = collections.Counter(entry.node for entry in entries)
    first: dict[str, int] = {}
    for entry in entries:
        first.setdefault(entry.node, entry.pid)
    again = [node for node, n in runs.items() if n > 1]
    re_executions = sum(n - 1 for n in runs.values())
    return Figures(
        calls=calls,
        kills=len(killed),
        executions=len(entries),
        re_executions=re_executions,
        run_again=len(again),
        per_kill=re_executions / len(killed) if killed else 0.0,
        started_in_a_killed_child=sum(first[node] in killed for node in again),
        seconds=round(seconds, 3),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--work-ms", type=float, default=2.0, help="each command's work (default 2)")
    parser.add_argument("--seed", type=int, default=None, help="the killer's choices (default: random)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    figures = soak(args.calls, args.kills, args.work_ms / 1000, seed)
    print(f"kill soak, processes://2 on embedded, seed {seed}: {figures.calls} calls, {figures.kills} kills")
    print(f"  executions {figures.executions}, re-executions {figures.re_executions}")
    print(f"  re-executions per kill {figures.per_kill:.2f}")
    print(f"  calls run again {figures.run_again}, of them first run in a killed child:", end=" ")
    print(figures.started_in_a_killed_child)
    print(f"  {figures.seconds:.2f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"seed": seed, **asdict(figures)}, out, indent=2)


if __name__ == "__main__":
    main()
