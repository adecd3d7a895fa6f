"""The standby takes a worker's socket only when a covered command outlasts its patience or is
nudged (or something already waits to be sent as the command begins), gives it back when the
command ends, and hands its own failure to the owner."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.support.polling import wait_until
from workers.zmq.standby import Standby

LONG_S = 60.0


class Turns:
    def __init__(self, fail: bool = False) -> None:
        self.count = 0
        self.fail = fail
        self.woken = threading.Event()
        self.pending = False
        """An outcome waits to be sent (its nudge came before the cover)."""

    def turn(self) -> None:
        self.count += 1
        if self.fail:
            raise RuntimeError("the socket went away")
        self.woken.wait(0.01)  # a poll, bounded as the worker's is
        self.woken.clear()


def standby_for(turns: Turns) -> Iterator[Standby]:
    standby = Standby(turns.turn, turns.woken.set, lambda: turns.pending)
    standby.start()
    try:
        yield standby
    finally:
        standby.close()


@pytest.fixture
def turns() -> Turns:
    return Turns()


@pytest.fixture
def standby(turns: Turns) -> Iterator[Standby]:
    yield from standby_for(turns)


def test_a_command_within_its_patience_keeps_the_socket(standby: Standby, turns: Turns) -> None:
    standby.cover(LONG_S)
    standby.uncover()
    assert turns.count == 0


def test_a_command_past_its_patience_has_the_socket_served_until_it_ends(
    standby: Standby, turns: Turns
) -> None:
    standby.cover(0.0)
    wait_until(lambda: turns.count >= 3, what="the standby served turns")
    standby.uncover()
    served = turns.count
    standby.cover(LONG_S)  # given back: a new cover within patience serves nothing more
    standby.uncover()
    assert turns.count == served


def test_a_nudge_takes_the_socket_before_the_patience_runs_out(standby: Standby, turns: Turns) -> None:
    standby.cover(LONG_S)
    standby.nudge()
    wait_until(lambda: turns.count >= 1, what="the standby served a turn after the nudge")
    standby.uncover()


def test_what_waits_as_the_command_begins_takes_the_socket_at_once(standby: Standby, turns: Turns) -> None:
    """A pool outcome nudged just before the cover (ignored then: nothing was covered) is not left
    waiting out the patience."""
    turns.pending = True
    standby.nudge()
    standby.cover(LONG_S)
    wait_until(lambda: turns.count >= 1, timeout=LONG_S / 2, what="the standby served the waiting outcome")
    standby.uncover()


def test_a_failing_turn_is_raised_in_the_owner() -> None:
    turns = Turns(fail=True)
    for standby in standby_for(turns):
        standby.cover(0.0)
        wait_until(lambda: turns.count >= 1, what="the standby tried a turn")
        with pytest.raises(RuntimeError, match="the socket went away"):
            standby.uncover()
