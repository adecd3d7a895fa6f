"""``evenflow doctor`` against a scripted MongoDB on the wire: what a real server would tell a real client.

MockupDB (by the PyMongo authors) answers a real ``MongoClient``; ``Script``
says what the server reports: its version, replica set, clock, the user's
privileges, the oplog. Every other command is answered "no such command", so
an unexpected call fails fast instead of hanging.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import Timestamp
from mockupdb import MockupDB, Request

from orchestrator.cli.doctor import diagnose

UNAUTHORIZED = 13
COMMAND_NOT_FOUND = 59
WRITES = {"insert", "update", "delete", "createindexes", "create", "drop", "findandmodify"}
READ_WRITE = [{"resource": {"db": "evenflow", "collection": ""}, "actions": ["find", "insert", "update"]}]
READ_ONLY = [{"resource": {"db": "evenflow", "collection": ""}, "actions": ["find", "listIndexes"]}]


@dataclass
class Script:
    """What the scripted server says; None for a fact it refuses to tell (Unauthorized)."""

    version: str = "7.0.2"
    set_name: str | None = "rs0"
    members: int = 3
    clock_ahead_s: float = 0.0
    user: str | None = "svc"
    privileges: list[dict[str, Any]] = field(default_factory=lambda: list(READ_WRITE))
    oplog_hours: float | None = 48.0
    storage: dict[str, Any] | None = field(default_factory=lambda: {"name": "wiredTiger", "persistent": True})


class ScriptedServer:
    """A replica set's primary (wire version 21, sessions) on a free port, answering as ``script`` says."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.commands: list[str] = []
        self.mock = MockupDB(request_timeout=5)
        self.port = self.mock.run()
        self.me = f"localhost:{self.port}"
        self.mock.autoresponds(self._answer)

    @property
    def url(self) -> str:
        return f"mongodb://{self.me}/evenflow?serverSelectionTimeoutMS=5000"

    def _answer(self, request: Request) -> bool:
        name = (request.command_name or "").lower()
        self.commands.append(name)
        answer = self._reply(name, request.doc)
        if answer is None:
            return bool(request.command_err(UNAUTHORIZED, f"not authorized to run {name}"))
        if "errmsg" in answer:
            return bool(request.command_err(COMMAND_NOT_FOUND, answer["errmsg"]))
        return bool(request.reply({**answer, "ok": 1}))

    def _reply(self, name: str, doc: dict[str, Any]) -> dict[str, Any] | None:
        s = self.script
        if name in ("ismaster", "hello"):
            return self._hello()
        if name in ("ping", "endsessions"):
            return {}
        if name == "buildinfo":
            return {"version": s.version}
        if name == "serverstatus":
            return None if s.storage is None else {"storageEngine": s.storage}
        if name == "connectionstatus":
            return {"authInfo": self._auth()}
        if name == "count":
            return {"n": 7}
        if name == "listindexes":
            return _cursor(f"evenflow.{doc['listIndexes']}", [{"v": 2, "key": {"_id": 1}, "name": "_id_"}])
        if name == "find" and doc.get("find") == "oplog.rs":
            return self._oplog(doc)
        return {"errmsg": f"no such command: {name}"}

    def _hello(self) -> dict[str, Any]:
        hello = {"ismaster": True, "isWritablePrimary": True, "minWireVersion": 0, "maxWireVersion": 21,
                 "logicalSessionTimeoutMinutes": 30, "me": self.me,
                 "localTime": datetime.now(UTC) + timedelta(seconds=self.script.clock_ahead_s)}  # fmt: skip
        if self.script.set_name:
            others = [f"localhost:{1 + i}" for i in range(self.script.members - 1)]
            hello.update(setName=self.script.set_name, hosts=[self.me, *others], primary=self.me)
        return hello

    def _auth(self) -> dict[str, Any]:
        if self.script.user is None:
            return {"authenticatedUsers": [], "authenticatedUserRoles": [], "authenticatedUserPrivileges": []}
        return {
            "authenticatedUsers": [{"user": self.script.user, "db": "admin"}],
            "authenticatedUserRoles": [{"role": "custom", "db": "admin"}],
            "authenticatedUserPrivileges": self.script.privileges,
        }

    def _oplog(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        if self.script.oplog_hours is None:
            return None
        start = 1_760_000_000
        ts = start if doc["sort"]["$natural"] == 1 else start + int(self.script.oplog_hours * 3600)
        return _cursor("local.oplog.rs", [{"ts": Timestamp(ts, 1)}])

    def stop(self) -> None:
        self.mock.stop()


def _cursor(namespace: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"cursor": {"id": 0, "ns": namespace, "firstBatch": docs}}


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    """One server for the module (stopping one takes a second); each test gives it a new script."""
    scripted = ScriptedServer(Script())
    yield scripted
    scripted.stop()


@pytest.fixture
def serve(server: ScriptedServer) -> Any:
    def start(**script: Any) -> ScriptedServer:
        server.script = Script(**script)
        server.commands.clear()
        return server

    return start


def rows(server: ScriptedServer) -> dict[str, tuple[str, str]]:
    _, checks = diagnose(server.url, None)
    return {check.check: (check.status, check.value) for check in checks}


def test_a_healthy_replica_set_passes_every_server_check(serve: Any) -> None:
    server = serve()
    found = rows(server)
    assert found["server version"] == ("ok", "7.0.2")
    assert found["topology"] == ("ok", f"replica set rs0, 3 member(s), primary {server.me}")
    assert found["write concern"] == ("ok", "j=true, w=majority, wtimeout=10000")
    assert found["journaling"][0] == "ok" and "wiredTiger" in found["journaling"][1]
    assert found["access"] == ("ok", "svc@admin (custom@admin): read and write")
    assert found["clock skew"][0] == "ok"
    assert found["oplog window"][0] == "ok" and found["oplog window"][1].startswith("48.0 h")
    assert found["events"] == found["runs"] == ("ok", "7")
    assert found["journal integrity"][0] == found["free disk"][0] == "n/a"
    assert not WRITES & set(server.commands), "the doctor wrote to the server"


@pytest.mark.parametrize(
    ("script", "check", "status", "words"),
    [
        ({"privileges": READ_ONLY}, "access", "warn", "read only"),
        ({"privileges": []}, "access", "fail", "cannot read the log"),
        ({"user": None}, "access", "warn", "access control is off"),
        ({"clock_ahead_s": 3.0}, "clock skew", "warn", "s (round trip"),
        ({"clock_ahead_s": -120.0}, "clock skew", "fail", "s (round trip"),
        ({"oplog_hours": 2.0}, "oplog window", "warn", "2.0 h"),
        ({"oplog_hours": None}, "oplog window", "warn", "not authorized"),
        ({"set_name": None}, "topology", "warn", "standalone"),
        ({"members": 1}, "topology", "warn", "1 member(s)"),
        ({"version": "5.0.14"}, "server version", "fail", "5.0.14"),
        ({"storage": None}, "journaling", "warn", "not authorized"),
        ({"storage": {"name": "inMemory", "persistent": False}}, "journaling", "fail", "inMemory"),
    ],
)
def test_what_the_server_says_is_judged(serve: Any, script: dict[str, Any], check: str, status: str,
                                         words: str) -> None:  # fmt: skip
    found = rows(serve(**script))
    assert found[check][0] == status, found[check]
    assert words in found[check][1], found[check]


@pytest.mark.parametrize("ahead_s", [-120.0, 3.0, 0.0])
def test_the_skew_is_the_servers_clock_minus_ours(serve: Any, ahead_s: float) -> None:
    _, value = rows(serve(clock_ahead_s=ahead_s))["clock skew"]
    assert float(value.split()[0]) == pytest.approx(ahead_s, abs=0.5)


def test_a_standalone_has_no_oplog_to_judge(serve: Any) -> None:
    found = rows(serve(set_name=None, oplog_hours=None))
    assert found["oplog window"][0] == "n/a"


def test_the_cli_exits_1_on_a_blocker_and_names_it(serve: Any, tmp_path: Path) -> None:
    server = serve(clock_ahead_s=90.0)
    done = _evenflow("doctor", "--store", server.url, "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    failed = [row for row in report["checks"] if row["status"] == "fail"]
    assert [row["check"] for row in failed] == ["clock skew"] and report["blockers"] == 1
    assert "NTP" in failed[0]["fix"]
    assert not WRITES & set(server.commands), "the doctor wrote to the server"


def test_the_cli_exits_0_when_nothing_fails_and_prints_a_table(serve: Any, tmp_path: Path) -> None:
    done = _evenflow("doctor", "--store", serve(privileges=READ_ONLY).url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["check", "status", "value", "fix"]
    assert any(line.startswith("access") and " warn " in line for line in lines)


def _evenflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "EVENFLOW_HOME": str(cwd / "home")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120, check=False)  # fmt: skip
