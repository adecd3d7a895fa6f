"""Issue 14, finding 9: the reading commands work for a user holding only MongoDB's ``read`` role.

A server refuses every write of such a user with ``OperationFailure`` code 13
(Unauthorized). ``ReadRoleClient`` does the same over the in-memory server of
a writable faithful mongomock client, and records every write it is asked
for. The CLI reaches it through the ``MongoClient`` that
``orchestrator.store.mongo.connect`` opens, so each command runs as a user runs
it, ``main()`` -> ``open_store`` -> ``connect``, against a ``mongodb://`` URL
with credentials. ``evenflow init``, run as a ``readWrite`` user, creates what
the reading commands rely on and says what it did.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NoReturn

import pytest
from bson.codec_options import CodecOptions
from pymongo.errors import OperationFailure

from orchestrator import Orchestrator, RetryPolicy, RunFailed, call, parallel, sequence
from orchestrator.cli import main
from orchestrator.core.flows import Node
from orchestrator.store import faithful_mock, mongo
from orchestrator.store.encoding import CODEC_OPTIONS
from orchestrator.store.faithful_mock import BsonClient, BsonCollection, BsonDatabase
from orchestrator.store.mongo import MongoStore
from projections import catch_up, rebuild_runs, run_history
from tests.commands import make_registry

URL = "mongodb://analyst:s3cret@db.example:27017/evenflow?authSource=admin&replicaSet=rs0"
UNAUTHORIZED = 13

COLLECTION_WRITES = (
    "insert_one", "insert_many", "update_one", "update_many", "replace_one", "delete_one", "delete_many",
    "bulk_write", "find_one_and_delete", "find_one_and_replace", "find_one_and_update", "create_index",
    "create_indexes", "drop_index", "drop_indexes", "drop", "rename", "_insert", "_update", "_delete",
)  # fmt: skip
DATABASE_WRITES = ("create_collection", "drop_collection", "rename_collection")
READ_COMMANDS = frozenset(
    {"ping", "hello", "ismaster", "buildinfo", "serverstatus", "connectionstatus", "listcollections",
     "listindexes", "dbstats", "collstats", "count", "distinct", "find", "aggregate", "explain"}
)  # fmt: skip


def _refuse(client: ReadRoleClient, database: str, what: str) -> NoReturn:
    client.refused.append(what)
    message = f"not authorized on {database} to execute command {{ {what} }}"
    details = {"ok": 0.0, "errmsg": message, "code": UNAUTHORIZED, "codeName": "Unauthorized"}
    raise OperationFailure(message, code=UNAUTHORIZED, details=details)


def _refusing(name: str) -> Callable[..., NoReturn]:
    def refuse(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(self.database.client, self.database.name, f"{name} on {self.name}")

    return refuse


class ReadRoleCollection(BsonCollection):
    """Reads as a server gives them; every write refused as a server refuses a ``read``-role user's."""

    def aggregate(self, pipeline: list[dict[str, Any]], session: Any = None, **kwargs: Any) -> Any:
        if any("$out" in stage or "$merge" in stage for stage in pipeline):
            _refuse(self.database.client, self.database.name, f"aggregate with $out/$merge on {self.name}")
        return super().aggregate(pipeline, session, **kwargs)


for _name in COLLECTION_WRITES:
    setattr(ReadRoleCollection, _name, _refusing(_name))


