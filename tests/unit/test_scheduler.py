"""The hub's scheduler, driven through random sequences of what a hub hears and is given.

Workers join (and re-join), heartbeat, finish calls, say bye, become unreachable
or fall silent; calls arrive for commands some worker has or none has, in the
default queue or another; acknowledgements come back from the log; time moves
and the hub ticks. After every step:

- no call is held by a worker the scheduler forgot (silent, unreachable, bad),
  and none is handed to a worker that departed, is draining, or lacks its
  command or queue;
- no worker is handed a call beyond its credit (its slots);
- every call is exactly one of: waiting, held by one live worker, completed, or
  ended here (lost with its worker, or unscheduled) -- none vanishes, none is
  held twice;
- a worker that reports starts loses with it only the calls it reported
  started; the others it held (and all it held unstarted when it says bye) wait
  again for another worker;
- a silent worker is forgotten at the first tick past its deadline, a waiting
  call fails at the first tick past the schedule timeout and not before, and an
  acknowledgement goes only to the worker that sent the outcome, once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orchestrator.core.envelope import Envelope
from orchestrator.core.errors import ConfigurationError, NoWorker, UnknownCommand, WorkerLost
from orchestrator.transport.protocol import Hello
from orchestrator.transport.scheduler import ACK_DELAY_S, Batch, Departure, Ended, Scheduler, credit

HEARTBEAT_S = 1.0
LIVENESS = 3
SCHEDULE_TIMEOUT_S = 5.0

PEERS = [b"w0", b"w1", b"w2", b"w3"]
COMMANDS = ["a", "b", "c"]
ROUTES = [None, "default", "q"]

peers = st.sampled_from(PEERS)
announced = st.frozensets(st.sampled_from(COMMANDS), min_size=1)
slots = st.integers(1, 4)


def hello(commands: frozenset[str], queues: frozenset[str], slots: int, starts: bool = False) -> Hello:
    return Hello(name="host", commands=commands, queues=queues, slots=slots, session="s", starts=starts)


@dataclass
class Model:
    """What the test knows happened to each call, learnt only from the scheduler's answers."""

    state: dict[str, str | bytes] = field(default_factory=dict)
    """attempt id -> "waiting", "completed", "ended", or the id of the worker holding it."""
    envelopes: dict[str, Envelope] = field(default_factory=dict)
    came: dict[str, float] = field(default_factory=dict)
    joined_with: dict[bytes, frozenset[str]] = field(default_factory=dict)
    starts: dict[bytes, bool] = field(default_factory=dict)
    """Whether each live worker reports the calls it starts."""
    started: set[str] = field(default_factory=set)
    departed: set[bytes] = field(default_factory=set)
    given_since_join: set[bytes] = field(default_factory=set)
    reported: dict[str, bytes] = field(default_factory=dict)
    """Outcomes a worker sent whose acknowledgement is not yet owed, by attempt."""
    owed: dict[bytes, Counter[str]] = field(default_factory=dict)
    """Acknowledgements the scheduler was told of and has not handed back yet (twice if told twice)."""


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.scheduler = Scheduler(
            heartbeat_s=HEARTBEAT_S, liveness=LIVENESS, schedule_timeout_s=SCHEDULE_TIMEOUT_S
        )
        self.model = Model()
        self.now = 100.0
        self.serial = 0

    # --- what the scheduler answers, checked and recorded ------------------------------------

    def given(self, batch: Batch | None) -> None:
        if batch is None:
            return
        peer = self.scheduler.peers.get(batch.peer)
        assert peer is not None and batch.peer not in self.model.departed, "a call for a forgotten worker"
        assert not peer.draining, f"{batch.peer!r} said bye and was still given calls"
        assert len(peer.calls) <= peer.slots, f"{batch.peer!r} holds {len(peer.calls)} > {peer.slots} slots"
        assert batch.calls, "an empty batch"
        for envelope in batch.calls:
            assert peer.takes(envelope), f"{envelope.command}/{envelope.route} to a worker without it"
            assert self.model.state[envelope.attempt_id] == "waiting", envelope.attempt_id
            self.model.state[envelope.attempt_id] = batch.peer
        self.model.given_since_join.add(batch.peer)
        self.acked(batch.peer, batch.acks)

    def acked(self, peer: bytes, ids: list[str]) -> None:
        owed, sent = self.model.owed.get(peer, Counter()), Counter(ids)
        assert sent <= owed, f"acknowledgements {sent - owed} were not owed to {peer!r} (or not that often)"
        owed -= sent

    def departed(self, departure: Departure | None, peer: bytes) -> None:
        if departure is None:
            assert peer not in self.model.joined_with
            return
        assert departure.peer == peer and peer not in self.scheduler.peers
        held = {a for a, s in self.model.state.items() if s == peer}
        began = {a for a in held if a in self.model.started or not self.model.starts[peer]}
        assert {ended.envelope.attempt_id for ended in departure.lost} == began
        for ended in departure.lost:
            assert isinstance(ended.error, WorkerLost) and ended.reason == "lost"
            self.model.state[ended.envelope.attempt_id] = "ended"
        self.handed_back(held - began)
        assert departure.requeued == len(held - began)
        self.model.joined_with.pop(peer)
        self.model.starts.pop(peer)
        self.model.departed.add(peer)
        self.model.owed.pop(peer, None)

    def handed_back(self, attempts: set[str]) -> None:
        for attempt in attempts:
            self.model.state[attempt], self.model.came[attempt] = "waiting", self.now

    def unscheduled(self, ended: Ended) -> None:
        attempt = ended.envelope.attempt_id
        assert self.model.state[attempt] == "waiting"
        assert self.now - self.model.came[attempt] > SCHEDULE_TIMEOUT_S, "failed before the schedule timeout"
        known = set().union(*self.model.joined_with.values())
        expected = NoWorker if ended.envelope.command in known else UnknownCommand
        assert type(ended.error) is expected and ended.reason == "raised"
        self.model.state[attempt] = "ended"

    # --- what the hub hears ------------------------------------------------------------------

    @rule(
        peer=peers,
        commands=announced,
        queued=st.booleans(),
        slots=slots,
        welcomed=st.booleans(),
        starts=st.booleans(),
    )
    def join(
        self, peer: bytes, commands: frozenset[str], queued: bool, slots: int, welcomed: bool, starts: bool
    ) -> None:
        """A hello; the welcome reaches the worker, or the send finds it gone."""
        queues = frozenset({"q"} if queued else ())
        self.scheduler.join(peer, hello(commands, queues, slots, starts), self.now)
        if starts and peer in self.model.joined_with:  # it dropped what it had not started
            self.handed_back(
                {a for a, s in self.model.state.items() if s == peer and a not in self.model.started}
            )
        self.model.joined_with[peer] = commands
        self.model.starts[peer] = starts
        self.model.departed.discard(peer)
        self.model.given_since_join.discard(peer)
        self.model.owed.pop(peer, None)  # a fresh hello: the worker resends what is unacknowledged
        if welcomed:
            self.given(self.scheduler.fill(peer))
        else:
            self.departed(self.scheduler.forget(peer, "became unreachable", self.now), peer)

    @rule(peer=peers)
    def heartbeat(self, peer: bytes) -> None:
        known = self.scheduler.heard(peer, self.now)
        assert (known is not None) == (peer in self.model.joined_with)
        if known is None and self.scheduler.should_reset(peer, self.now):
            assert not self.scheduler.should_reset(peer, self.now), "two resets in one liveness window"

    @rule(peer=peers)
    def bye(self, peer: bytes) -> None:
        if self.scheduler.heard(peer, self.now) is not None:
            count, lost = self.scheduler.drain(peer, self.now)
            held = {a for a, s in self.model.state.items() if s == peer and a not in self.model.started}
            unstarted = held if self.model.starts[peer] else set()
            assert (count, lost) == (len(unstarted), [])
            self.handed_back(unstarted)

    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        """A worker reports that it begins some calls it holds (and, now and then, one it does not)."""
        live = sorted(self.model.joined_with)
        if not live:
            return
        peer = data.draw(st.sampled_from(live))
        held = sorted(a for a, s in self.model.state.items() if s == peer)
        begun = data.draw(st.lists(st.sampled_from(held), unique=True)) if held else []
        self.scheduler.started(peer, [*begun, "old/run#1"])
        self.scheduler.heard(peer, self.now)
        self.model.started.update(begun)
        self.given(self.scheduler.fill(peer))
        self.kept_busy(peer)

    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        """A worker sends the outcomes of some calls it holds (and, now and then, one it does not)."""
        live = sorted(self.model.joined_with)
        if not live:
            return
        peer = data.draw(st.sampled_from(live))
        held = sorted(a for a, s in self.model.state.items() if s == peer)
        done = data.draw(st.lists(st.sampled_from(held), unique=True)) if held else []
        stray = data.draw(st.sampled_from(["", "old/run#1"]))
        self.scheduler.heard(peer, self.now)
        for attempt in [*done, *([stray] if stray else [])]:
            self.scheduler.completed(peer, attempt)
            self.model.reported[attempt] = peer
            if attempt in done:
                self.model.state[attempt] = "completed"
                self.model.started.discard(attempt)
        self.given(self.scheduler.fill(peer))
        self.kept_busy(peer)

    def kept_busy(self, peer: bytes) -> None:
        """Once the hub has read a worker's outcomes or reports, the worker is left no free slot it
        could fill while a call it takes waits, unless it holds a call it has not begun (credit then
        comes back in batches: half its slots at a time)."""
        known = self.scheduler.peers.get(peer)
        if known is None or known.draining or known.free == 0:
            return
        if known.starts and any(attempt not in known.started for attempt in known.calls):
            return
        waiting = [e.node for queue in self.scheduler.pending.values() for e, _ in queue if known.takes(e)]
        assert not waiting, f"{peer!r} has {known.free} free slots and nothing to begin, while {waiting} wait"

    @rule(peer=peers)
    def leave(self, peer: bytes) -> None:
        """A malformed message, or a send that found the worker gone: the hub forgets it."""
        self.departed(self.scheduler.forget(peer, "sent a malformed message", self.now), peer)

    # --- what the hub is given ---------------------------------------------------------------

    @rule(
        calls=st.lists(st.tuples(st.sampled_from([*COMMANDS, "x"]), st.sampled_from(ROUTES)), max_size=6),
        lost_send=st.booleans(),
    )
    def submit(self, calls: list[tuple[str, str | None]], lost_send: bool) -> None:
        envelopes = []
        for command, route in calls:
            self.serial += 1
            envelope = Envelope("run", f"n{self.serial}", 1, command, route=route)
            envelopes.append(envelope)
            self.model.state[envelope.attempt_id] = "waiting"
            self.model.envelopes[envelope.attempt_id] = envelope
            self.model.came[envelope.attempt_id] = self.now
        batches = self.scheduler.place(envelopes, self.now)
        assert len({batch.peer for batch in batches}) == len(batches), "two batches for one worker"
        for batch in batches:
            self.given(batch)
        if lost_send and batches:  # the first send fails: ROUTER_MANDATORY says the peer is gone
            peer = batches[0].peer
            self.departed(self.scheduler.forget(peer, "became unreachable", self.now), peer)

    @rule(data=st.data())
    def acknowledge(self, data: st.DataObject) -> None:
        """The engine logged some outcomes; each acknowledgement is owed to the worker that sent it."""
        if not self.model.reported:
            return
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model.reported)), unique=True, min_size=1))
        self.scheduler.acknowledge(ids, self.now)
        for attempt in ids:
            peer = self.model.reported.pop(attempt)
            if peer in self.model.joined_with:
                self.model.owed.setdefault(peer, Counter())[attempt] += 1

    # --- what time brings --------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.01, ACK_DELAY_S, 0.5, 1.0, 2.9, 3.1, 6.0]))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def tick(self) -> None:
        """What the hub does every half heartbeat: forget the silent, expire the waiting, flush acks."""
        for departure in self.scheduler.silent(self.now):
            self.departed(departure, departure.peer)
        for peer in self.scheduler.peers.values():
            assert self.now - peer.last_seen <= HEARTBEAT_S * LIVENESS, "a silent worker outlived a tick"
        for ended in self.scheduler.expire(self.now):
            self.unscheduled(ended)
        for attempt, state in self.model.state.items():
            if state == "waiting":
                assert self.now - self.model.came[attempt] <= SCHEDULE_TIMEOUT_S, "a call waits past timeout"
        self.flush()

    def flush(self) -> None:
        sends, due = self.scheduler.acks_due(self.now)
        for peer, ids in sends:
            assert ids and peer in self.scheduler.peers
            self.acked(peer, ids)
        for peer, owed in self.model.owed.items():
            if owed:
                assert self.now <= due <= self.now + ACK_DELAY_S, f"acks owed to {peer!r} with none due"

    @precondition(lambda self: any(s == "waiting" or isinstance(s, bytes) for s in self.model.state.values()))
    @rule()
    def everything_settles(self) -> None:
        """Once every worker falls silent and the timeout passes, every call has ended somewhere."""
        for _ in range(2):  # the workers' unstarted calls wait again from the tick that forgets them
            self.now += SCHEDULE_TIMEOUT_S + HEARTBEAT_S * LIVENESS + 1
            self.tick()
        assert not self.scheduler.peers and not self.scheduler.pending
        assert set(self.model.state.values()) <= {"completed", "ended"}

    # --- after every step --------------------------------------------------------------------

    @invariant()
    def every_call_is_in_exactly_one_place(self) -> None:
        holders: dict[str, list[bytes]] = {}
        for peer in self.scheduler.peers.values():
            for attempt in peer.calls:
                holders.setdefault(attempt, []).append(peer.id)
        waiting = [envelope.attempt_id for queue in self.scheduler.pending.values() for envelope, _ in queue]
        assert len(waiting) == len(set(waiting)), "a call waits twice"
        assert set(holders) | set(waiting) <= set(self.model.state), "a call nobody submitted"
        for attempt, state in self.model.state.items():
            if state == "waiting":
                assert attempt in waiting and attempt not in holders, attempt
            elif isinstance(state, bytes):
                assert holders.get(attempt) == [state] and attempt not in waiting, attempt
            else:
                assert attempt not in holders and attempt not in waiting, f"{attempt} is {state} yet kept"

    @invariant()
    def no_worker_is_over_its_credit(self) -> None:
        for peer in self.scheduler.peers.values():
            if peer.id in self.model.given_since_join:
                assert len(peer.calls) <= peer.slots, f"{peer.id!r}: {len(peer.calls)} calls > {peer.slots}"
        assert set(self.scheduler.peers) == set(self.model.joined_with)

    @invariant()
    def waiting_calls_wait_in_order(self) -> None:
        for queue in self.scheduler.pending.values():
            times = [came for _, came in queue]
            assert times == sorted(times) and queue, "a waiting queue out of order, or empty and kept"


SchedulerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_the_scheduler_loses_no_call_and_overruns_no_worker = SchedulerMachine.TestCase


# --- single decisions, by example -------------------------------------------------------------


def scheduler() -> Scheduler:
    return Scheduler(heartbeat_s=HEARTBEAT_S, liveness=LIVENESS, schedule_timeout_s=SCHEDULE_TIMEOUT_S)


def test_a_call_goes_to_the_worker_with_the_most_free_slots() -> None:
    s = scheduler()
    s.join(b"small", hello(frozenset({"a"}), frozenset(), 1), 0.0)
    s.join(b"big", hello(frozenset({"a"}), frozenset(), 3), 0.0)
    batches = s.place([Envelope("r", f"n{i}", 1, "a") for i in range(4)], 0.0)
    assert {batch.peer: len(batch.calls) for batch in batches} == {b"big": 3, b"small": 1}
    assert s.place([Envelope("r", "n9", 1, "a")], 0.0) == []
    assert [envelope.node for envelope, _ in s.pending[("a", None)]] == ["n9"]


def test_a_queued_call_goes_only_to_a_worker_in_its_queue() -> None:
    s = scheduler()
    s.join(b"plain", hello(frozenset({"a"}), frozenset(), 2), 0.0)
    assert s.place([Envelope("r", "n", 1, "a", route="gpu")], 0.0) == []
    s.join(b"gpu", hello(frozenset({"a"}), frozenset({"gpu"}), 2), 1.0)
    batch = s.fill(b"gpu")
    assert batch is not None and [e.node for e in batch.calls] == ["n"] and not s.pending


