"""What reading history costs as it grows: each reader as one CLI call, its wall time and peak RSS.

    .venv/bin/python -m bench.history [--events 100000,1000000] [--keep DIR | --reuse DIR] [--json FILE]

For each size it builds an embedded home of that many events through the
store's own append path (``bench/history_build.py``, in a child process; the
build rate is printed), then runs each reader as a separate process:
``runs --limit 20`` (plain, ``--state failed``, ``--since 7d``), ``status``
of a run, ``audit`` of a run with a chain of listener runs, ``stats`` (all
time and ``--since 7d``), ``failures``, ``throughput`` (hourly, and by 15
minutes over the last week), ``activity``, and an orchestrator's open + start +
close. Each is called once, or ``--repeat N`` times (the median wall and the
highest peak shown, every wall in ``--json``). Wall time includes interpreter
start. Peak RSS is the child's own ``ru_maxrss`` from ``os.wait4`` on its pid;
a child starts with the peak of the process it was forked from, so this
process never imports evenflow and stays near a bare interpreter's ~12 MB
(printed as the floor). Each call is killed after ``--timeout`` seconds and
reported as timed out. ``--keep DIR`` keeps the homes built (``DIR/home-N``);
``--reuse DIR`` measures the homes already there and builds only the missing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BYTES_PER_EVENT = 1_000
"""Disk a home takes per event, with room to spare (measured: ~800)."""
BUILD_RATE_FLOOR = 5_000
"""Events a second a build may not fall below before it is stopped as stuck."""
OPEN_START = (
    "import sys\n"
    "from orchestrator import Orchestrator, Registry\n"
    "registry = Registry()\n"
    "for name in sys.argv[2].split(','):\n"
    "    registry.register(name, lambda *args: None)\n"
    "Orchestrator(registry, executor='inline', home=sys.argv[1]).start().close()\n"
)


def readers(plan: dict[str, Any]) -> dict[str, list[str]]:
    """The CLI calls timed, by label, on a home ``plan`` sums up (``history_build.summary``)."""
    return {
        "runs --limit 20": ["runs", "--limit", "20"],
        "runs --state failed": ["runs", "--limit", "20", "--state", "failed"],
        "runs --since 7d": ["runs", "--limit", "20", "--since", "7d"],
        "status RUN": ["status", plan["middle"]],
        "audit RUN (chain)": ["audit", plan["chained"]],
        "stats": ["stats"],
        "stats --since 7d": ["stats", "--since", "7d"],
        "failures": ["failures"],
        "throughput --bucket 1h": ["throughput", "--bucket", "1h"],
        "throughput --since 7d 15m": ["throughput", "--since", "7d", "--bucket", "15m"],
        "activity": ["activity"],
    }


def timed(argv: list[str], timeout_s: float) -> dict[str, Any]:
    """Wall seconds and peak RSS (MB) of one process run to its end, or how long it ran before it was
    killed. Its output is kept only to show why it failed."""
    with tempfile.TemporaryFile() as errors:
        began = time.perf_counter()
        child = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=errors, cwd=ROOT, start_new_session=True
        )
        killer = threading.Timer(timeout_s, os.killpg, (child.pid, signal.SIGKILL))
        killer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - began
        child.returncode = code = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        said = errors.read().decode(errors="replace").strip().splitlines()[-1:]
    if code == -signal.SIGKILL and wall >= timeout_s:
        return {"timeout_s": timeout_s}
    figures = {"wall_s": round(wall, 3), "peak_mb": round(usage.ru_maxrss / 1024, 1), "exit": code}
    return figures if code == 0 else {**figures, "error": said[0] if said else ""}


def measure(home: Path, plan: dict[str, Any], timeout_s: float, repeat: int) -> dict[str, dict[str, Any]]:
    """Each reader on ``home``, then an orchestrator's open + start, printed as they finish."""
    cli = [sys.executable, "-m", "orchestrator.cli"]
    calls = {label: [*cli, *args, "--home", str(home)] for label, args in readers(plan).items()}
    calls["open+start"] = [sys.executable, "-c", OPEN_START, str(home), ",".join(plan["commands"])]
    figures = {}
    for label, argv in calls.items():
        figures[label] = got = repeated(argv, timeout_s, repeat)
        print(f"  {label:<20} {shown(got)}", flush=True)
    return figures


