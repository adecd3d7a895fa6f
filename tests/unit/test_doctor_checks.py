"""The doctor's judgement, without a server: expected indexes read from the code, and the thresholds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

import pytest

import orchestrator.store.mongo as mongo_store
from orchestrator.cli.checkup import SKEW_FAIL_S, index_checks, server_checks
from orchestrator.cli.declared_indexes import collections, expected_indexes
from orchestrator.cli.init_store import _create
from orchestrator.store.facts import (
    Access,
    OplogWindow,
    ServerFacts,
    Skew,
    Storage,
    Topology,
    Unknown,
    access_of,
    indexes_of,
)
from orchestrator.store.faithful_mock import client
from orchestrator.store.index_specs import LEASE_TTL_S
from orchestrator.store.open_runs import OPEN
from projections.indexes import INDEXES as PROJECTION_INDEXES


class TtlSpec(NamedTuple):
    name: str
    keys: tuple[tuple[str, int], ...]
    why: str
    expire_after_s: int | None = None


def test_the_log_and_the_read_model_indexes_are_expected() -> None:
    expected = expected_indexes()
    assert {spec.name for spec in mongo_store.INDEXES} <= set(expected["events"])
    assert set(expected["runs"]) == {spec.name for spec in PROJECTION_INDEXES["runs"]}
    assert expected["events"]["run_seq"] == {"key": [("run", 1), ("seq", 1)]}


def test_the_leases_ttl_is_expected_as_the_store_declares_it() -> None:
    [ttl] = mongo_store.LEASE_INDEXES
    expected = expected_indexes()[mongo_store.LEASES][ttl.name]
    assert expected == {"key": [("at", 1)], "expireAfterSeconds": LEASE_TTL_S}


def test_the_open_run_index_is_expected_partial_as_the_store_declares_it() -> None:
    expected = expected_indexes()["events"]["open_run"]
    assert expected == {"key": [(OPEN, 1)], "partialFilterExpression": {OPEN: True}}


def test_what_init_creates_is_what_the_doctor_expects() -> None:
    database = client()["evenflow"]
    assert {check.status for check in index_checks(expected_indexes(), indexes_of(database, ["events"]))} == {
        "warn"
    }
    _create(database)
    present = indexes_of(database, list(expected_indexes()))
    rows = index_checks(expected_indexes(), present)
    assert {row.check for row in rows} == {f"indexes on {c}" for c in ("events", "leases", "runs")}
    assert {row.status for row in rows} == {"ok"}, rows
    assert set(collections()) <= set(database.list_collection_names())


def test_an_index_missing_or_with_other_keys_or_ttl_is_named() -> None:
    expected: dict[str, Any] = {
        "leases": {"expire_at": {"key": [("at", 1)], "expireAfterSeconds": 86_400}},
        "events": {"run_seq": {"key": [("run", 1), ("seq", 1)]}, "at_id": {"key": [("at", 1)]}},
    }
    present: dict[str, Any] = {
        "leases": {
            "_id_": {"key": [("_id", 1)]},
            "expire_at": {"key": [("at", 1)], "expireAfterSeconds": 60},
        },
        "events": {"run_seq": {"key": [("run", 1.0), ("seq", 1.0)], "v": 2}},
    }
    rows = {row.check: row for row in index_checks(expected, present)}
    assert (rows["indexes on leases"].status, rows["indexes on leases"].value) == (
        "warn",
        "0 of 1 as expected: differ: expire_at",
    )
    assert rows["indexes on events"].value == "1 of 2 as expected: missing: at_id"
    assert "evenflow init" in rows["indexes on events"].fix
    present["events"]["at_id"] = {"key": [("at", 1)]}
    assert next(r for r in index_checks(expected, present) if r.check == "indexes on events").status == "ok"


def facts(**changes: Any) -> ServerFacts:
    healthy: dict[str, Any] = {
        "version": "7.0.2",
        "topology": Topology("rs0", ("a:1", "b:1", "c:1"), "a:1", mongos=False),
        "skew": Skew(0.01, 0.002),
        "storage": Storage("wiredTiger", persistent=True),
        "access": Access(("svc@admin",), ("readWrite@evenflow",), can_read=True, can_write=True),
        "oplog": OplogWindow(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC)),
        "write_concern": {"w": "majority", "j": True, "wtimeout": 10_000},
        "read_concern": "majority",
    }
    return ServerFacts(**{**healthy, **changes})


def statuses(found: ServerFacts, *, read_works: bool = True) -> dict[str, str]:
    return {row.check: row.status for row in server_checks(found, read_works=read_works)}


def test_a_healthy_server_is_all_ok() -> None:
    assert set(statuses(facts()).values()) == {"ok"}


@pytest.mark.parametrize(
    ("changes", "check", "status"),
    [
        ({"skew": Skew(SKEW_FAIL_S + 0.5, 0.2)}, "clock skew", "fail"),
        ({"skew": Skew(SKEW_FAIL_S - 0.5, 0.2)}, "clock skew", "warn"),
        ({"skew": Skew(1.2, 0.6)}, "clock skew", "ok"),  # within what the round trip cannot tell apart
        ({"topology": Topology("rs0", ("a:1", "b:1", "c:1"), None, mongos=False)}, "topology", "fail"),
        ({"topology": Topology(None, (), None, mongos=True)}, "topology", "ok"),
        ({"write_concern": {"w": 1}}, "write concern", "warn"),
        ({"write_concern": {"w": "majority"}}, "journaling", "warn"),
        ({"read_concern": None}, "read concern", "warn"),
        ({"version": "6.0.0"}, "server version", "ok"),
        ({"version": Unknown("refused")}, "server version", "warn"),
        ({"access": Access((), (), can_read=False, can_write=False)}, "access", "warn"),
        ({"topology": Unknown("hung")}, "topology", "fail"),
    ],
)
def test_thresholds(changes: dict[str, Any], check: str, status: str) -> None:
    assert statuses(facts(**changes))[check] == status


def test_no_user_and_no_reading_is_a_blocker() -> None:
    unauthenticated = Access((), (), can_read=False, can_write=False)
    assert statuses(facts(access=unauthenticated), read_works=False)["access"] == "fail"


def test_privileges_on_the_log_are_read_from_connection_status() -> None:
    status: dict[str, Any] = {"authInfo": {
        "authenticatedUsers": [{"user": "ana", "db": "admin"}],
        "authenticatedUserRoles": [{"role": "read", "db": "evenflow"}],
        "authenticatedUserPrivileges": [
            {"resource": {"db": "evenflow", "collection": ""}, "actions": ["find", "listIndexes"]},
            {"resource": {"db": "other", "collection": ""}, "actions": ["insert", "update"]},
            {"resource": {"cluster": True}, "actions": ["serverStatus"]},
        ],
    }}  # fmt: skip
    access = access_of(status, "evenflow")
    assert (access.users, access.can_read, access.can_write) == (("ana@admin",), True, False)
    status["authInfo"]["authenticatedUserPrivileges"].append(
        {"resource": {"anyResource": True}, "actions": ["insert", "update"]}
    )
    assert access_of(status, "evenflow").can_write
