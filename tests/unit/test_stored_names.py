"""Every class evenflow names in the log has a declared name, and the names never move."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from orchestrator.core import errors
from orchestrator.core.envelope import ErrorInfo
from orchestrator.core.policy import RetryPolicy
from orchestrator.core.stored_names import INTERRUPTED, NEVER_RETRY, declared_names, stored_name

GOLDEN = Path(__file__).parents[1] / "golden" / "logs"
EVENFLOW_ERRORS = [
    kind
    for _, kind in inspect.getmembers(errors, inspect.isclass)
    if issubclass(kind, errors.EvenflowError) and kind.__module__ == errors.__name__
]


def test_every_evenflow_error_has_a_declared_name() -> None:
    declared = declared_names()
    assert sorted(kind.__name__ for kind in EVENFLOW_ERRORS if kind not in declared) == []
    assert len(set(declared.values())) == len(declared), "two classes share a stored name"


@pytest.mark.parametrize("kind", EVENFLOW_ERRORS, ids=lambda kind: kind.__name__)
def test_moving_a_class_changes_nothing_stored(kind: type, monkeypatch: pytest.MonkeyPatch) -> None:
    before = stored_name(kind)
    monkeypatch.setattr(kind, "__module__", "orchestrator.somewhere_else")
    assert stored_name(kind) == before


def test_the_names_are_those_the_golden_logs_hold() -> None:
    """A name once written must keep meaning its class: the logs of earlier versions use these."""
    text = "".join(path.read_text(encoding="utf-8") for path in GOLDEN.glob("*.jsonl"))
    written = {name for name in declared_names().values() if f'"{name}"' in text}
    assert {INTERRUPTED, stored_name(errors.PayloadError), stored_name(errors.WorkerLost)} <= written
    assert stored_name(errors.CommandTimeout) in written and stored_name(errors.CascadeLimit) in written


def test_error_info_and_retry_policies_use_the_stored_names() -> None:
    info = ErrorInfo.from_exception(errors.NoWorker("none"))
    assert info.type == stored_name(errors.NoWorker)
    assert stored_name(errors.CommandError) in info.mro and "builtins.Exception" in info.mro
    policy = RetryPolicy(retry_on=(errors.WorkerLost, ValueError), never_retry=(errors.NoWorker,))
    assert policy.to_doc()["retry_on"] == [stored_name(errors.WorkerLost), "builtins.ValueError"]
    assert stored_name(errors.PayloadError) in NEVER_RETRY


def test_a_users_exception_is_named_by_its_module_and_qualname() -> None:
    class Declined(Exception):
        pass

    assert (
        stored_name(Declined)
        == f"{__name__}.test_a_users_exception_is_named_by_its_module_and_qualname.<locals>.Declined"
    )
    assert json.dumps(stored_name(ValueError)) == '"builtins.ValueError"'


def test_doc_fields_name_every_field_of_a_stored_event_in_order() -> None:
    from datetime import UTC, datetime

    from orchestrator.core import events as ev

    event = ev.Event("r", 1, ev.RUN_SUBMITTED, datetime(2026, 1, 1, tzinfo=UTC), None, None, None, {})
    assert tuple(ev.to_doc(event)) == ev.DOC_FIELDS
