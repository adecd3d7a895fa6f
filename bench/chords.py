"""What a big chord or map costs the orchestrator: wall time, peak RSS, memory per node.

    .venv/bin/python -m bench.chords [--sizes 20000,100000] [--kinds chord,map,group]
                                     [--executor inline|processes] [--json FILE]

Each (kind, size) runs in a child process of its own, on the embedded store in a
temporary home, so one run's memory cannot hide in another's. The child opens an
orchestrator, warms it up with one call, notes its resident memory, then runs:

- ``chord``: ``chord([square(0), ..., square(n-1)], total)``: its submission holds
  every child (past 16 MiB, in ``run.flow_part`` events after ``run.submitted``);
  the body's input, the list of results, is one payload (4 MiB): ~265,000 ints;
- ``group``: ``parallel([square(0), ..., square(n-1)])``, a literal flow of n calls
  with no body: what a million-node submission costs (its result, past 4 MiB, is
  not logged again in ``run.succeeded``: the nodes hold it);
- ``map``: ``span(lo, hi) | each(square) | total`` in chunks of at most
  ``MAP_CHUNK`` items, the chunks a chord's header: a map's children are made at
  run time, so only the list each chunk's ``span`` returns (4 MiB at most) bounds it.

It reports the run's wall and CPU time (submit to result; CPU time is the
steadier on a busy machine, but counts only this process), its peak RSS (``ru_maxrss``;
an executor's pool processes are not counted) and the growth over the warm
baseline divided by the run's nodes. Every child is killed after ``--timeout-s``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if not __package__:  # `python bench/chords.py`: import as the package it belongs to (PEP 366), as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from orchestrator import Node, Orchestrator, Registry, call, chord, each, parallel, sequence

from . import commands

ROOT = Path(__file__).resolve().parents[1]
EXECUTORS = {"inline": "inline", "processes": "processes://2"}
KINDS = ("chord", "map", "group")
MAP_CHUNK = 100_000
"""Items one ``span`` returns: its list of ints stays well under the 4 MiB payload limit."""


def span(lo: int, hi: int) -> list[int]:
    return list(range(lo, hi))


def registry() -> Registry:
    registry = Registry()
    registry.register("square", commands.square)
    registry.register("total", commands.total)
    registry.register("noop", commands.noop)
    # by its importable name, so a pool process started by spawn or forkserver finds it
    registry.register("span", __import__("bench.chords", fromlist=["span"]).span)
    return registry


def flow(kind: str, size: int) -> tuple[Node, int]:
    """The flow of ``kind`` over ``size`` items, and how many nodes its run holds."""
    if kind == "chord":
        return chord([call("square", i) for i in range(size)], call("total")), size + 3
    if kind == "group":
        return parallel([call("square", i) for i in range(size)]), size + 1
    chunks = [(lo, min(lo + MAP_CHUNK, size)) for lo in range(0, size, MAP_CHUNK)]
    header = [sequence(call("span", lo, hi), each("square"), call("total")) for lo, hi in chunks]
    return chord(header, call("total")), size + 4 * len(chunks) + 3


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(kind: str, size: int, executor: str, timeout_s: float) -> dict[str, Any]:
    """One run, measured in this process (the parent starts one per kind and size)."""
    with (
        tempfile.TemporaryDirectory(prefix="evenflow-chords-") as home,
        Orchestrator(registry(), executor=EXECUTORS[executor], home=home) as orch,
    ):
        orch.run(call("noop", 0), timeout=60)  # pools, imports, the store's first writes
        work, nodes = flow(kind, size)  # the caller's objects: not the orchestrator's memory
        baseline = _rss_bytes()
        began, cpu = time.perf_counter(), time.process_time()
        run = orch.submit(work, name=f"{kind}-{size}")
        del work
        got = run.result(timeout_s)
        wall_s, cpu_s = time.perf_counter() - began, time.process_time() - cpu
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    expected = sum(i * i for i in range(size))
    if (sum(got) if kind == "group" else got) != expected:
        raise AssertionError(f"{kind} of {size} returned {got}, expected {expected}")
    return {
        "kind": kind,
        "size": size,
        "nodes": nodes,
        "executor": executor,
        "wall_s": round(wall_s, 3),
        "cpu_s": round(cpu_s, 3),
        "peak_rss_mb": round(peak / 2**20, 1),
        "baseline_rss_mb": round(baseline / 2**20, 1),
        "bytes_per_node": round((peak - baseline) / nodes),
    }


def measure(kind: str, size: int, executor: str, timeout_s: float) -> dict[str, Any]:
    """Run ``child`` in a fresh interpreter; its figures, or why it gave none."""
    argv = [sys.executable, "-m", "bench.chords", "--child", kind, str(size), "--executor", executor]
    argv += ["--timeout-s", str(timeout_s)]
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s + 60)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "size": size, "executor": executor, "error": f"over {timeout_s:g} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"kind": kind, "size": size, "executor": executor, "error": tail[:300]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _print(row: dict[str, Any]) -> None:
    name = f"{row['kind']} {row['size']:>9,} on {row['executor']}"
    if "error" in row:
        print(f"{name}: failed: {row['error']}", flush=True)
        return
    print(
        f"{name}: {row['wall_s']:8.2f} s (CPU {row['cpu_s']:.2f} s)  "
        f"peak RSS {row['peak_rss_mb']:7.1f} MB (warm {row['baseline_rss_mb']:.1f} MB)  "
        f"{row['bytes_per_node']:6,} B/node  ({row['nodes']:,} nodes)",
        flush=True,
    )


def _ratios(rows: list[dict[str, Any]]) -> None:
    """Each kind's time and memory growth from its smallest size to its largest."""
    for kind in dict.fromkeys(row["kind"] for row in rows):
        done = sorted(
            (row for row in rows if row["kind"] == kind and "error" not in row), key=lambda r: r["size"]
        )
        if len(done) >= 2:
            small, large = done[0], done[-1]
            print(
                f"{kind}: x{large['size'] / small['size']:g} the size took "
                f"x{large['wall_s'] / small['wall_s']:.2f} the time, "
                f"x{large['cpu_s'] / small['cpu_s']:.2f} the CPU time"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="20000,100000", help="children per run, comma-separated")
    parser.add_argument("--kinds", default="chord,map", help=f"any of {', '.join(KINDS)}")
    parser.add_argument("--executor", default="inline", choices=sorted(EXECUTORS))
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="each run's limit")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.executor, args.timeout_s)))
        return
    rows = []
    for kind in args.kinds.split(","):
        if kind not in KINDS:
            parser.error(f"--kinds takes {', '.join(KINDS)}, not {kind!r}")
        for size in (int(text) for text in args.sizes.split(",")):
            rows.append(measure(kind, size, args.executor, args.timeout_s))
            _print(rows[-1])
    _ratios(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