def test_acknowledgements_ride_on_the_next_call_or_go_alone_after_the_delay() -> None:
    s = scheduler()
    s.join(b"w", hello(frozenset({"a"}), frozenset(), 1), 0.0)
    (first,) = s.place([Envelope("r", "n1", 1, "a")], 0.0)
    s.completed(b"w", first.calls[0].attempt_id)
    s.acknowledge([first.calls[0].attempt_id], 0.0)
    assert s.acks_due(0.0) == ([], ACK_DELAY_S)
    (second,) = s.place([Envelope("r", "n2", 1, "a")], 0.001)
    assert second.acks == ["r/n1#1"]
    s.completed(b"w", "r/n2#1")
    s.acknowledge(["r/n2#1"], 1.0)
    assert s.acks_due(1.0 + ACK_DELAY_S) == ([(b"w", ["r/n2#1"])], float("inf"))


def test_a_silent_worker_is_forgotten_with_its_calls_lost_and_a_late_call_is_unscheduled() -> None:
    s = scheduler()
    s.join(b"w", hello(frozenset({"a"}), frozenset(), 1), 0.0)
    s.place([Envelope("r", "held", 1, "a"), Envelope("r", "late", 1, "a")], 0.0)
    assert s.silent(HEARTBEAT_S * LIVENESS) == []
    (gone,) = s.silent(HEARTBEAT_S * LIVENESS + 0.1)
    assert [(e.envelope.node, type(e.error), e.reason) for e in gone.lost] == [("held", WorkerLost, "lost")]
    assert s.expire(SCHEDULE_TIMEOUT_S) == []
    (ended,) = s.expire(SCHEDULE_TIMEOUT_S + 0.1)
    assert (ended.envelope.node, type(ended.error)) == ("late", UnknownCommand)  # no live worker has "a"


