"""Issue 13: a home this user cannot write to still answers every reading command.

A home may belong to another user's service, or sit on a read-only mount.
SQLite reads a WAL journal through an ``-shm`` index it must create when no
writer has the journal open, so a plain ``mode=ro`` open fails there. Reading
commands must still answer (from the main file when nothing is left in a
``-wal``), or refuse in one line naming the fix; writing commands refuse in
one line. Each case drives the real ``evenflow`` command in a subprocess.

The home is made unwritable by the kernel itself, in two ways, so nothing in
our code is faked:

- ``permissions``: the home and its files lose their write bits. Root ignores
  those through CAP_DAC_OVERRIDE, so as root the command runs under ``setpriv``
  (util-linux) with that capability and its kin dropped from the bounding set:
  still uid 0, so it can start the interpreter under ``/root/.pyenv`` (which
  ``nobody`` cannot even read), yet every write gets EACCES as for any other
  user. As a normal user, as on most CI machines, the chmod alone does it.
- ``read-only mount``: the home is bind-mounted read-only in a private mount
  namespace (``unshare --mount``, with ``--map-root-user`` when not root), so
  writes get EROFS as on a read-only volume. Skipped where namespaces are not
  allowed (a default Docker container, some hardened kernels).

Each way is probed first: a test that could not make the home unwritable is
skipped, saying why, rather than passing for the wrong reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.support.zmq_cluster import REPO, free_endpoint

pytestmark = pytest.mark.slow

EVENFLOW = [sys.executable, "-m", "orchestrator.cli"]
DROP_OVERRIDES = "--bounding-set=-dac_override,-dac_read_search,-fowner"
MOUNT_READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'

Lock = Callable[[Path], list[str]]
"""Makes a home unwritable; returns the prefix that runs a command where it is."""

WRITER = """
import sys
from orchestrator import Orchestrator
from orchestrator.cli import demo

with Orchestrator(demo.registry(), executor="inline", home=sys.argv[1], resume=False) as orch:
    orch.submit(demo.flow(), name="demo").result(60)
    print("ready", flush=True)
    sys.stdin.read()
"""

FOLLOWER = """
import sys
from orchestrator.store import open_store

store = open_store(None, home=sys.argv[1], read_only=True)
print(len(list(store.scan())), flush=True)
sys.stdin.readline()
print(store.refresh(), len(list(store.scan())), flush=True)
"""


def evenflow(
    *args: str, home: Path, prefix: Sequence[str] = (), cwd: Path | None = None, crash_at: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENFLOW_HOME": str(home), "NO_COLOR": "1", "EVENFLOW_CRASH_AT": crash_at}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [*prefix, *EVENFLOW, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line a refused command prints; fails on a traceback or more."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def by_permissions(home: Path) -> list[str]:
    for path in (home, *home.iterdir()):
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("as root, taking away CAP_DAC_OVERRIDE needs setpriv (util-linux)")
    return [setpriv, DROP_OVERRIDES]


def by_read_only_mount(home: Path) -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("a private read-only mount needs unshare (util-linux)")
    as_root = [] if os.geteuid() == 0 else ["--map-root-user"]
    return [unshare, "--mount", *as_root, "sh", "-c", MOUNT_READ_ONLY, str(home)]


@pytest.fixture(params=[by_permissions, by_read_only_mount], ids=["permissions", "read-only-mount"])
def lock(request: pytest.FixtureRequest) -> Iterator[Lock]:
    """Lock a home and prove it: a probe under the prefix must be refused a new file there."""
    locked: list[Path] = []

    def locking(home: Path) -> list[str]:
        locked.append(home)
        prefix: list[str] = request.param(home)
        probe = [*prefix, sys.executable, "-c", "import sys; open(sys.argv[1], 'x')", str(home / "probe")]
        done = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        if done.returncode == 0 or not ("Errno 13" in done.stderr or "Errno 30" in done.stderr):
            pytest.skip(f"cannot make a home unwritable this way here: {done.stderr.strip()[-200:]}")
        return prefix

    yield locking
    for home in locked:  # let pytest clean up after a normal user too
        for path in (home, *home.iterdir()):
            path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)


@contextmanager
def writable(home: Path) -> Iterator[None]:
    """The home with its write bits back for a while: the owner's view of it."""
    modes = {path: stat.S_IMODE(path.stat().st_mode) for path in (home, *home.iterdir())}
    for path, mode in modes.items():
        path.chmod(mode | stat.S_IWUSR)
    try:
        yield
    finally:
        for path, mode in modes.items():
            if path.exists():
                path.chmod(mode)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with two finished demo runs (a retry in each), closed cleanly: no ``-wal``, no ``-shm``."""
    home = tmp_path_factory.mktemp("finished") / "home"
    for _ in range(2):
        done = evenflow("demo", "--executor", "inline", home=home)
        assert done.returncode == 0, done.stderr
    return home


@pytest.fixture(scope="module")
def answers(finished: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], str]:
    """What each reading command prints on a writable copy (a reader leaves ``-wal`` and ``-shm`` there)."""
    writable = Path(shutil.copytree(finished, tmp_path_factory.mktemp("writable") / "home"))
    listed = json.loads(evenflow("runs", "--json", home=writable).stdout)["runs"]
    run = listed[0]["run"]
    commands = [
        ("runs",),
        ("runs", "--json"),
        ("status", run, "--json"),
        ("audit", run, "--json"),
        ("stats", "--json"),
        ("failures", "--json"),
    ]
    done = {command: evenflow(*command, home=writable) for command in commands}
    assert all(d.returncode == 0 and d.stdout for d in done.values()), [d.stderr for d in done.values()]
    return {command: d.stdout for command, d in done.items()}


@pytest.fixture
def home(finished: Path, tmp_path: Path) -> Path:
    home = Path(shutil.copytree(finished, tmp_path / "home"))
    assert sorted(path.name for path in home.iterdir()) == ["events.sqlite3", "owner.lock"]
    return home


def test_reading_commands_answer_on_an_unwritable_home_as_on_a_writable_one(
    answers: dict[tuple[str, ...], str], home: Path, lock: Lock
) -> None:
    prefix = lock(home)
    for command, expected in answers.items():
        done = evenflow(*command, home=home, prefix=prefix)
        assert (done.returncode, done.stderr) == (0, ""), (command, done.stderr)
        assert done.stdout == expected, command


def test_a_running_writers_events_still_in_its_wal_are_read_live(home: Path, lock: Lock) -> None:
    """Another user's service at work: its last run is only in the ``-wal``, which a snapshot would miss."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        assert (home / "events.sqlite3-wal").stat().st_size > 0
        done = evenflow("runs", "--json", home=home, prefix=lock(home))
        assert done.returncode == 0, done.stderr
        assert [row["state"] for row in json.loads(done.stdout)["runs"]] == ["succeeded"] * 3
    finally:
        writer.kill()
        writer.wait(30)


