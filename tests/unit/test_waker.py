"""The waker tells, without clearing it, whether a wake-up waits: what a zmq worker's standby asks
as a command begins, so a stop or an outcome queued just before is not left to its patience."""

from __future__ import annotations

from orchestrator.transport.waker import Waker


def test_a_wake_is_pending_until_cleared_however_often_it_is_asked() -> None:
    waker = Waker()
    try:
        assert not waker.pending()
        waker.wake()
        waker.wake()
        assert waker.pending() and waker.pending()  # asking does not clear it
        waker.clear()
        assert not waker.pending()
    finally:
        waker.close()
