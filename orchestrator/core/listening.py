"""Listeners as values: what one listens to, and how its answer to an event becomes runs.

A listener is any callable taking one ``Event`` and returning nothing, a flow,
or a list of flows. ``on`` pairs it with type patterns, an optional predicate
and a name. The name is its identity in the log: every run it triggers is
keyed on ``(name, event id, index)``, so the run id is a function of the
causing event and a replay after a crash lands on the run already logged
instead of starting a second one. That is what makes triggering exactly-once.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

from .codec import is_text
from .envelope import ErrorInfo
from .errors import CascadeLimit, ConfigurationError, EvenflowError, ListenerError
from .events import Event
from .flow_docs import checked_flow
from .flows import ROOT, Node, encode_flow
from .keys import run_for_key

Since = Literal["now", "start"]
"""Where a listener with no checkpoint begins: events logged from now on, or the whole log."""
MAX_TRIGGERS = 100
"""Flows one listener may answer one event with."""
DEFAULT_CASCADE_LIMIT = 8
"""Listener hops from a run submitted by hand beyond which a chain is cut."""

NOTHING: dict[str, Any] = {
    "root": ROOT,
    "nodes": [{"path": ROOT, "parent": None, "kind": "parallel", "siblings": "finish", "children": []}],
}
"""The flow of a run logged only to record a listener's failure: a group of nothing."""

_PATTERN = re.compile(r"[A-Za-z0-9_*-]+(\.[A-Za-z0-9_*-]+)*")


def check_patterns(patterns: str | Iterable[str]) -> tuple[str, ...]:
    """Type patterns (``order.placed``, ``order.*``, ``*``), checked so stores can match them as given."""
    found = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    if not found:
        raise ConfigurationError("a listener needs at least one event type pattern, such as 'order.*'")
    for pattern in found:
        if not isinstance(pattern, str) or len(pattern) > 200 or not _PATTERN.fullmatch(pattern):
            raise ConfigurationError(
                f"event type pattern {pattern!r:.80} is not dotted words of letters, digits, '_', '-' "
                "with '*' for any text, such as 'order.*' or 'run.failed'"
            )
    return found


def matches(patterns: Iterable[str], type_: str) -> bool:
    return any(fnmatchcase(type_, pattern) for pattern in patterns)


def pattern_regex(pattern: str) -> str:
    """The anchored regular expression a pattern means (``*`` is any text), for MongoDB's ``$regex``."""
    return "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"


@dataclass(frozen=True, slots=True)
class Listener:
    patterns: tuple[str, ...]
    fn: Callable[[Event], Any]
    name: str
    predicate: Callable[[Event], bool] | None = None
    since: Since = "now"
    process: bool = False
    """Call ``fn`` in a child process (a ``multiprocessing`` pool) instead of this one."""


def on(
    pattern: str | Iterable[str],
    fn: Callable[[Event], Any],
    *,
    predicate: Callable[[Event], bool] | None = None,
    name: str | None = None,
    since: Since = "now",
    process: bool = False,
) -> Listener:
    """A listener: call ``fn`` with each logged event whose type matches ``pattern``.

    ``name`` identifies the listener across restarts (its checkpoint and the
    keys of what it triggers); by default the function's qualified name and the
    patterns. Rename a listener and it starts afresh.
    """
    patterns = check_patterns(pattern)
    if not callable(fn):
        raise ConfigurationError(f"a listener must be callable with one event, got {fn!r:.80}")
    if predicate is not None and not callable(predicate):
        raise ConfigurationError(
            f"a listener's predicate must be callable with one event, got {predicate!r:.80}"
        )
    if since not in ("now", "start"):
        raise ConfigurationError(f"since must be 'now' or 'start', got {since!r}")
    if name is None:
        name = f"{_qualified(fn)} on {','.join(patterns)}"
    if not isinstance(name, str) or not 0 < len(name) <= 200 or not is_text(name):
        raise ConfigurationError(f"a listener name must be a string of 1 to 200 characters, got {name!r:.80}")
    return Listener(patterns, fn, name, predicate, since, process)


def _qualified(fn: Callable[..., Any]) -> str:
    target = getattr(fn, "func", fn)  # a functools.partial names what it wraps
    module = getattr(target, "__module__", None) or type(target).__module__
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{qualname}"


