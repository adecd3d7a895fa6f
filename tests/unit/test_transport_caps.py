"""Caps that hit only the guilty, at the transport: starts reported, unstarted calls handed on, options.

A worker that reports starts loses with it only what it began; what it held
unstarted waits for another worker as the same attempt (bounded by
``MAX_REQUEUES``). A worker that does not (an older one) loses everything it
held, as before. Options announced in a hello are checked like a registry's;
the first announcement of a command is in force until its worker leaves.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.core.envelope import Envelope
from orchestrator.core.errors import ProtocolError, WorkerLost
from orchestrator.core.policy import RetryPolicy
from orchestrator.transport import protocol
from orchestrator.transport.protocol import Hello, Started
from orchestrator.transport.scheduler import MAX_REQUEUES, Scheduler
from orchestrator.transport.wire import dumps

POLICY = RetryPolicy(max_attempts=4, initial_delay=timedelta(seconds=2)).to_doc()


def hello(name: str = "w", *, starts: bool = True, options: dict | None = None, slots: int = 10) -> Hello:
    return Hello(name, frozenset({"a"}), frozenset(), slots, "s", starts=starts, options=options or {})


def scheduler() -> Scheduler:
    return Scheduler(heartbeat_s=1.0, liveness=3, schedule_timeout_s=60.0)


def calls(count: int) -> list[Envelope]:
    return [Envelope("r", f"n{i}", 1, "a") for i in range(count)]


# --- the messages -------------------------------------------------------------------------------


def test_a_hello_carries_starts_and_options_in_their_stored_form() -> None:
    frame = protocol.hello("w", ["a", "b"], [], 3, "s", {"a": {"retry": {"max_attempts": 4}, "timeout_s": 5}})
    message = protocol.from_peer(frame)
    assert isinstance(message, Hello) and message.starts is True
    assert message.options == {"a": {"retry": RetryPolicy(max_attempts=4).to_doc(), "timeout_s": 5.0}}


def test_an_older_workers_hello_reports_no_starts_and_no_options() -> None:
    frame = dumps(
        {"t": "hello", "v": 1, "name": "w", "commands": ["a"], "queues": [], "slots": 2, "session": "s"}
    )
    message = protocol.from_peer(frame)
    assert isinstance(message, Hello) and (message.starts, message.options) == (False, {})


@pytest.mark.parametrize(
    "options",
    [
        [],
        {"a": []},
        {"bad name!": {}},
        {"a": {"route": "q"}},
        {"a": {"retry": {"max_attempts": 0}}},
        {"a": {"retry": "often"}},
        {"a": {"timeout_s": 0}},
        {"a": {"timeout_s": -1}},
        {"a": {"timeout_s": True}},
        {"a": {"timeout_s": 10**12}},
    ],
)
def test_bad_options_in_a_hello_are_refused(options: object) -> None:
    doc = {"t": "hello", "v": 1, "name": "w", "commands": ["a"], "queues": [], "slots": 2, "session": "s"}
    with pytest.raises(ProtocolError, match="option"):
        protocol.from_peer(dumps({**doc, "options": options}))


def test_a_started_report_crosses_and_a_bad_one_is_refused() -> None:
    assert protocol.from_peer(protocol.started(["r/n#1", "r/m#2"])) == Started(["r/n#1", "r/m#2"])
    with pytest.raises(ProtocolError):
        protocol.from_peer(dumps({"t": "started", "ids": [1]}))


# --- the scheduler ------------------------------------------------------------------------------


def test_a_dead_worker_loses_only_the_calls_it_started_and_the_rest_go_to_another() -> None:
    s = scheduler()
    s.join(b"w1", hello("w1"), 0.0)
    (batch,) = s.place(calls(5), 0.0)
    s.started(b"w1", [batch.calls[0].attempt_id, "other/run#1"])
    gone = s.forget(b"w1", "went silent", 1.0)
    assert gone is not None and gone.requeued == 4
    assert [(e.envelope.node, type(e.error), e.reason) for e in gone.lost] == [("n0", WorkerLost, "lost")]
    s.join(b"w2", hello("w2"), 2.0)
    refill = s.fill(b"w2")
    assert refill is not None and [e.node for e in refill.calls] == ["n1", "n2", "n3", "n4"]


def test_a_worker_that_reports_no_starts_loses_everything_it_held() -> None:
    s = scheduler()
    s.join(b"old", hello("old", starts=False), 0.0)
    s.place(calls(3), 0.0)
    gone = s.forget(b"old", "went silent", 1.0)
    assert gone is not None and gone.requeued == 0 and len(gone.lost) == 3 and not s.pending


def test_bye_hands_back_what_the_worker_had_not_started() -> None:
    s = scheduler()
    s.join(b"w", hello(), 0.0)
    (batch,) = s.place(calls(3), 0.0)
    s.started(b"w", [batch.calls[0].attempt_id])
    assert s.drain(b"w", 1.0) == (2, [])
    assert [e.node for e, _ in s.pending[("a", None)]] == ["n1", "n2"]
    assert list(s.peers[b"w"].calls) == [batch.calls[0].attempt_id]
    gone = s.forget(b"w", "left", 2.0)
    assert gone is not None and [e.envelope.node for e in gone.lost] == ["n0"]


def test_a_call_handed_back_too_often_ends_as_lost() -> None:
    s = scheduler()
    [envelope] = calls(1)
    s.place([envelope], 0.0)
    for round_ in range(MAX_REQUEUES + 1):
        peer = f"w{round_}".encode()
        s.join(peer, hello(peer.decode()), float(round_))
        assert s.fill(peer) is not None
        gone = s.forget(peer, "went silent", round_ + 0.5)
        assert gone is not None
        if round_ < MAX_REQUEUES:
            assert (gone.requeued, gone.lost) == (1, [])
    assert gone.requeued == 0 and [e.envelope for e in gone.lost] == [envelope]
    assert "handed back too often" in str(gone.lost[0].error) and not s.pending


def test_the_first_announced_options_apply_until_their_worker_leaves() -> None:
    s = scheduler()
    assert s.join(b"w1", hello("w1", options={"a": {"retry": POLICY}}), 0.0) == []
    [conflict] = s.join(b"w2", hello("w2", options={"a": {"timeout_s": 5.0}}), 0.0)
    assert (conflict.command, conflict.kept, conflict.refused) == ("a", "w1", "w2")
    assert conflict.kept_options == {"retry": POLICY} and conflict.refused_options == {"timeout_s": 5.0}
    assert s.join(b"w3", hello("w3", options={"a": {"retry": POLICY}}), 0.0) == []  # the same: no conflict
    assert s.announced("a") == {"retry": POLICY}
    s.forget(b"w1", "left", 1.0)
    assert s.announced("a") == {"timeout_s": 5.0}  # the oldest live worker with the command
    s.forget(b"w2", "left", 1.0)
    s.forget(b"w3", "left", 1.0)
    assert s.announced("a") is None


def test_a_worker_that_said_bye_and_holds_nothing_leaves_cleanly_and_only_then() -> None:
    s = scheduler()
    s.join(b"w", hello(), 0.0)
    (batch,) = s.place(calls(1), 0.0)
    s.started(b"w", [batch.calls[0].attempt_id])
    s.drain(b"w", 1.0)
    s.completed(b"w", batch.calls[0].attempt_id)
    gone = s.forget(b"w", "left", 2.0)
    assert gone is not None and gone.clean  # logged at INFO, not as a warning
    s.join(b"x", hello("x"), 3.0)
    s.join(b"y", hello("y"), 3.0)
    (held,) = s.place(calls(1), 3.0)
    s.started(held.peer, [held.calls[0].attempt_id])
    s.drain(held.peer, 4.0)
    still = s.forget(held.peer, "left", 5.0)  # it said bye, but went with a call it had started
    assert still is not None and not still.clean
    silent = s.forget(b"y" if held.peer == b"x" else b"x", "went silent", 5.0)  # no bye: not clean
    assert silent is not None and not silent.clean
