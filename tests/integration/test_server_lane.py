"""Issue 14, finding 10: the server lane takes any MongoDB URL and lists its tests in one place.

``database_url`` points a URL at a test's own database with PyMongo's parser,
so hosts, options, credentials and ``mongodb+srv://`` survive, and the user
still authenticates where the URL said (its path database is also the default
``authSource``). Each derived URL is parsed back and compared field by field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pymongo.errors import OperationFailure
from pymongo.synchronous import uri_parser as sync_uri_parser
from pymongo.uri_parser import parse_uri

from orchestrator.store.faithful_mock import client
from tests.support import stores
from tests.support.stores import SERVER_LANE, database_url, drop_database

TESTS = Path(__file__).resolve().parents[1]
EXTERNAL_ONLY = {"MONGODB-X509", "GSSAPI", "MONGODB-AWS", "MONGODB-OIDC"}


def auth_source(parsed: dict[str, Any]) -> str | None:
    """Where the driver logs the user in, for the mechanisms the lane may meet (None: no user)."""
    options, mechanism = parsed["options"], parsed["options"].get("authMechanism")
    if parsed["username"] is None and mechanism is None:
        return None
    if mechanism in EXTERNAL_ONLY:
        return "$external"
    default = "$external" if mechanism == "PLAIN" else "admin"
    return str(options.get("authSource") or parsed["database"] or default)


def assert_same_server_other_database(url: str, derived: str, database: str = "t_1") -> None:
    before, after = parse_uri(url), parse_uri(derived)
    assert after["database"] == database and after["collection"] is None
    for field in ("nodelist", "username", "password", "fqdn"):
        assert after[field] == before[field], field
    added = set(after["options"]) - set(before["options"])
    assert added <= {"authSource"}, added
    assert {key: after["options"][key] for key in before["options"]} == before["options"]
    assert auth_source(after) == auth_source(before)


URLS = [
    ("mongodb://localhost", "mongodb://localhost/t_1"),
    ("mongodb://localhost:27017/", "mongodb://localhost:27017/t_1"),
    ("mongodb://localhost:27017/evenflow", "mongodb://localhost:27017/t_1"),
    ("mongodb://db.example?tls=false", "mongodb://db.example/t_1?tls=false"),
    (
        "mongodb://h1:27017,h2:27018/app?replicaSet=rs0&w=majority&readPreference=primaryPreferred",
        "mongodb://h1:27017,h2:27018/t_1?replicaSet=rs0&w=majority&readPreference=primaryPreferred",
    ),
    (
        "mongodb://ops:p%40ss%2Fw%3Ard@h1,h2/admin?replicaSet=rs0",
        "mongodb://ops:p%40ss%2Fw%3Ard@h1,h2/t_1?replicaSet=rs0&authSource=admin",
    ),
    ("mongodb://ops:pw@db.example/app", "mongodb://ops:pw@db.example/t_1?authSource=app"),
    ("mongodb://ops:pw@db.example", "mongodb://ops:pw@db.example/t_1?authSource=admin"),
    ("mongodb://ops:pw@db.example/app?authSource=admin", "mongodb://ops:pw@db.example/t_1?authSource=admin"),
    ("mongodb://ops:pw@db.example/app?w=1;journal=true", "mongodb://ops:pw@db.example/t_1?w=1;journal=true;authSource=app"),
    ("mongodb://ops:pw@ldap.example/?authMechanism=PLAIN", "mongodb://ops:pw@ldap.example/t_1?authMechanism=PLAIN&authSource=%24external"),
    ("mongodb://ops@db.example/app?authMechanism=GSSAPI", "mongodb://ops@db.example/t_1?authMechanism=GSSAPI"),
    ("mongodb://%2Ftmp%2Fmongodb-27017.sock/evenflow", "mongodb://%2Ftmp%2Fmongodb-27017.sock/t_1"),
]  # fmt: skip


@pytest.mark.parametrize(("url", "expected"), URLS)
def test_a_test_database_url_keeps_hosts_options_and_where_the_user_logs_in(url: str, expected: str) -> None:
    derived = database_url("t_1", url)
    assert derived == expected
    assert_same_server_other_database(url, derived)


class FakeSrv:
    """DNS for ``mongodb+srv://cluster0.x.example.net``: three hosts, and the TXT options of ``txt``."""

    txt: str | None = None

    def __init__(self, fqdn: str, *args: Any) -> None:
        assert fqdn == "cluster0.x.example.net"

    def get_hosts(self) -> list[tuple[str, int]]:
        return [(f"cluster0-shard-00-0{i}.x.example.net", 27017) for i in range(3)]

    def get_options(self) -> str | None:
        return self.txt