# --- what a listener answered ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trigger:
    """One run a listener's answer to one event asks for: a flow, or the failure in its place."""

    listener: str
    event: str
    type: str
    """The causing event's type."""
    correlation: str | None
    index: int
    flow: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return trigger_key(self.listener, self.event, self.index)

    @property
    def run(self) -> str:
        return run_for_key(self.key)

    def to_doc(self) -> dict[str, Any]:
        return {
            "listener": self.listener,
            "event": self.event,
            "type": self.type,
            "correlation": self.correlation,
            "index": self.index,
            "flow": self.flow,
            "failure": self.failure,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Trigger:
        """A trigger a remote host sent, checked; a flow that does not parse becomes its failure."""
        flow, failure = doc.get("flow"), doc.get("failure")
        if (flow is None) == (failure is None):
            raise ListenerError("a trigger carries a flow or a failure, exactly one")
        listener, event, type_ = _text(doc, "listener"), _text(doc, "event"), _text(doc, "type")
        if flow is not None:
            try:
                flow = checked_flow(flow)
            except EvenflowError as exc:
                flow, failure = None, failure_doc(listener, event, type_, exc)
        return cls(
            listener=listener,
            event=event,
            type=type_,
            correlation=doc.get("correlation") if isinstance(doc.get("correlation"), str) else None,
            index=_number(doc, "index", MAX_TRIGGERS),
            flow=flow,
            failure=_failure(failure) if failure is not None else None,
        )


def trigger_key(listener: str, event: str, index: int) -> str:
    return f"listener:{listener}:{event}#{index}"


def triggers_for(listener: str, event: Event, answer: Any) -> list[Trigger]:
    """The runs ``answer`` (what the listener returned for ``event``) asks for, encoded for the log.

    An answer that is not None, a flow or a list of flows gives one failure in
    place of the flows, so the audit shows it.
    """
    correlation = event.correlation or event.run
    try:
        flows = [encode_flow(node) for node in _flows(listener, answer)]
    except Exception as exc:
        return [failed_trigger(listener, event, exc)]
    return [
        Trigger(listener, event.id, event.type, correlation, index, flow=flow)
        for index, flow in enumerate(flows)
    ]


def failed_trigger(listener: str, event: Event, exc: BaseException) -> Trigger:
    failure = failure_doc(listener, event.id, event.type, exc)
    return Trigger(listener, event.id, event.type, event.correlation or event.run, 0, failure=failure)


def cascade_limit(trigger: Trigger, depth: int, limit: int) -> CascadeLimit:
    return CascadeLimit(
        f"listener {trigger.listener!r} answered event {trigger.event} ({trigger.type}) with a run at "
        f"depth {depth}, past the cascade limit of {limit}: listeners keep triggering each other; break "
        "the cycle (a predicate, a narrower pattern) or raise cascade_limit"
    )


def failure_doc(listener: str, event: str, type_: str, exc: BaseException) -> dict[str, Any]:
    """A listener's failure as a failed run records it (``Failure.from_doc`` reads it back)."""
    tb = "".join(traceback.format_exception(exc)) if exc.__traceback__ is not None else ""
    info = ErrorInfo.from_exception(exc, traceback=tb)
    message = f"listener {listener!r} failed on event {event} ({type_}): {info.message}"
    return {"node": ROOT, "command": None, "attempt": None, **info.to_doc(), "message": message[:4_000]}


def _flows(listener: str, answer: Any) -> list[Node]:
    if answer is None:
        return []
    found = list(answer) if isinstance(answer, list | tuple) else [answer]
    if len(found) > MAX_TRIGGERS:
        raise ListenerError(
            f"listener {listener!r} answered one event with {len(found)} flows, over {MAX_TRIGGERS}; "
            "return one flow (a parallel or an each) holding them"
        )
    for item in found:
        if not isinstance(item, Node):
            raise ListenerError(
                f"listener {listener!r} returned {item!r:.80}; return None, a flow (call(...), "
                "sequence(...), ...) or a list of flows"
            )
    return found


def _failure(doc: Any) -> dict[str, Any]:
    """A failure sent by a remote host, rebuilt to the fields and sizes ``failure_doc`` gives."""
    texts = isinstance(doc, Mapping) and all(isinstance(doc.get(name), str) for name in ("type", "message"))
    if not texts:
        raise ListenerError("a trigger's failure must be an object with the strings type and message")
    mro = doc.get("mro")
    info = ErrorInfo(
        type=doc["type"][:1_000],
        message=doc["message"],
        mro=tuple(name for name in mro if isinstance(name, str)) if isinstance(mro, list) else (),
        traceback=doc.get("traceback") if isinstance(doc.get("traceback"), str) else "",
    )
    return {"node": ROOT, "command": None, "attempt": None, **info.to_doc(), "message": info.message[:4_000]}


def _text(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= 1_000 or not is_text(value):
        raise ListenerError(f"a trigger's {name} must be a string of 1 to 1000 characters of valid Unicode")
    return value


def _number(doc: Mapping[str, Any], name: str, bound: int) -> int:
    value = doc.get(name)
    if type(value) is not int or not 0 <= value <= bound:
        raise ListenerError(f"a trigger's {name} must be a whole number from 0 to {bound}")
    return value