def test_a_reader_that_read_the_main_file_alone_sees_what_a_writer_added_since(
    home: Path, lock: Lock
) -> None:
    """SQLite trusts an immutable file never to change: the reader must see the owner's writes and reopen."""
    follower = subprocess.Popen(
        [*lock(home), sys.executable, "-c", FOLLOWER, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert follower.stdin is not None and follower.stdout is not None
        before = int(follower.stdout.readline())
        with writable(home):  # its owner, who may write there, runs one more demo and stops cleanly
            done = evenflow("demo", "--executor", "inline", home=home)
        assert done.returncode == 0, done.stderr
        follower.stdin.write("go\n")
        follower.stdin.flush()
        gained, after = map(int, follower.stdout.readline().split())
        assert after > before and gained == after - before
    finally:
        follower.kill()
        follower.wait(30)


def test_a_wal_this_user_cannot_index_is_refused_in_one_line_not_skipped(home: Path, lock: Lock) -> None:
    """A writer killed mid-run leaves events in the ``-wal`` alone; without the ``-shm`` (lost in a copy,
    or one this user may not open) SQLite could read only the main file, silently missing them."""
    crashed = evenflow("demo", "--executor", "inline", home=home, crash_at="after-append-before-dispatch@3")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert (home / "events.sqlite3-wal").stat().st_size > 0
    (home / "events.sqlite3-shm").unlink()
    done = evenflow("runs", home=home, prefix=lock(home))
    assert done.returncode == 2, done.stdout
    line = one_line(done)
    assert "events.sqlite3-wal" in line and str(home) in line, line
    assert "run as the user that owns" in line, line


USER_CODE = """
from orchestrator import Registry, call

registry = Registry()
registry.register("double", lambda x: 2 * x)
flow = call("double", 3)
"""


@pytest.mark.parametrize(
    "command",
    [
        ["demo"],
        ["run", "userflows:flow", "--registry", "userflows:registry"],
        ["resume", "--registry", "userflows:registry"],
        pytest.param(
            ["serve", "--bind", "ENDPOINT"],
            marks=pytest.mark.skipif(find_spec("zmq") is None, reason="serve needs the zmq extra"),
        ),
    ],
    ids=lambda command: command[0],
)
def test_writing_commands_refuse_an_unwritable_home_in_one_line(
    home: Path, lock: Lock, tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "userflows.py").write_text(textwrap.dedent(USER_CODE))
    argv = [free_endpoint() if arg == "ENDPOINT" else arg for arg in command]
    done = evenflow(*argv, home=home, prefix=lock(home), cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    line = one_line(done)
    assert str(home) in line and "--home" in line, line