def test_credit_comes_back_half_the_slots_at_a_time_while_the_worker_has_calls_to_begin() -> None:
    """One slot, eight held ready: a stream of outcomes is refilled four calls a message, not one."""
    s = scheduler()
    s.join(b"w", hello(frozenset({"a"}), frozenset(), credit(1, 7), starts=True), 0.0)
    (first,) = s.place([Envelope("r", f"n{i}", 1, "a") for i in range(20)], 0.0)
    held = [envelope.attempt_id for envelope in first.calls]
    s.started(b"w", held[:1])
    refills = []
    for index, attempt in enumerate(held[:4]):
        s.completed(b"w", attempt)
        s.started(b"w", held[index + 1 : index + 2])  # the next begins with this outcome
        refills.append(s.fill(b"w"))
    assert refills[:3] == [None] * 3
    assert refills[3] is not None and [e.node for e in refills[3].calls] == ["n8", "n9", "n10", "n11"]


def test_a_worker_with_every_call_begun_is_refilled_at_once() -> None:
    s = scheduler()
    s.join(b"w", hello(frozenset({"a"}), frozenset(), 8, starts=True), 0.0)
    (first,) = s.place([Envelope("r", f"n{i}", 1, "a") for i in range(10)], 0.0)
    s.started(b"w", [envelope.attempt_id for envelope in first.calls])
    s.completed(b"w", first.calls[0].attempt_id)
    batch = s.fill(b"w")
    assert batch is not None and [e.node for e in batch.calls] == ["n8"]


def test_a_worker_that_does_not_report_starts_is_refilled_per_outcome() -> None:
    s = scheduler()
    s.join(b"w", hello(frozenset({"a"}), frozenset(), 8), 0.0)
    (first,) = s.place([Envelope("r", f"n{i}", 1, "a") for i in range(10)], 0.0)
    s.completed(b"w", first.calls[0].attempt_id)
    batch = s.fill(b"w")
    assert batch is not None and [e.node for e in batch.calls] == ["n8"]


def test_credit_is_the_running_slots_plus_the_calls_held_ready() -> None:
    assert credit(2) == 18 and credit(2, prefetch=0) == 2 and credit(3, prefetch=5) == 8


@pytest.mark.parametrize(("heartbeat_s", "liveness", "timeout_s"), [(0, 3, 1.0), (1.0, 0, 1.0), (1.0, 3, 0)])
def test_timings_are_checked_when_made(heartbeat_s: float, liveness: int, timeout_s: float) -> None:
    with pytest.raises(ConfigurationError, match="must be positive"):
        Scheduler(heartbeat_s=heartbeat_s, liveness=liveness, schedule_timeout_s=timeout_s)
