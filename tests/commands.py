"""Commands for tests: plain module-level callables, so child processes can import them by name.

``make_registry()`` registers them all. The external ledger (``ledger_append`` /
``ledger_read``) lets a test count real executions (run, node, attempt, pid)
independently of what the orchestrator's log says.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import pickle
import signal
import sys
import threading
import zlib
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.core.context import current_call, emit
from orchestrator.core.flows import Node, call, parallel, sequence
from orchestrator.core.registry import Registry

LEDGER_ENV = "EVENFLOW_TEST_LEDGER"
"""Names the ledger file when a ``ledgered`` call does not pass ``ledger=``."""


# --- plain commands ---------------------------------------------------------------------


def inc(x: int) -> int:
    return x + 1


def square(x: int) -> int:
    return x * x


def total(values: list[int], start: int = 0) -> int:
    return sum(values, start)


def add(a: int, b: int) -> int:
    return a + b


def noop(value: Any = None) -> Any:
    return value


def describe(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Echo how it was called, to check that args and kwargs arrive intact."""
    return {"args": list(args), "kwargs": kwargs}


def echo_context() -> dict[str, Any] | None:
    """The attempt this call belongs to, as the command sees it."""
    context = current_call()
    return None if context is None else asdict(context)


async def async_echo_context() -> dict[str, Any] | None:
    await _yield()
    return echo_context()


def raise_value_error(message: str = "boom") -> None:
    raise ValueError(message)


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def raise_unprintable() -> None:
    raise UnprintableError()


def packed(value: Any) -> bytes:
    """Any Python value as small bytes to pass as an argument (pickled, then compressed)."""
    return zlib.compress(pickle.dumps(value))


def from_pickle(blob: bytes) -> Any:
    """Return the value ``packed`` into ``blob``: any Python value as a result, whatever args may hold."""
    return pickle.loads(zlib.decompress(blob))


def emit_from_pickle(blob: bytes) -> None:
    """Emit ``value.seen`` with the value ``packed`` into ``blob`` as its data's ``v``."""
    emit("value.seen", {"v": from_pickle(blob)})


def raise_odd(kind: str) -> None:
    """Raise an exception whose text is hard to store: a lone surrogate, 10 MB, args that are not
    text, or a ``__str__`` that raises."""
    if kind == "surrogate":
        raise ValueError("cannot open 'bad\udcff.txt'")
    if kind == "huge":
        raise ValueError("x" * 10_000_000)
    if kind == "args":
        raise ValueError(b"\xff\xfe", {1, 2}, object())
    raise UnprintableError()


def returns_set() -> set[int]:
    return {3, 1, 2}


def returns_flow(n: int = 3) -> Node:
    """A dynamic expansion: square 0..n-1 in parallel, then add them up."""
    return sequence(parallel([call("square", i) for i in range(n)]), call("total"))


def returns_bad_flow() -> Node:
    return sequence(call("noop", {1, 2}))


async def async_double(x: int) -> int:
    await _yield()
    return 2 * x


async def _yield() -> None:
    """Give the loop a turn, so these are coroutines that really suspend."""
    await asyncio.sleep(0)


_GATES: dict[str, threading.Event] = {}
_GATES_LOCK = threading.Lock()


def gate(name: str) -> threading.Event:
    """An in-process event ``slow`` waits on; tests set it to let the command finish early."""
    with _GATES_LOCK:
        return _GATES.setdefault(name, threading.Event())


def slow(seconds: float = 30.0, gate_name: str = "") -> bool:
    """Block until ``gate(gate_name)`` is set or ``seconds`` pass; True if released."""
    return (gate(gate_name) if gate_name else threading.Event()).wait(seconds)


async def async_slow(seconds: float = 30.0) -> str:
    await asyncio.sleep(seconds)
    return "finished"


def kill_self() -> None:
    """Die the hard way, as a crashing worker does: no cleanup, no outcome."""
    os.kill(os.getpid(), signal.SIGKILL)


def exit_self() -> None:
    sys.exit(3)


