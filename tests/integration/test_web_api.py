"""The HTTP API (issue 17): a real uvicorn server on 127.0.0.1 over the embedded store and mongomock.

Every endpoint answers what the CLI's ``--json`` prints for the same question,
every store answers alike, bad parameters are 400s naming the parameter, and a
token, when set, is needed for everything.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Client, Orchestrator, RetryPolicy, call, each, sequence
from orchestrator.cli.event_lines import line_bytes
from orchestrator.cli.exchange import imported
from orchestrator.core.errors import ConfigurationError, InvalidOption
from orchestrator.query_source import Source, source
from orchestrator.store import open_store
from orchestrator.store.exchange import Selection, exported
from orchestrator.web import make_app
from orchestrator.web.control import LogControl
from orchestrator.web.detail import SHOWN
from orchestrator.web.guard import check_bind
from orchestrator.web.pages import is_public
from orchestrator.web.server import HttpServer
from tests.acceptance.test_cli import EVENFLOW, evenflow
from tests.acceptance.test_remote_cli import live_workers
from tests.commands import make_registry
from tests.support.exchange_homes import Home, build
from tests.support.http_server import Served, served
from tests.support.polling import wait_until
from tests.support.zmq_cluster import free_endpoint, service, worker

pytest.importorskip("starlette", reason="the ui extra is not installed: pip install -e '.[ui]'")

TOKEN = "a-secret-of-thirty-two-characters"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return build(tmp_path_factory.mktemp("web") / "home")


@contextmanager
def kept(store: Any) -> Iterator[Source]:
    yield Source(store)


@pytest.fixture(scope="module")
def embedded(home: Home) -> Iterator[Served]:
    store = open_store(f"embedded://{home.path}", read_only=True)
    with served(make_app(lambda: kept(store))) as server:
        yield server
    store.close()


@pytest.fixture(scope="module")
def mongomock(home: Home) -> Iterator[Served]:
    source = open_store(f"embedded://{home.path}", read_only=True)
    lines = [line_bytes(event) for event in exported(source, Selection())]
    source.close()
    store = open_store("mongomock://")
    imported(store, lines)
    with served(make_app(lambda: kept(store))) as server:
        yield server
    store.close()


def questions(home: Home) -> dict[str, list[str]]:
    """API paths and the CLI call that asks the same."""
    run, chained = home.orders[-1], home.orders[0]
    return {
        "/api/v1/runs?limit=50": ["runs", "--limit", "50"],
        "/api/v1/runs?state=failed": ["runs", "--state", "failed"],
        "/api/v1/runs?command=receipt": ["runs", "--command", "receipt"],
        "/api/v1/runs?error_type=builtins.ValueError&until=2100-01-01": [
            "runs",
            "--error-type",
            "builtins.ValueError",
            "--until",
            "2100-01-01",
        ],
        "/api/v1/runs?flow=orders&since=2000-01-01T00:00": [
            "runs",
            "--flow",
            "orders",
            "--since",
            "2000-01-01T00:00",
        ],
        "/api/v1/runs?key=order-1": ["runs", "--key", "order-1"],
        f"/api/v1/runs/{run}": ["status", run],
        f"/api/v1/runs/{chained}/events": ["audit", chained],
        f"/api/v1/runs/{chained}/events?run_only=true": ["audit", chained, "--run-only"],
        "/api/v1/stats": ["stats"],
        "/api/v1/failures?since=1d": ["failures", "--since", "1d"],
        "/api/v1/throughput?bucket=1m": ["throughput", "--bucket", "1m"],
        "/api/v1/throughput?completions=true": ["throughput", "--completions"],
        "/api/v1/workers": ["activity"],
        "/api/v1/listeners": ["listeners"],
    }


def test_every_endpoint_answers_what_the_cli_prints(home: Home, embedded: Served) -> None:
    for path, args in questions(home).items():
        answer = embedded.get(path)
        assert answer.status == 200 and answer.content_type == "application/json", (path, answer.body)
        printed = evenflow(*args, "--json", home=home.path)
        assert printed.returncode == 0, printed.stderr
        assert answer.json() == json.loads(printed.stdout), path


def test_mongomock_answers_as_the_embedded_store(home: Home, embedded: Served, mongomock: Served) -> None:
    for path in questions(home):
        if path == "/api/v1/listeners":  # an export carries runs, not the listeners' places
            assert mongomock.get(path).json() == [] and embedded.get(path).json()
            continue
        mine, theirs = embedded.get(path), mongomock.get(path)
        assert (mine.status, mine.json()) == (theirs.status, theirs.json()), path
    assert len(embedded.get("/api/v1/runs?limit=50").json()["runs"]) == home.runs


def test_pages_follow_the_cursor_to_the_end(home: Home, embedded: Served) -> None:
    seen: list[str] = []
    path = "/api/v1/runs?limit=2"
    for _ in range(home.runs):  # bounded: each page holds at least one run
        page = embedded.get(path).json()
        seen += [row["run"] for row in page["runs"]]
        if page["next"] is None:
            break
        path = f"/api/v1/runs?limit=2&after={page['next']}"
    assert len(seen) == len(set(seen)) == home.runs


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v1/runs?state=sleeping", "state"),
        ("/api/v1/runs?limit=0", "limit"),
        ("/api/v1/runs?limit=ten", "limit"),
        ("/api/v1/runs?after=garbage", "after"),
        ("/api/v1/runs?since=yesterday", "since"),
        ("/api/v1/stats?until=soon", "until"),
        ("/api/v1/throughput?bucket=0s", "bucket"),
        ("/api/v1/throughput?completions=maybe", "completions"),
        ("/api/v1/runs/x/events?run_only=perhaps", "run_only"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(embedded: Served, path: str, parameter: str) -> None:
    answer = embedded.get(path)
    assert answer.status == 400
    assert answer.json()["parameter"] == parameter and parameter in answer.json()["error"]


@pytest.mark.parametrize("path", ["/api/v1/runs/no-such-run", "/api/v1/runs/no-such-run/events"])
def test_an_unknown_run_is_a_404(embedded: Served, path: str) -> None:
    answer = embedded.get(path)
    assert answer.status == 404 and "no run 'no-such-run'" in answer.json()["error"]


def test_with_a_token_every_request_needs_it(home: Home) -> None:
    store = open_store(f"embedded://{home.path}", read_only=True)
    try:
        with served(make_app(lambda: kept(store), token=TOKEN)) as server:
            for path in ("/api/v1/runs", "/api/v1/openapi.json", "/metrics"):
                for token in (None, "wrong", TOKEN[:-1]):
                    refused = server.get(path, token)
                    assert refused.status == 401 and "Bearer" in refused.json()["error"], (path, token)
                assert server.get(path, TOKEN).status == 200
    finally:
        store.close()


def test_only_loopback_goes_without_a_token() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(host, None)
    for host in ("0.0.0.0", "192.168.1.4", "::", "example.org"):
        with pytest.raises(InvalidOption, match="--token-file"):
            check_bind(host, None)
        check_bind(host, TOKEN)


def test_metrics_count_what_stats_and_activity_count(embedded: Served) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    answer = embedded.get("/metrics")
    assert answer.status == 200 and answer.content_type.startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.body.decode())
        for s in family.samples
    }
    for row in embedded.get("/api/v1/stats").json():
        key = ("evenflow_attempts_total", (("command", row["command"]), ("outcome", "failed")))
        assert samples[key] == row["failures"]
        assert samples[("evenflow_retries_total", (("command", row["command"]),))] == row["retries"]
    for row in embedded.get("/api/v1/stats").json():
        labels = (("command", row["command"]),)
        count = samples[("evenflow_attempt_duration_seconds_count", labels)]
        cumulative = [
            value
            for (name, found), value in samples.items()
            if name == "evenflow_attempt_duration_seconds_bucket" and dict(found)["command"] == row["command"]
        ]
        assert cumulative == sorted(cumulative) and cumulative[-1] == count  # +Inf last: every one
        assert count == row["successes"]  # each success is timed
        total = samples[("evenflow_attempt_duration_seconds_sum", labels)]
        assert row["mean_duration_s"] is None or abs(total / count - row["mean_duration_s"]) < 1e-5
    for row in embedded.get("/api/v1/workers").json():
        labels = (("worker", row["worker"]),)
        assert samples[("evenflow_worker_attempts_total", labels)] == row["calls"]


def test_the_openapi_document_describes_every_answer(home: Home, embedded: Served) -> None:
    document = embedded.get("/api/v1/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert document["openapi"].startswith("3.")
    for path in [*questions(home), f"/api/v1/runs/{home.orders[0]}/graph"]:
        template = path.split("?")[0]
        template = template.replace(home.orders[-1], "{run}").replace(home.orders[0], "{run}")
        assert template in document["paths"], template
        reference = document["paths"][template]["get"]["responses"]["200"]["content"]["application/json"]
        answer = embedded.get(path).json()
        _conforms(answer, reference["schema"], schemas)


TYPES = {"null": type(None), "boolean": bool, "string": str, "number": (int, float), "integer": int,
         "array": list, "object": dict}  # fmt: skip


def _conforms(value: Any, schema: dict[str, Any], schemas: dict[str, Any]) -> None:
    """The required fields and the types this API uses, checked recursively."""
    if "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        assert any(_fits(value, option, schemas) for option in schema["anyOf"]), (value, schema)
        return
    kinds = schema.get("type")
    if kinds is not None:
        allowed = tuple(TYPES[kind] for kind in (kinds if isinstance(kinds, list) else [kinds]))
        assert isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed), (
            value,
            schema,
        )
    if isinstance(value, dict):
        assert set(schema.get("required", ())) <= set(value), (sorted(value), schema.get("required"))
        for name, item in value.items():
            _conforms(
                item, schema.get("properties", {}).get(name, schema.get("additionalProperties", {})), schemas
            )
    elif isinstance(value, list):
        for item in value:
            _conforms(item, schema.get("items", {}), schemas)


def _fits(value: Any, schema: dict[str, Any], schemas: dict[str, Any]) -> bool:
    try:
        _conforms(value, schema, schemas)
    except AssertionError:
        return False
    return True


def test_evenflow_ui_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    done = evenflow("ui", "--bind", "0.0.0.0:0", home=tmp_path / "home")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "--token-file" in line and "127.0.0.1" in line


def test_evenflow_ui_serves_the_home_it_is_given(home: Home, tmp_path: Path) -> None:
    printed = tmp_path / "ui.out"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")])),
    }
    with printed.open("w") as out:
        ui = subprocess.Popen(
            [*EVENFLOW, "ui", "--bind", "127.0.0.1:0", "--home", str(home.path)], stdout=out, env=env
        )
    try:
        line = wait_until(lambda: re.search(r"http://127\.0\.0\.1:\d+", printed.read_text()), what="serving")
        server = Served(line.group(0))
        assert len(server.get("/api/v1/runs?limit=50").json()["runs"]) == home.runs
    finally:
        ui.terminate()
        ui.wait(60)


def test_a_runs_graph_shows_its_tree_its_attempts_and_a_big_map_in_counts(tmp_path: Path) -> None:
    items = SHOWN + 25
    retry = RetryPolicy(max_attempts=2, initial_delay=timedelta(0), jitter=0)
    flaky = call("flaky", failures=1).options(retry=retry)
    flow = sequence(call("noop", list(range(items))), each("square"), flaky)
    with Orchestrator(make_registry(), executor="inline", store="mongomock://") as orch:
        run = orch.submit(flow)
        run.result(60)
        with served(make_app(lambda: kept(orch.store))) as server:
            graph = server.get(f"/api/v1/runs/{run.id}/graph").json()
            status = server.get(f"/api/v1/runs/{run.id}").json()
    nodes = {node["path"]: node for node in graph["nodes"]}
    assert graph["state"] == "succeeded" and nodes["r"]["kind"] == "sequence"
    assert graph["last_seq"] == status["last_seq"] > 0  # how far into the log each looked: as far
    assert nodes["r"]["children"] == ["r.0", "r.1", "r.2"]
    mapped = nodes["r.1"]
    assert mapped["kind"] == "each" and len(mapped["children"]) == SHOWN
    assert mapped["hidden"] == {"succeeded": items - SHOWN}
    assert all(path in nodes for path in mapped["children"]) and f"r.1.{SHOWN}" not in nodes
    tries = [a for a in graph["attempts"] if a["node"] == "r.2"]
    assert [(a["attempt"], a["outcome"]) for a in tries] == [(1, "failed"), (2, "succeeded")]
    assert tries[0]["error_type"] == "builtins.ValueError" and tries[0]["reason"] == "raised"
    assert tries[1]["worker"] and tries[1]["started_at"] <= tries[1]["ended_at"]
    assert len(graph["attempts"]) == 1 + items + 2


@pytest.mark.parametrize(
    "path",
    ["/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/%2e%2e%2f__init__.py"],
)
def test_static_paths_cannot_leave_their_folder(embedded: Served, path: str) -> None:
    answer = embedded.get(path)
    assert answer.status == 404 and b"import" not in answer.body


def test_pages_are_served_without_data_and_without_the_token(home: Home) -> None:
    store = open_store(f"embedded://{home.path}", read_only=True)
    try:
        with served(make_app(lambda: kept(store), token=TOKEN)) as server:
            for path in ("/runs", f"/runs/{home.orders[0]}", "/stats", "/static/run.js"):
                page = server.get(path)
                assert page.status == 200 and home.orders[0].encode() not in page.body, path
            assert server.get(f"/api/v1/runs/{home.orders[0]}/stream").status == 401
    finally:
        store.close()


def test_each_server_answers_from_its_own_store_only(home: Home, embedded: Served) -> None:
    with Orchestrator(make_registry(), executor="inline", store="mongomock://") as orch:
        other = orch.submit(call("square", 2))
        other.result(60)
        with served(make_app(lambda: kept(orch.store))) as server:
            assert [row["run"] for row in server.get("/api/v1/runs").json()["runs"]] == [other.id]
            assert server.get(f"/api/v1/runs/{home.orders[0]}").status == 404
    assert embedded.get(f"/api/v1/runs/{other.id}").status == 404


def test_control_needs_a_token_then_cancels_and_retries_through_the_log(tmp_path: Path) -> None:
    gate, marker = tmp_path / "gate", tmp_path / "marker"
    with Orchestrator(make_registry(), executor="threads://2", store="mongomock://") as orch:
        control = LogControl(lambda: nullcontext(orch.store))
        app = make_app(lambda: kept(orch.store), token=TOKEN, control=control)
        with served(app) as server:
            assert server.get("/api/v1", TOKEN).json() == {"control": True}
            gated = orch.submit(call("wait_for_file", str(gate), "opened"))
            wait_until(lambda: server.get(f"/api/v1/runs/{gated.id}", TOKEN).json()["attempts"] == 1)
            path = f"/api/v1/runs/{gated.id}/cancel"
            assert server.post(path, {"reason": "no longer wanted"}).status == 401
            assert server.post(path, {"reason": "no longer wanted"}, TOKEN).json()["cancelled"] is True
            assert server.post(path, None, TOKEN).json()["cancelled"] is False
            assert server.post(path, {"reason": 7}, TOKEN).status == 400
            gate.touch()
            wait_until(lambda: server.get(f"/api/v1/runs/{gated.id}", TOKEN).json()["state"] == "cancelled")

            failed = orch.submit(call("wait_for_file", str(marker), "found", 0.05))
            with pytest.raises(Exception, match="did not appear"):
                failed.result(60)
            assert server.post(f"/api/v1/runs/{failed.id}/cancel", None, TOKEN).status == 409
            assert server.post("/api/v1/runs/no-such-run/retry", None, TOKEN).status == 404
            marker.touch()
            retried = server.post(f"/api/v1/runs/{failed.id}/retry", None, TOKEN).json()
            assert retried["retry_of"] == failed.id
            status = f"/api/v1/runs/{retried['run']}"
            wait_until(lambda: server.get(status, TOKEN).json()["state"] == "succeeded", what="the retry ran")
            assert server.get(status, TOKEN).json()["result"] == "found"


def test_control_is_refused_without_a_token_and_on_a_home_another_process_owns(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="token"):
        make_app(lambda: kept(None), control=LogControl(lambda: nullcontext(None)))
    home = tmp_path / "home"
    with Orchestrator(make_registry(), executor="inline", home=home) as orch:
        run = orch.submit(call("square", 3))
        run.result(60)
        app = make_app(
            lambda: source(None, str(home)),
            token=TOKEN,
            control=LogControl(lambda: closing(open_store(f"embedded://{home}"))),
        )
        with served(app) as server:
            refused = server.post(f"/api/v1/runs/{run.id}/retry", None, TOKEN)
    assert refused.status == 409 and "--connect" in refused.json()["error"]


def test_resume_drives_a_parked_run_through_the_engine_and_is_refused_by_the_log_alone(
    tmp_path: Path,
) -> None:
    from orchestrator.core.events import Event, utcnow
    from orchestrator.core.flows import encode_flow
    from orchestrator.store import MemoryStore
    from orchestrator.web.control import EngineControl

    store = MemoryStore()
    run = "a-run-its-orchestrator-left"
    data = {"flow": encode_flow(call("deployed_later", 4)), "name": None}
    store.append([Event(run, 1, "run.submitted", utcnow(), data=data, by="gone", correlation=run)])
    commands = make_registry()
    orch = Orchestrator(commands, executor="inline", store=store)
    with orch, served(make_app(lambda: kept(store), token=TOKEN, control=EngineControl(orch))) as server:
        assert server.post(f"/api/v1/runs/{run}/resume").status == 401
        parked = server.post(f"/api/v1/runs/{run}/resume", None, TOKEN)
        assert parked.status == 409 and "'deployed_later'" in parked.json()["error"]
        commands.register("deployed_later", lambda x: x * 10)
        resumed = server.post(f"/api/v1/runs/{run}/resume", None, TOKEN)
        assert (resumed.status, resumed.json()) == (200, {"run": run, "resumed": True})
        assert orch.result(run, timeout=60) == 40
        ended = server.post(f"/api/v1/runs/{run}/resume", None, TOKEN)
        assert ended.status == 409 and "already succeeded" in ended.json()["error"]
        assert server.post("/api/v1/runs/nothing-here/resume", None, TOKEN).status == 404
    log_only = make_app(lambda: kept(store), token=TOKEN, control=LogControl(lambda: nullcontext(store)))
    with served(log_only) as server:
        refused = server.post(f"/api/v1/runs/{run}/resume", None, TOKEN)
    assert refused.status == 409 and "evenflow resume --registry" in refused.json()["error"]


def test_serve_http_shows_the_services_runs_and_cancels_and_retries_through_it(tmp_path: Path) -> None:
    endpoint, gate, secret = free_endpoint(), tmp_path / "gate", tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    extra = ("--debug", "--http", "127.0.0.1:0", "--token-file", str(secret))
    with (
        service(endpoint, tmp_path / "home", tmp_path, extra=extra) as serving,
        worker(endpoint, tmp_path),
        Client(endpoint) as client,
    ):
        live_workers(serving, 1)
        found = wait_until(
            lambda: re.search(r"pages and API on (http://\S+)/runs", serving.output()), what="url"
        )
        server = Served(found.group(1))
        gated = client.submit(call("wait_for_file", str(gate), "opened"))
        wait_until(lambda: server.get(f"/api/v1/runs/{gated}", TOKEN).json()["attempts"] == 1, what="started")
        assert server.get("/api/v1/runs").status == 401
        assert [row["run"] for row in server.get("/api/v1/runs", TOKEN).json()["runs"]] == [gated]
        assert server.post(f"/api/v1/runs/{gated}/cancel", None, TOKEN).json() == {
            "run": gated,
            "cancelled": True,
        }
        state = server.get(f"/api/v1/runs/{gated}", TOKEN).json()["state"]
        assert state == "cancelled"  # at once: the service's own orchestrator logged it
        metrics = server.get("/metrics", TOKEN).body.decode()
        assert "evenflow_workers_connected 1.0" in metrics and "evenflow_worker_slots{worker=" in metrics
        assert "evenflow_attempts_queued 0.0" in metrics  # the one run was cancelled: nothing waits
        appended = re.search(r"^evenflow_append_seconds_count (\S+)$", metrics, re.MULTILINE)
        assert appended is not None and float(appended.group(1)) >= 2  # the submission, the cancel
        gate.touch()
        again = server.post(f"/api/v1/runs/{gated}/retry", None, TOKEN).json()["run"]
        assert client.result(again, 60) == "opened"


def test_runs_filter_by_command_error_type_and_until(home: Home, embedded: Served) -> None:
    receipts = embedded.get("/api/v1/runs?command=receipt&limit=50").json()["runs"]
    assert len(receipts) == len(home.orders) - 1 and all(row["commands"] == ["receipt"] for row in receipts)
    failing = embedded.get("/api/v1/runs?error_type=builtins.ValueError").json()["runs"]
    assert {row["run"] for row in failing} == set(home.orders[-2:])  # the retried one and the failed one
    assert embedded.get("/api/v1/runs?until=2000-01-01").json()["runs"] == []
    assert embedded.get("/api/v1/runs?until=later").json()["parameter"] == "until"


def test_a_key_names_one_run_and_the_other_filters_still_apply(home: Home, embedded: Served) -> None:
    def runs(query: str) -> list[str]:
        return [row["run"] for row in embedded.get(f"/api/v1/runs?{query}").json()["runs"]]

    assert runs("key=order-1") == [home.orders[1]]
    assert runs(f"key=order-{len(home.orders) - 1}&state=failed") == [home.orders[-1]]
    assert runs("key=order-1&state=failed") == []
    assert runs("key=order-1&command=receipt") == []
    assert runs("key=order-1&flow=orders&until=2100-01-01&command=charge") == [home.orders[1]]
    assert runs("key=no-such-order") == []
    too_long = embedded.get("/api/v1/runs?key=" + "k" * 2_000)
    assert (too_long.status, too_long.json()["parameter"]) == (400, "key")


@pytest.mark.parametrize("kind", ["embedded", "mongomock"])
def test_a_listeners_lag_is_what_was_logged_after_its_place(kind: str, tmp_path: Path) -> None:
    store = open_store(f"embedded://{tmp_path / 'home'}" if kind == "embedded" else "mongomock://")
    try:
        with Orchestrator(make_registry(), executor="inline", store=store) as orch:
            assert orch.run(call("square", 2)) == 4
            store.save_checkpoint("caught-up", store.feed_head(["*"]))
            later = orch.submit(call("square", 3))
            later.result(60)
            with served(make_app(lambda: kept(store))) as server:
                found = {row["name"]: row for row in server.get("/api/v1/listeners").json()}
                metrics = server.get("/metrics").body.decode()
        appended = store.read(later.id)
        assert found["caught-up"]["behind"] == len(appended) and not found["caught-up"]["at_least"]
        assert found["caught-up"]["oldest_unread_at"] == appended[0].at.isoformat()
        assert f'evenflow_listener_behind_events{{listener="caught-up"}} {float(len(appended))}' in metrics
    finally:
        store.close()


@pytest.mark.parametrize(
    ("path", "public"),
    [
        ("/", True), ("/runs", True), ("/runs/abc123", True), ("/stats", True), ("/workers", True),
        ("/static/run.js", True), ("/runsX", False), ("/statsfoo", False), ("/runs/abc/events", False),
        ("/runs/..", False), ("/static/../app.py", False), ("/static/", False), ("/metrics", False),
        ("/api/v1/runs", False), ("//api/v1/runs", False), ("/runs/", False),
    ],
)  # fmt: skip
def test_only_the_pages_and_their_files_go_without_the_token(path: str, public: bool) -> None:
    assert is_public(path) is public


def test_without_a_token_only_loopback_host_names_are_answered(embedded: Served) -> None:
    request = urllib.request.Request(embedded.base + "/api/v1/runs", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 400  # a page elsewhere that rebinds its name to 127.0.0.1 gets nothing
    assert embedded.get("/api/v1/runs").status == 200


def test_a_stream_of_an_unknown_run_is_a_404(embedded: Served) -> None:
    answer = embedded.get("/api/v1/runs/no-such-run/stream")
    assert answer.status == 404 and "no run" in answer.json()["error"]


def test_a_server_stops_while_a_page_listens_to_a_running_run(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with Orchestrator(make_registry(), executor="threads://2", store="mongomock://") as orch:
        run = orch.submit(call("wait_for_file", str(gate), "opened"))
        server = HttpServer(make_app(lambda: kept(orch.store)), "127.0.0.1", 0).start()
        stream = urllib.request.urlopen(f"{server.url}/api/v1/runs/{run.id}/stream", timeout=60)
        assert stream.readline().startswith(b"event: changed")  # the page is listening
        server.stop(60)
        assert not server.serving  # the open stream did not hold it
        stream.close()
        gate.touch()
        assert run.result(60) == "opened"


def test_runs_by_state_on_every_store_is_what_the_runs_list_says(
    home: Home, embedded: Served, mongomock: Served
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    listed: dict[str, int] = {}
    for row in embedded.get("/api/v1/runs?limit=50").json()["runs"]:
        listed[row["state"]] = listed.get(row["state"], 0) + 1
    assert sum(listed.values()) == home.runs and listed.get("failed") == 1
    for server in (embedded, mongomock):
        families = text_string_to_metric_families(server.get("/metrics").body.decode())
        runs = next(family for family in families if family.name == "evenflow_runs")
        assert {s.labels["state"]: s.value for s in runs.samples} == listed


def test_embedded_run_states_count_the_runs_past_the_tables_watermark_too(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with Orchestrator(make_registry(), executor="threads://2", home=tmp_path / "home") as orch:
        assert orch.run(call("square", 2)) == 4
        with pytest.raises(Exception, match="boom"):
            orch.run(call("raise_value_error"))
        held = orch.submit(call("wait_for_file", str(gate), "opened"))
        wait_until(lambda: orch.store.run_states() == {"failed": 1, "running": 1, "succeeded": 1})
        gate.touch()
        held.result(60)
        assert orch.store.run_states() == {"failed": 1, "succeeded": 2}  # a run moved on in the tail
