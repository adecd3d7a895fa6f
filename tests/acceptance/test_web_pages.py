"""The pages (issue 17) in a real headless Chromium, against a real server on 127.0.0.1.

Runs are made by a real orchestrator on an embedded home while the server reads
it: the runs list, a run's graph and timeline, a running run's page changing as
it finishes without a reload, an error holding markup shown as text, and the
stats page. Each page is saved as a screenshot (``EVENFLOW_SCREENSHOTS`` names a
folder to keep them in).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Orchestrator, call, parallel, sequence
from tests.commands import make_registry
from tests.support.http_server import Served, served
from tests.support.polling import wait_until

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
pytest.importorskip("starlette", reason="the ui extra is not installed: pip install -e '.[ui]'")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)),
        reason="no Chromium here: apt-get install -y chromium chromium-driver (.ci/run does)",
    ),
]
MARKUP = "<script>window.injected = true</script><b>bold</b>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Orchestrator, Path]]:
    folder = tmp_path_factory.mktemp("pages")
    home, gate = folder / "home", folder / "gate"
    with Orchestrator(make_registry(), executor="threads://4", home=home) as orch:
        with _app(home) as app, served(app) as server:
            yield server, orch, gate
        gate.touch()


@contextmanager
def _app(home: Path) -> Iterator[Any]:
    """As ``evenflow ui`` serves a home: one read-only store, shared by every request."""
    from orchestrator.query_source import Source
    from orchestrator.store import open_store
    from orchestrator.web import make_app

    store = open_store(f"embedded://{home}", read_only=True)
    try:
        yield make_app(lambda: nullcontext(Source(store)))
    finally:
        store.close()


def shot(browser: Any, name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.png"
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 0
    keep = os.environ.get("EVENFLOW_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def js(browser: Any, script: str) -> Any:
    return browser.execute_script(script)


def test_a_running_run_changes_on_its_page_as_it_finishes(browser: Any, site: Any, tmp_path: Path) -> None:
    server, orch, gate = site
    flow = sequence(parallel([call("square", 3), call("wait_for_file", str(gate), "opened")]), call("noop"))
    run = orch.submit(flow, name="gated")
    browser.get(f"{server.base}/runs/{run.id}")
    wait_until(lambda: js(browser, "return document.body.dataset.state") == "running", what="drawn running")
    state = "return document.querySelector('#flow-graph g.node[data-path=\"r.0.1\"]')?.dataset.state"
    wait_until(lambda: js(browser, state) == "running", what="the gated call drawn running")
    assert js(browser, "return document.querySelectorAll('#flow-graph g.node').length") == 5
    js(browser, "window.sameDocument = true")
    gate.touch()
    assert run.result(60) == [9, "opened"]  # noop passes on what the group gave it
    wait_until(lambda: js(browser, "return document.body.dataset.state") == "succeeded", what="drawn ended")
    assert js(browser, "return window.sameDocument") is True  # no reload: the stream redrew it
    assert js(browser, state) == "succeeded"
    outcomes = js(
        browser,
        "return [...document.querySelectorAll('#timeline-chart g.attempt')].map(g => g.dataset.outcome)",
    )
    assert outcomes == ["succeeded"] * 3
    shot(browser, "run", tmp_path)


def test_the_runs_list_shows_new_runs_without_a_reload(browser: Any, site: Any, tmp_path: Path) -> None:
    server, orch, _ = site
    browser.get(f"{server.base}/runs")
    rows = "return [...document.querySelectorAll('#runs-table tbody tr')].map(r => r.dataset.run)"
    before = wait_until(lambda: js(browser, rows) or None, what="the runs listed")
    js(browser, "window.sameDocument = true")
    fresh = orch.submit(call("square", 7), name="fresh")
    assert fresh.result(60) == 49
    wait_until(lambda: fresh.id in js(browser, rows), what="the new run listed")
    assert set(before) < set(js(browser, rows)) and js(browser, "return window.sameDocument") is True
    shot(browser, "runs", tmp_path)
    browser.get(f"{server.base}/runs?state=failed")
    assert js(browser, "return document.forms.filters.elements.state.value") == "failed"


def test_an_error_with_markup_shows_as_text(browser: Any, site: Any, tmp_path: Path) -> None:
    server, orch, _ = site
    run = orch.submit(call("raise_value_error", MARKUP), name="bad")
    with pytest.raises(Exception, match="bold"):
        run.result(60)
    browser.get(f"{server.base}/runs/{run.id}")
    wait_until(lambda: js(browser, "return document.body.dataset.state") == "failed", what="drawn failed")
    panel = js(browser, "return document.getElementById('error-panel').textContent")
    assert MARKUP in panel
    assert js(browser, "return document.querySelectorAll('#error-panel script, #error-panel b').length") == 0
    assert js(browser, "return window.injected === undefined") is True
    shot(browser, "run-failed", tmp_path)


def test_the_stats_page_counts_what_the_api_counts(browser: Any, site: Any, tmp_path: Path) -> None:
    server, _, _ = site
    browser.get(f"{server.base}/stats")
    cells = (
        "return [...document.querySelectorAll('#stats-table tbody tr')]"
        ".map(r => [...r.cells].map(c => c.textContent))"
    )
    shown = wait_until(lambda: js(browser, cells) or None, what="the stats table")
    expected = {row["command"]: str(row["calls"]) for row in server.get("/api/v1/stats").json()}
    assert {row[0]: row[1] for row in shown} == expected
    assert js(browser, "return document.querySelectorAll('#throughput-chart rect').length") > 0
    shot(browser, "stats", tmp_path)


def test_retry_on_a_failed_runs_page_with_the_token_runs_it_again(browser: Any, tmp_path: Path) -> None:
    from orchestrator.query_source import Source
    from orchestrator.web import make_app
    from orchestrator.web.control import LogControl

    marker, token = tmp_path / "marker", "a-token-for-the-page-test-0123456789"
    with Orchestrator(make_registry(), executor="threads://2", store="mongomock://") as orch:
        app = make_app(
            lambda: nullcontext(Source(orch.store)),
            token=token,
            control=LogControl(lambda: nullcontext(orch.store)),
        )
        with served(app) as server:
            failed = orch.submit(call("wait_for_file", str(marker), "found", 0.05), name="needs-a-file")
            with pytest.raises(Exception, match="did not appear"):
                failed.result(60)
            browser.get(f"{server.base}/static/app.css")  # the origin, to hold the token
            js(browser, f"localStorage.setItem('evenflow.token', '{token}')")
            browser.get(f"{server.base}/runs/{failed.id}")
            wait_until(
                lambda: js(browser, "return document.body.dataset.state") == "failed", what="drawn failed"
            )
            marker.touch()
            js(browser, "window.confirm = () => true")
            press = "const b = document.getElementById('retry'); if (b) b.click(); return Boolean(b)"
            wait_until(lambda: js(browser, press), what="the retry button pressed")
            wait_until(lambda: failed.id not in browser.current_url, what="the new run's page")
            wait_until(
                lambda: js(browser, "return document.body.dataset.state") == "succeeded", what="retried"
            )
            shot(browser, "run-retried", tmp_path)
        js(browser, "localStorage.clear()")


def test_the_workers_page_lists_what_the_api_lists(browser: Any, site: Any, tmp_path: Path) -> None:
    server, orch, _ = site
    assert orch.submit(call("square", 5)).result(60) == 25
    browser.get(f"{server.base}/workers")
    listed = (
        "return [...document.querySelectorAll('#workers-table tbody tr')]"
        ".map(r => [r.dataset.worker, r.cells[1].textContent])"
    )
    shown = wait_until(lambda: js(browser, listed) or None, what="the workers table")
    assert sorted(map(tuple, shown)) == sorted(
        (w["worker"], str(w["calls"])) for w in server.get("/api/v1/workers").json()
    )
    shot(browser, "workers", tmp_path)