def die_once(marker: str, value: Any = "survived") -> Any:
    """SIGKILL the worker the first time (creating ``marker``), succeed on later attempts."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return value
    kill_self()
    return None


def wait_for_file(path: str, value: Any = None, seconds: float = 60.0) -> Any:
    """Block until ``path`` exists (polled, bounded by ``seconds``), then return ``value``."""
    waiting = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if os.path.exists(path):
            return value
        waiting.wait(0.01)
    raise TimeoutError(f"{path} did not appear within {seconds}s")


def pid() -> int:
    return os.getpid()


class Multiplier:
    """A callable object: commands need no function, only ``__call__``."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return x * self.factor


triple = Multiplier(3)
add_ten = functools.partial(add, 10)


def flaky(value: Any = None, failures: int = 2) -> Any:
    """Fail the first ``failures`` attempts of a node, then return ``value``."""
    context = current_call()
    if context is not None and context.attempt <= failures:
        raise ValueError(f"attempt {context.attempt} fails on purpose")
    return value


def emits(types: list[str], fail: bool = False) -> int:
    """Emit one event per type, in order (data: its index), then return how many, or raise."""
    for index, type_ in enumerate(types):
        emit(type_, {"index": index})
    if fail:
        raise ValueError(f"failed after emitting {len(types)} events")
    return len(types)


async def async_emits(types: list[str], fail: bool = False) -> int:
    """``emits`` as a coroutine that suspends between events."""
    for index, type_ in enumerate(types):
        emit(type_, {"index": index})
        await _yield()
    if fail:
        raise ValueError(f"failed after emitting {len(types)} events")
    return len(types)


def list_dir(path: str) -> list[str]:
    """The names in a directory, as ``os.listdir`` gives them: a name that is not UTF-8 holds lone
    surrogates (``'bad\\udcff'``), as real file systems make them."""
    return sorted(os.listdir(path))


def blob(size: int) -> str:
    """A result of ``size`` characters: large results without large arguments."""
    return "y" * size


def big_numbers(fail_marker: str = "") -> dict[str, int]:
    """Sizes and times beyond 32 bits; fails while ``fail_marker`` names a file that does not exist."""
    if fail_marker and not os.path.exists(fail_marker):
        raise FileNotFoundError(f"{fail_marker} is not there yet")
    return {"size": 2**40, "ms": 2**62, "low": -(2**63)}


# --- the external ledger ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    run: str
    node: str
    attempt: int
    pid: int


def ledger_append(path: str, run: str, node: str, attempt: int) -> None:
    """Record one execution with one O_APPEND write, safe from many processes at once."""
    line = json.dumps({"run": run, "node": node, "attempt": attempt, "pid": os.getpid()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def ledger_read(path: str) -> list[LedgerEntry]:
    """Every recorded execution, in append order; [] if nothing ran yet."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [LedgerEntry(**json.loads(line)) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def ledgered(value: Any = None, ledger: str | None = None) -> Any:
    """Record this execution in the ledger (``ledger=`` or ``$EVENFLOW_TEST_LEDGER``), return ``value``."""
    path = ledger or os.environ.get(LEDGER_ENV)
    if not path:
        raise RuntimeError(f"ledgered needs ledger= or ${LEDGER_ENV} naming the ledger file")
    context = current_call()
    if context is None:
        ledger_append(path, "", "", 0)
    else:
        ledger_append(path, context.run, context.node, context.attempt)
    return value


COMMANDS: dict[str, Any] = {
    "inc": inc,
    "square": square,
    "total": total,
    "add": add,
    "noop": noop,
    "describe": describe,
    "echo_context": echo_context,
    "async_echo_context": async_echo_context,
    "raise_value_error": raise_value_error,
    "raise_unprintable": raise_unprintable,
    "returns_set": returns_set,
    "returns_flow": returns_flow,
    "returns_bad_flow": returns_bad_flow,
    "async_double": async_double,
    "slow": slow,
    "async_slow": async_slow,
    "kill_self": kill_self,
    "exit_self": exit_self,
    "pid": pid,
    "triple": triple,
    "add_ten": add_ten,
    "flaky": flaky,
    "ledgered": ledgered,
    "die_once": die_once,
    "wait_for_file": wait_for_file,
    "emits": emits,
    "async_emits": async_emits,
    "list_dir": list_dir,
    "big_numbers": big_numbers,
    "blob": blob,
    "raise_odd": raise_odd,
    "from_pickle": from_pickle,
    "emit_from_pickle": emit_from_pickle,
}


def make_registry() -> Registry:
    registry = Registry()
    for name, fn in COMMANDS.items():
        registry.register(name, fn)
    return registry