def repeated(argv: list[str], timeout_s: float, repeat: int) -> dict[str, Any]:
    """``timed`` ``repeat`` times (stopping at a timeout or a failure): the median wall, the highest peak."""
    runs = []
    for _ in range(repeat):
        runs.append(got := timed(argv, timeout_s))
        if got.get("exit") != 0:
            return got
    walls = sorted(got["wall_s"] for got in runs)
    peak = max(got["peak_mb"] for got in runs)
    return {"wall_s": walls[(len(walls) - 1) // 2], "peak_mb": peak, "exit": 0, "walls_s": walls}


def shown(got: dict[str, Any]) -> str:
    if "timeout_s" in got:
        return f"timed out after {got['timeout_s']:.0f} s"
    text = f"{got['wall_s']:.2f} s, {got['peak_mb']:.0f} MB"
    return text if got["exit"] == 0 else f"{text}, exit {got['exit']}: {got['error'][:60]}"


def home_of(size: int, where: Path, reuse: bool, timeout_s: float) -> tuple[Path, dict[str, Any], bool]:
    """A home of ``size`` events under ``where`` (one already built if ``reuse``), its plan, and
    whether it was built now."""
    home = where / f"home-{size}"
    marker = home / "plan.json"
    if reuse and marker.exists():
        return home, json.loads(marker.read_text()), False
    shutil.rmtree(home, ignore_errors=True)
    needed, free = size * BYTES_PER_EVENT, shutil.disk_usage(where).free
    if needed > free:
        raise SystemExit(
            f"a home of {size:,} events needs ~{needed / 1e9:.1f} GB; {where} has {free / 1e9:.1f}"
        )
    argv = [sys.executable, "-m", "bench.history_build", str(home), str(size)]
    subprocess.run(argv, check=True, cwd=ROOT, timeout=timeout_s + size / BUILD_RATE_FLOOR)
    return home, json.loads(marker.read_text()), True


def table(results: dict[str, Any]) -> str:
    """A markdown table: a row per size, a column per reader (wall s, peak MB)."""
    labels = list(next(iter(results.values()))["readers"]) if results else []
    lines = ["| events | build | " + " | ".join(f"`{label}`" for label in labels) + " |"]
    lines.append("|" + " --- |" * (len(labels) + 2))
    for size in results.values():
        build = f"{size['events'] / size['build_s']:,.0f} ev/s" if size["built"] else "reused"
        cells = (shown(size["readers"][label]) for label in labels)
        lines.append(f"| {size['events']:,} | {build} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default="100000,1000000", help="sizes, comma-separated [%(default)s]")
    homes = parser.add_mutually_exclusive_group()
    homes.add_argument("--keep", type=Path, metavar="DIR", help="build the homes in DIR and keep them")
    homes.add_argument("--reuse", type=Path, metavar="DIR", help="as --keep, measuring homes already in DIR")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a call may take [%(default)s]")
    parser.add_argument("--repeat", type=int, default=1, help="calls of each reader; the median is shown [1]")
    args = parser.parse_args(argv)
    where = args.keep or args.reuse or Path(tempfile.mkdtemp(prefix="evenflow-history-"))
    where.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    try:
        for size in (int(part.replace("_", "")) for part in args.events.split(",")):
            home, plan, built = home_of(size, where, args.reuse is not None, args.timeout)
            rate = f"built in {plan['build_s']:.1f} s, {plan['events'] / plan['build_s']:,.0f} events/s"
            print(f"{plan['events']:,} events, {plan['runs']:,} runs ({rate}{'' if built else ', reused'})")
            results[str(size)] = {
                **plan,
                "built": built,
                "readers": measure(home, plan, args.timeout, args.repeat),
            }
    finally:
        if args.keep is None and args.reuse is None:
            shutil.rmtree(where, ignore_errors=True)
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = ", ".join(f"{figure:.2f}" for figure in os.getloadavg())
    print(
        f"\n{table(results)}\n\npeak RSS floor (this process's own peak) {floor:.0f} MB; load average {load}"
    )
    if args.json:
        figures = {
            "cpus": os.cpu_count(),
            "load": os.getloadavg(),
            "rss_floor_mb": round(floor, 1),
            "sizes": results,
        }
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
