"""The README's tour runs as written: its first Python block is executed as a user's script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_tour_runs_as_a_script(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    script = tmp_path / "tour.py"
    script.write_text(blocks[0])
    env = {**os.environ, "EVENFLOW_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    run_id, result, status = done.stdout.split()
    assert (len(run_id), result, status) == (32, "285", "succeeded")


def test_the_listener_example_runs_as_a_script(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (example,) = [block for block in blocks if "orch.listen(" in block]
    script = tmp_path / "listeners.py"
    script.write_text(example)
    env = {**os.environ, "EVENFLOW_HOME": str(tmp_path / "home")}
    for _ in range(2):  # again on the same home: the listeners resume from their checkpoints
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["7", "True"], done.stdout