@pytest.mark.parametrize(
    ("txt", "expected"),
    [
        ("authSource=admin&replicaSet=atlas-q1", "mongodb+srv://ops:pw@cluster0.x.example.net/t_1?retryWrites=true&w=majority"),
        (None, "mongodb+srv://ops:pw@cluster0.x.example.net/t_1?retryWrites=true&w=majority&authSource=app"),
    ],
    ids=["txt-names-the-source", "no-txt"],
)  # fmt: skip
def test_a_mongodb_srv_url_is_resolved_as_the_client_would(
    monkeypatch: pytest.MonkeyPatch, txt: str | None, expected: str
) -> None:
    """The TXT record may carry ``authSource``: then the path never named it, and it is left to DNS."""
    monkeypatch.setattr(FakeSrv, "txt", txt)
    monkeypatch.setattr(sync_uri_parser, "_SrvResolver", FakeSrv)
    url = "mongodb+srv://ops:pw@cluster0.x.example.net/app?retryWrites=true&w=majority"
    derived = database_url("t_1", url)
    assert derived == expected
    assert_same_server_other_database(url, derived)


def test_the_lane_url_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "MONGODB_URL", "mongodb://ops:pw@db.example/ci?replicaSet=rs0")
    assert database_url("t_1") == "mongodb://ops:pw@db.example/t_1?replicaSet=rs0&authSource=ci"


def test_a_user_who_may_not_drop_a_database_drops_its_collections() -> None:
    server = client()
    for name in ("events", "runs", "leases"):
        server["t_1"][name].insert_one({"x": 1})
    server["keep"]["events"].insert_one({"x": 1})

    class NoDropDatabase:
        def __getitem__(self, name: str) -> Any:
            return server[name]

        def drop_database(self, name: str) -> None:
            raise OperationFailure("not authorized on t_1 to execute command { dropDatabase: 1 }", code=13)

    drop_database(NoDropDatabase(), "t_1")
    assert server["t_1"].list_collection_names() == []
    assert server["keep"].list_collection_names() == ["events"]


# --- one list of the tests that switch to the server ------------------------------------------

_USES_SERVER = re.compile(
    r"\b(SERVER|server_database|open_kind|events_collection|runs_backend|MONGODB_URL)\b"
)
_READS_THE_VARIABLE = re.compile(r"environ\W.*EVENFLOW_TEST_MONGODB_URL|=\s*[\"']EVENFLOW_TEST_MONGODB_URL")


def _test_sources() -> dict[str, str]:
    skip = {"tests/support/stores.py", "tests/integration/test_server_lane.py"}
    found = {}
    for path in sorted(TESTS.rglob("*.py")):
        name = path.relative_to(TESTS.parent).as_posix()
        if name not in skip:
            found[name] = path.read_text(encoding="utf-8")
    return found


def test_every_module_that_can_use_the_server_is_listed_in_the_lane() -> None:
    listed = {module for module, _ in SERVER_LANE}
    using = {name for name, text in _test_sources().items() if _USES_SERVER.search(text)}
    kinds_only = {"tests/golden/test_golden_logs.py"}  # open_kind on memory, mongomock and embedded only
    assert using - kinds_only <= listed, sorted(using - kinds_only - listed)
    assert all((TESTS.parent / module).exists() for module in listed), [
        module for module in listed if not (TESTS.parent / module).exists()
    ]


def test_only_the_lane_reads_the_server_variable() -> None:
    readers = [name for name, text in _test_sources().items() if _READS_THE_VARIABLE.search(text)]
    assert readers == [], f"read EVENFLOW_TEST_MONGODB_URL through tests.support.stores instead: {readers}"
