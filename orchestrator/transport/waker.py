"""A pipe that wakes a thread blocked in a ZeroMQ poll when another thread has work for it.

ZeroMQ sockets belong to one thread; other threads queue their work and write
a byte here, and the poll (which takes plain file descriptors too) returns.
"""

from __future__ import annotations

import contextlib
import os
import select


class Waker:
    def __init__(self) -> None:
        self.fd, self._write = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write, False)
        self._peek = select.poll()  # not select(): a busy process may hold descriptors past 1,024
        self._peek.register(self.fd, select.POLLIN)

    def wake(self) -> None:
        """From any thread; a full pipe means a wake-up is already pending, so nothing is lost."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write, b"x")

    def pending(self) -> bool:
        """Whether a wake-up waits, uncleared: work was queued since the last ``clear``."""
        return bool(self._peek.poll(0))

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 4096):
                pass

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._write)
