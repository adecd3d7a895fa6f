"""The one-writer lock of an embedded home: an exclusive ``flock`` the OS drops when its holder dies."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from orchestrator.core.errors import StoreLocked, StoreUnavailable

OWNER_LOCK = "owner.lock"


class OwnerLock:
    """An exclusive ``flock`` on ``home/owner.lock`` naming its owner's pid; the OS frees it at death."""

    _held: set[int] = set()
    _fork_hook = False

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, home: Path) -> OwnerLock:
        try:
            home.mkdir(parents=True, exist_ok=True)
            fd = os.open(home / OWNER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot write to the embedded store in {home} ({exc}); run as a user who may write there, "
                "or give another --home / EVENFLOW_HOME (reading commands need no write access)"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StoreLocked(str(home), pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        cls._track(fd)
        return cls(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        OwnerLock._held.discard(fd)
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @classmethod
    def _track(cls, fd: int) -> None:
        """Forked children (process pools) must not keep the lock alive after the owner dies."""
        cls._held.add(fd)
        if not cls._fork_hook:
            os.register_at_fork(after_in_child=cls._forget_in_child)
            cls._fork_hook = True

    @classmethod
    def _forget_in_child(cls) -> None:
        # Closing the child's copy leaves the parent's lock alone: a flock belongs to the open file.
        for fd in cls._held:
            with contextlib.suppress(OSError):
                os.close(fd)
        cls._held.clear()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
