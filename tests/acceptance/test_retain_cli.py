"""``evenflow serve --retain AGE`` prunes the runs that finished longer ago than AGE, and keeps the rest."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from orchestrator.core import events as ev
from orchestrator.core.events import Event, utcnow
from orchestrator.store.embedded import EmbeddedStore
from tests.support.polling import wait_until
from tests.support.zmq_cluster import REPO, free_endpoint, service


def listed(home: Path) -> dict[str, str]:
    """Run id -> flow name, as `evenflow runs` lists them (read-only, beside the service)."""
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "runs", "--json", "--limit", "100", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    return {row["run"]: row["flow"] for row in json.loads(done.stdout)["runs"]}


def test_serve_with_retain_prunes_old_finished_runs_and_keeps_recent_and_unfinished_ones(
    tmp_path: Path,
) -> None:
    home, now = tmp_path / "home", utcnow()
    store = EmbeddedStore(home)
    long_ago = now - timedelta(days=40)
    for run in ("old-1", "old-2"):
        store.append([Event(run, 1, ev.RUN_SUBMITTED, long_ago), Event(run, 2, ev.RUN_SUCCEEDED, long_ago)])
    store.append([Event("recent", 1, ev.RUN_SUBMITTED, now), Event("recent", 2, ev.RUN_FAILED, now)])
    store.close()
    assert set(listed(home)) == {"old-1", "old-2", "recent"}

    with service(free_endpoint(), home, tmp_path, extra=("--retain", "30d")):
        wait_until(lambda: "old-1" not in listed(home), timeout=60.0, what="the old runs pruned")
        runs = listed(home)
    assert "old-2" not in runs and "recent" in runs
    assert [flow for flow in runs.values() if flow == "evenflow.prune"] == ["evenflow.prune"]
