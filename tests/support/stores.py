"""Opening each kind of store the suites run on, the same way in every suite; and the server lane.

The server lane: set ``EVENFLOW_TEST_MONGODB_URL`` to any MongoDB URL (user
and password, options, ``authSource``, ``mongodb+srv://`` are all kept) and
the tests of ``SERVER_LANE`` run their ``mongodb`` cases on that server too;
``pytest -m mongodb`` runs just those. Unset, each is reported as skipped with
``NO_SERVER`` as the reason. Every such case is the parameter ``SERVER`` (or
uses a fixture parametrised with it), so it carries the ``mongodb`` marker,
and gets a database of its own (``server_database``, or ``open_kind`` plus
``drop_database``) whose URL ``database_url`` derives with PyMongo's own
parser; it is dropped afterwards, whatever the test did.

The URL's user must be allowed to create databases and to drop them or their
collections (``readWriteAnyDatabase`` and ``dbAdminAnyDatabase``, or ``root``);
a user limited to one database cannot run the lane.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from orchestrator.store import open_store

MONGODB_URL = os.environ.get("EVENFLOW_TEST_MONGODB_URL", "")
"""A real server to run the suites on as well; unset, its cases are skipped."""

NO_SERVER = (
    "no MongoDB server: set EVENFLOW_TEST_MONGODB_URL to any MongoDB URL (see tests/support/stores.py)"
)

SERVER = pytest.param(
    "mongodb", marks=[pytest.mark.mongodb, pytest.mark.skipif(not MONGODB_URL, reason=NO_SERVER)]
)
"""The ``mongodb`` case of a parametrised store kind: marked, and skipped without a server."""

SERVER_LANE: tuple[tuple[str, str], ...] = (
    ("tests/contract/test_store_contract.py", "the event store contract (harness case mongodb)"),
    ("tests/contract/test_feed_contract.py", "the listeners' feed contract and its overlap window"),
    ("tests/contract/test_store_abilities.py", "what a mongodb:// store offers once opened"),
    ("tests/projections/conftest.py", "events_collection: every projection test using it"),
    ("tests/projections/test_audit_chain.py", "audit chains (events_collection)"),
    ("tests/projections/test_differential.py", "every pipeline against the reference (events_collection)"),
    ("tests/projections/test_edge_cases.py", "time bounds of the pipelines (events_collection)"),
    ("tests/projections/test_pipelines.py", "golden answers, and each pipeline reading through an index"),
    ("tests/projections/runs_support.py", "runs_backend: every read-model test using it"),
    ("tests/projections/test_read_models.py", "the runs read model maintained, rebuilt, caught up"),
    ("tests/projections/test_run_history.py", "run history pages, and their index on a server"),
    ("tests/integration/test_large_submissions.py", "a flow past one 16 MiB event, logged in parts"),
    ("tests/integration/test_open_runs.py", "the open-runs index of unfinished runs, on every store"),
    ("tests/integration/test_prune.py", "prune removes exactly the whole finished runs no listener needs"),
    ("tests/integration/test_exchange_stores.py", "export and import: whole runs out and back, same bytes"),
    ("tests/integration/test_lease_expiry.py", "lease documents expiring (the TTL index itself on a server)"),
    ("tests/fault/test_leases.py", "several orchestrators (threads) sharing one log by leases"),
    ("tests/fault/test_shared_log_processes.py", "orchestrator processes sharing one log under SIGKILL"),
)
"""Every test module with cases that switch to the server, and what they prove there."""

_SOURCE_FROM_PATH = {
    None: "admin", "DEFAULT": "admin", "SCRAM-SHA-1": "admin", "SCRAM-SHA-256": "admin", "PLAIN": "$external"
}  # fmt: skip
"""Where a user authenticates when the URL names no ``authSource``: the URL's database, else this.
Other mechanisms (X.509, Kerberos, AWS, OIDC) always use ``$external``, whatever the path says."""

UNAUTHORIZED = 13


def database_url(database: str, url: str | None = None) -> str:
    """``url`` (default: the lane's) naming ``database``: its hosts, credentials and options kept.

    Read with PyMongo's own parser (``mongodb+srv://`` resolved as a client
    would), because a URL's database is also where its user authenticates
    unless ``authSource`` says otherwise: that source is written out, so
    pointing the path at another database does not move the login.
    """
    from pymongo.uri_parser import parse_uri

    url = MONGODB_URL if url is None else url
    parsed = parse_uri(url)
    scheme, _, rest = url.partition("://")
    before_query, _, query = rest.partition("?")
    hosts = before_query.partition("/")[0]
    options, mechanism = parsed["options"], parsed["options"].get("authMechanism")
    if parsed["username"] is not None and "authSource" not in options and mechanism in _SOURCE_FROM_PATH:
        source = parsed["database"] or _SOURCE_FROM_PATH[mechanism]
        delimiter = ";" if ";" in query and "&" not in query else "&"
        query = delimiter.join(filter(None, [query, f"authSource={quote(source, safe='')}"]))
    return f"{scheme}://{hosts}/{quote(database, safe='')}" + (f"?{query}" if query else "")


def fresh_name(prefix: str = "evenflow_test") -> str:
    """A database name no other test uses (well under the server's 63 bytes)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def open_kind(kind: str, home: Path, database: str) -> Any:
    """``memory``, ``mongomock``, ``embedded`` (in ``home``), or ``mongodb``: ``database`` on the server.

    A ``mongodb`` caller drops ``database`` afterwards (``drop_database``).
    """
    if kind == "embedded":
        return open_store(f"embedded://{home}")
    if kind == "mongodb":
        return open_store(database_url(database))
    return open_store(f"{kind}://")


def drop_database(client: Any, name: str) -> None:
    """Drop a test's database; a user who may not (no ``dropDatabase``) drops its collections instead."""
    from pymongo.errors import OperationFailure

    try:
        client.drop_database(name)
    except OperationFailure as exc:
        if exc.code != UNAUTHORIZED:
            raise
        for collection in client[name].list_collection_names():
            client[name].drop_collection(collection)


@functools.cache
def _client_options() -> dict[str, Any]:
    """What ``orchestrator.store.mongo.connect`` gives its client, a URL's own timeout kept."""
    from pymongo.uri_parser import parse_uri

    from orchestrator.store.encoding import TYPE_REGISTRY

    options: dict[str, Any] = {"tz_aware": True, "tzinfo": UTC, "type_registry": TYPE_REGISTRY}
    if "serverSelectionTimeoutMS" not in parse_uri(MONGODB_URL)["options"]:
        options["serverSelectionTimeoutMS"] = 5_000
    return options


@contextmanager
def server_database(prefix: str = "evenflow_test") -> Iterator[Any]:
    """A fresh database on the lane's server (a PyMongo ``Database``), dropped afterwards.

    Its client is opened as the store opens its own; ``database_url(db.name)``
    gives a URL to it for a store or another process.
    """
    from pymongo import MongoClient

    if not MONGODB_URL:
        pytest.skip(NO_SERVER)
    name = fresh_name(prefix)
    client: Any = MongoClient(database_url(name), **_client_options())
    try:
        yield client.get_default_database()
    finally:
        try:
            drop_database(client, name)
        finally:
            client.close()