class ReadRoleDatabase(BsonDatabase):
    def get_collection(self, name: str, **options: Any) -> Any:
        if name not in self._collection_accesses:
            self._ensure_valid_collection_name(name)
            self._collection_accesses[name] = ReadRoleCollection(
                self, name=name, _db_store=self._store, codec_options=self._codec_options
            )
        return super().get_collection(name, **options)

    def command(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        name = command if isinstance(command, str) else next(iter(command))
        if name.lower() not in READ_COMMANDS:
            _refuse(self.client, self.name, f"command {name}")
        return super().command(command, *args, **kwargs)


for _name in DATABASE_WRITES:
    setattr(
        ReadRoleDatabase,
        _name,
        lambda self, *args, _what=_name, **kwargs: _refuse(self.client, self.name, _what),
    )


class ReadRoleClient(BsonClient):
    """A client of ``server``'s data, logged in as a user holding only the ``read`` role."""

    def __init__(self, server: BsonClient, codec_options: CodecOptions[Any] = CODEC_OPTIONS) -> None:
        faithful_mock.mongomock.MongoClient.__init__(self, tz_aware=False, _store=server._store)
        self.bson_options = codec_options
        self.refused: list[str] = []

    def get_database(self, name: str | None = None, **options: Any) -> Any:
        if name is not None and name not in self._database_accesses:
            self._database_accesses[name] = ReadRoleDatabase(
                self, name, _store=self._store[name], codec_options=self._codec_options
            )
        return super().get_database(name, **options)

    def drop_database(self, name: Any) -> NoReturn:
        _refuse(self, str(name), "dropDatabase")


class Server:
    """One in-memory MongoDB: ``admin`` writes to it; the CLI reads it as a ``read`` user (``as_reader``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.admin = faithful_mock.client()
        self.readers: list[ReadRoleClient] = []
        self.as_reader = True
        monkeypatch.setattr(mongo, "MongoClient", self._client)

    def _client(self, url: str, **options: Any) -> Any:
        assert url == URL, url  # the URL reaches the driver as the user gave it
        if not self.as_reader:
            return _Writable(self.admin)
        reader = ReadRoleClient(self.admin)
        self.readers.append(reader)
        return reader

    @property
    def refused(self) -> list[str]:
        return [what for reader in self.readers for what in reader.refused]

    @property
    def database(self) -> Any:
        return self.admin["evenflow"]

    def store(self) -> MongoStore:
        return MongoStore(self.database["events"], write_concern=None)


class _Writable(BsonClient):
    """A second handle on the same server, for ``evenflow init`` run by a user allowed to write."""

    def __init__(self, server: BsonClient) -> None:
        faithful_mock.mongomock.MongoClient.__init__(self, tz_aware=False, _store=server._store)
        self.bson_options = server.bson_options


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Server:
    return Server(monkeypatch)


IMMEDIATE = RetryPolicy(max_attempts=2, initial_delay=timedelta(0), jitter=0)


def run_flows(server: Server, count: int, start: int = 0) -> list[str]:
    """``count`` runs of three flows (one of them failing), logged by an orchestrator allowed to write."""
    runs: list[str] = []
    with Orchestrator(make_registry(), executor="inline", store=server.store(), read_models=False) as orch:
        for i in range(start, start + count):
            flow: Node = parallel(call("square", i), call("inc", i))
            name = "shipping" if i % 3 else "billing"
            if i % 3 == 2:
                fail = call("raise_value_error", "no stock").si().options(retry=IMMEDIATE)
                flow, name = sequence(call("inc", i), fail), "billing"
            run = orch.submit(flow, name=name)
            with contextlib.suppress(RunFailed):
                run.result(timeout=30)
            runs.append(run.id)
    return runs


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--store", URL])
    out, err = capsys.readouterr()
    return code, out, err


def answer(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


RUNS_QUERIES: tuple[list[str], ...] = (
    [], ["--state", "succeeded"], ["--state", "failed"], ["--state", "running"], ["--flow", "billing"],
    ["--flow", "shipping", "--state", "succeeded"], ["--since", "1h"],
)  # fmt: skip


def every_page(capsys: pytest.CaptureFixture[str], *args: str, limit: int = 2) -> list[list[str]]:
    """The run ids of every page of ``evenflow runs ARGS --limit LIMIT``, following ``next``."""
    pages, after = [], None
    while True:
        page = answer(capsys, "runs", *args, "--limit", str(limit), *(["--after", after] if after else []))
        pages.append([row["run"] for row in page["runs"]])
        after = page["next"]
        if after is None:
            return pages


def runs_answers(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    answers = {" ".join(query): answer(capsys, "runs", *query) for query in RUNS_QUERIES}
    answers["pages"] = every_page(capsys)
    answers["failed pages"] = every_page(capsys, "--state", "failed", limit=1)
    return answers


# --- the reading commands never write -------------------------------------------------------


def test_every_reading_command_answers_a_read_only_user_and_writes_nothing(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = run_flows(server, 6)
    rebuild_runs(server.database["events"], server.database["runs"])  # a read model that is up to date
    listed = answer(capsys, "runs")["runs"]
    assert sorted(row["run"] for row in listed) == sorted(runs)
    assert answer(capsys, "status", runs[0])["state"] == "succeeded"
    assert answer(capsys, "status", runs[2])["state"] == "failed"
    trail = answer(capsys, "audit", runs[2])
    assert [entry["seq"] for entry in trail] == list(range(1, len(trail) + 1)) and len(trail) > 4
    assert answer(capsys, "audit", runs[2], "--run-only") == trail
    stats = {row["command"]: row for row in answer(capsys, "stats")}
    assert stats["inc"]["calls"] == 6 and stats["raise_value_error"]["failures"] == 4
    (group,) = answer(capsys, "failures", "--since", "1h")
    assert (group["error_type"], group["count"]) == ("builtins.ValueError", 4)
    for command in (["runs"], ["status", runs[1]], ["audit", runs[1]], ["stats"], ["failures"]):
        code, out, err = cli(capsys, *command)  # the tables too
        assert code == 0 and out and not err, (command, err)
    assert server.refused == []


@pytest.mark.parametrize("lag", ["behind", "missing"])
def test_runs_answers_as_a_caught_up_read_model_would_when_it_lags_the_log(
    server: Server, capsys: pytest.CaptureFixture[str], lag: str
) -> None:
    """Behind: new runs not in it, one stored document stale. Missing: no ``runs`` collection at all."""
    events, stored = server.database["events"], server.database["runs"]
    first = run_flows(server, 5)
    if lag == "behind":
        rebuild_runs(events, stored)
        doc = stored.find_one({"_id": first[0]})
        stored.replace_one({"_id": first[0]}, {**doc, "state": "running", "last_seq": doc["last_seq"] - 2})
    run_flows(server, 4, start=5)
    as_stored = run_history(stored, limit=50).rows
    lagging = runs_answers(capsys)
    assert server.refused == []

    catch_up(events, stored)  # what an orchestrator does when it starts
    assert run_history(stored, limit=50).rows != as_stored, "the read model did not lag: a useless test"
    caught_up = runs_answers(capsys)
    assert lagging == caught_up
    assert len(caught_up[""]["runs"]) == 9 and caught_up["--state running"]["runs"] == []
    assert sum(len(page) for page in caught_up["pages"]) == 9 and len(caught_up["failed pages"]) == 3
    assert server.refused == []


def test_a_read_only_user_is_told_init_needs_write_access(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "init")
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith("evenflow: error: ") and "readWrite" in err, err
    assert "s3cret" not in err


# --- evenflow init --------------------------------------------------------------------------

EXPECTED_INDEXES = [
    *(f"events.{spec.name}" for spec in mongo.INDEXES),
    "runs.submitted_id", "runs.state_submitted", "runs.flow_submitted", "runs.commands_submitted",
    "runs.error_types_submitted", "events.correlation_type", "events.run_seq",
]  # fmt: skip
EXPECTED_COLLECTIONS = ["events", "runs", "leases", "checkpoints"]


def init_lines(server: Server, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """``evenflow init`` run by a user allowed to write: what it printed, thing -> what it did."""
    server.as_reader = False
    code, out, err = cli(capsys, "init")
    server.as_reader = True
    assert code == 0 and not err, err
    lines = out.splitlines()
    done = dict(line.rsplit(": ", 1) for line in lines)
    assert len(done) == len(lines), f"a line twice:\n{out}"
    return done


def test_init_creates_every_collection_and_index_and_says_so_line_by_line(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    first = init_lines(server, capsys)
    wanted = {*(f"collection {name}" for name in EXPECTED_COLLECTIONS),
              *(f"index {name}" for name in EXPECTED_INDEXES)}  # fmt: skip
    assert wanted <= set(first), sorted(wanted - set(first))
    assert set(first.values()) == {"created"}, first
    assert set(server.database.list_collection_names()) >= set(EXPECTED_COLLECTIONS)
    for name in EXPECTED_INDEXES:
        collection, index = name.split(".")
        assert index in server.database[collection].index_information(), name

    again = init_lines(server, capsys)
    assert again == dict.fromkeys(first, "already present")


def test_init_keeps_what_is_there_and_creates_the_rest(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    run_flows(server, 1)  # the orchestrator's store made the events indexes when it opened
    done = init_lines(server, capsys)
    assert {done[f"index events.{spec.name}"] for spec in mongo.INDEXES} == {"already present"}
    assert done["collection events"] == "already present"
    assert done["index runs.state_submitted"] == "created" and done["collection runs"] == "created"
