"""The parent's end of one child's connection: whole messages out and in, never blocking.

Each child of ``processes://`` holds one end of its own socket pair and uses it
as a blocking ``multiprocessing`` ``Connection``; the parent keeps the other end
non-blocking and speaks the same framing (a 4-byte big-endian length, or -1 and
an 8-byte one for very large messages). Non-blocking matters: the parent's one
reader thread also sends (refills, resends), and a reader that blocked writing
to a child busy writing to it would wait forever. What the socket will not take
now stays in ``pending`` until the reader sees the socket writable.

Nothing is shared between children, so a child killed in the middle of a write
spoils only its own connection; an incomplete message at the end is dropped.
"""

from __future__ import annotations

import socket
import struct
import threading
from multiprocessing.connection import Connection

READ_SIZE = 1 << 18
"""Read up to this much at once (into one buffer kept for it): a burst of outcomes costs one system
call, not two per message."""
BIG = 0x7FFFFFFF


def frame(message: bytes) -> bytes:
    """``message`` as ``Connection.recv_bytes`` in the child expects it."""
    size = len(message)
    header = struct.pack("!i", size) if size < BIG else struct.pack("!iQ", -1, size)
    return header + message


class Link:
    """One child's connection as the parent holds it; safe to write from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock: socket.socket | None = sock
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._received = bytearray()
        self._scratch = bytearray(READ_SIZE)
        self.fileno = sock.fileno()

    @classmethod
    def pair(cls) -> tuple[Link, Connection]:
        """A new link and the child's end of it, as a ``Connection`` to hand to the child."""
        ours, theirs = socket.socketpair()
        return cls(ours), Connection(theirs.detach())

    @property
    def waiting(self) -> bool:
        """Some of what was written waits for the socket to become writable."""
        return bool(self._pending)

    def write(self, data: bytes) -> bool:
        """Queue ``data`` (whole frames) and send what the socket takes now; False if some waits."""
        with self._lock:
            if self._sock is None:
                return True  # the child is gone: what it was sent is decided from its tickets
            self._pending += data
            return self._flush_locked()

    def flush(self) -> bool:
        """Send more of what waits (the reader calls this once the socket is writable)."""
        with self._lock:
            return self._sock is None or self._flush_locked()

    def _flush_locked(self) -> bool:
        assert self._sock is not None
        while self._pending:
            try:
                sent = self._sock.send(self._pending)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:  # the child is gone; its death decides what it held
                self._pending.clear()
                return True
            del self._pending[:sent]
        return True

    def read(self) -> tuple[list[bytes], bool]:
        """Every whole message that has arrived, and whether the child's end is closed."""
        sock, closed, scratch = self._sock, False, self._scratch
        while sock is not None:
            try:
                size = sock.recv_into(scratch)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                size = 0
            if not size:
                closed = True
                break
            self._received += memoryview(scratch)[:size]
            if size < READ_SIZE:
                break
        return self._messages(), closed

    def _messages(self) -> list[bytes]:
        buffer, messages, at = self._received, [], 0
        while len(buffer) - at >= 4:
            (size,) = struct.unpack_from("!i", buffer, at)
            start = at + 4
            if size == -1:
                if len(buffer) - start < 8:
                    break
                (size,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            if len(buffer) - start < size:
                break
            messages.append(bytes(buffer[start : start + size]))
            at = start + size
        del buffer[:at]
        return messages

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
            self._pending.clear()
        if sock is not None:
            sock.close()
