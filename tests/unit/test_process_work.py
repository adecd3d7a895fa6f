"""processes:// on its own: who gets which chunk, what a dead child's tickets become, the wire form."""

from __future__ import annotations

import pickle
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from tests.contract.executor_suite import envelope
from workers.execution import failed
from workers.process_child import NONE, decode, encode, pack, unpack
from workers.process_pool import Child
from workers.process_work import MAX_CHUNK, MAX_RESENDS, WINDOW, Book


@dataclass
class _Word:
    value: int = NONE


def _child() -> Child:
    return Child(process=cast(Any, None), link=cast(Any, None), started=_Word())


def _sent_everything(book: Book, children: list[Child]) -> dict[int, list[int]]:
    """Send chunks until none goes; the ticket numbers each child got, by its index."""
    got: dict[int, list[int]] = {index: [] for index in range(len(children))}
    while (chunk := book.next_chunk(children)) is not None:
        child, items = chunk
        book.sent(child, items)
        got[children.index(child)] += [number for number, _ in items]
    return got


def test_one_envelope_goes_alone_to_the_least_loaded_child() -> None:
    book, children = Book(), [_child(), _child()]
    children[0].load = 3
    book.add(envelope("noop", 1))
    assert _sent_everything(book, children) == {0: [], 1: [0]}
    assert children[1].load == 1 and not book.backlog


def test_of_two_idle_children_the_ready_one_gets_the_work() -> None:
    book, children = Book(), [_child(), _child()]
    children[1].ready = True
    book.add(envelope("noop", 1))
    assert _sent_everything(book, children) == {0: [], 1: [0]}


def test_a_fan_out_is_spread_in_chunks_and_no_child_holds_more_than_its_window() -> None:
    book, children = Book(), [_child(), _child()]
    for i in range(2_000):
        book.add(envelope("noop", i))
    got = _sent_everything(book, children)
    assert [child.load for child in children] == [WINDOW, WINDOW]
    assert [len(numbers) for numbers in got.values()] == [WINDOW, WINDOW]
    assert len(book.backlog) == 2_000 - 2 * WINDOW
    for number in got[0][:MAX_CHUNK]:  # the first child catches up on one chunk: it gets one more
        assert book.ended(number) is not None
    assert _sent_everything(book, children) == {0: list(range(2 * WINDOW, 2 * WINDOW + MAX_CHUNK)), 1: []}


def test_a_ticket_ends_once() -> None:
    book, (child,) = Book(), [_child()]
    book.add(envelope("noop", 1))
    _sent_everything(book, [child])
    assert book.ended(0) is not None and child.load == 0
    assert book.ended(0) is None and child.load == 0


def test_a_dead_child_loses_only_what_it_had_started_and_the_rest_waits_again_in_order() -> None:
    book, (dead, alive) = Book(), [_child(), _child()]
    for i in range(6):
        book.add(envelope("noop", i))
    book.backlog.clear()
    book.backlog.extend([4, 5])
    book.sent(dead, [(number, book.tickets[number].work) for number in (0, 1, 2, 3)])
    running = book.tickets[1].work
    book.ended(0)
    given_up = book.left_by(dead, started=1, closing=False)
    assert [(ticket.work, cause) for ticket, cause in given_up] == [
        (running, "the worker process running it died")
    ]
    assert list(book.backlog) == [2, 3, 4, 5]
    assert [book.tickets[number].resends for number in (2, 3, 4, 5)] == [0, 0, 0, 0], "they are not to blame"
    assert all(book.tickets[number].child is None for number in (2, 3))
    assert alive.load == 0


def test_a_child_that_dies_running_nothing_charges_each_of_its_tickets_a_resend() -> None:
    book, child = Book(), _child()
    for i in range(3):
        book.add(envelope("noop", i))
    _sent_everything(book, [child])
    book.ended(0)
    assert book.left_by(child, started=0, closing=False) == []  # idle after its first attempt
    assert list(book.backlog) == [1, 2]
    assert [book.tickets[number].resends for number in (1, 2)] == [1, 1]


def test_a_ticket_that_outlives_too_many_dead_children_is_given_up() -> None:
    book, child = Book(), _child()
    book.add(envelope("noop", 1))
    for _ in range(MAX_RESENDS):
        _sent_everything(book, [child])
        assert book.left_by(child, started=NONE, closing=False) == []
    _sent_everything(book, [child])
    ((_, cause),) = book.left_by(child, started=NONE, closing=False)
    assert cause == f"its worker process died {MAX_RESENDS + 1} times before it could start"
    assert not book.tickets and not book.backlog


def test_as_the_executor_closes_unstarted_envelopes_are_dropped_and_calls_are_answered() -> None:
    book, child = Book(), _child()
    book.add(envelope("noop", 1))
    book.add(b"a call", Future())
    _sent_everything(book, [child])
    given_up = book.left_by(child, started=NONE, closing=True)
    assert [(ticket.work, cause) for ticket, cause in given_up] == [
        (b"a call", "the executor closed before it started")
    ]
    assert not book.tickets and not book.backlog


def test_a_call_cancelled_while_it_waits_is_never_sent() -> None:
    book, child = Book(), _child()
    waiting: Future[Any] = Future()
    book.add(b"a call", waiting)
    book.add(envelope("noop", 1))
    assert waiting.cancel()
    chunk = book.next_chunk([child])
    assert chunk is not None and [number for number, _ in chunk[1]] == [1]
    assert 0 not in book.tickets


def test_envelopes_and_outcomes_cross_unchanged_in_their_flat_form() -> None:
    sent = replace(
        envelope("describe", 1, [2], flag=True),
        attempt=3,
        deadline=datetime(2030, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC),
        key="order-17",
        route="gpu",
    )
    kind, flat = pickle.loads(pack([(7, sent), (8, b"a call")]))
    assert kind == "run" and unpack(flat) == [(7, sent), (8, b"a call")]
    ended = failed(sent, ValueError("no"), by="host:1/processes", started_at=sent.deadline)
    assert decode(encode(7, ended)) == (7, ended)
    assert decode(encode(8, (True, b"value"))) == (8, (True, b"value"))
