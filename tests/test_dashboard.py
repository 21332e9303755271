"""The dashboard in real headless Chromium against a real uvicorn server on loopback with a seeded SQLite
database: every page renders with no console errors, the Plotly graph divs hold the stored numbers, live
progress updates by polling, `?token=` moves into sessionStorage, and screenshots are kept as artifacts
(under $LORA_ADVISOR_TEST_ARTIFACTS, default tests/artifacts)."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from advisor.records import CONFIRMATION_ROLE
from advisor.storage.db import Database
from advisor.storage.models import ProxyRun, RecommendationRow, Study
from api import testing
from api.app import create_app
from api.dashboard import sample

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("LORA_ADVISOR_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))

if not CHROMIUM.exists():
    pytest.skip(
        "needs /usr/bin/chromium: `apt-get install -y chromium` (.ci/run does)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright: pip install -e '.[dev]'")
uvicorn = pytest.importorskip("uvicorn")


@contextlib.contextmanager
def serve(root: Path, *, seed: bool, **settings: Any) -> Iterator[tuple[str, Database, dict[str, int]]]:
    """A real uvicorn server on a free loopback port, in a thread, until the block ends."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = testing.make_settings(root, **settings)
    db = testing.migrated(config.url)
    ids = sample.seed(db) if seed else {}
    app = create_app(config, db=db, start_workers=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", db, ids
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        db.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Database, dict[str, int], str]]:
    """Auth on, as in production: the pages are opened with a read token in `?token=`."""
    with serve(tmp_path_factory.mktemp("seeded"), seed=True) as (url, db, ids):
        secret = testing.token(db, "read")["Authorization"].split()[1]
        yield url, db, ids, secret


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.errors = []  # console errors and uncaught exceptions, checked by `open_page`
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()


def open_page(page: Any, url: str) -> None:
    response = page.goto(url)
    assert response.status == 200, url
    page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    assert page.errors == []


def figure(page: Any, chart_id: str) -> list[dict[str, Any]]:
    """The traces Plotly actually holds in the graph div."""
    return page.evaluate(TRACES, chart_id)


TRACES = (
    "id => document.getElementById(id).data"
    ".map(t => ({name: t.name, type: t.type, x: t.x, y: t.y, z: t.z, base: t.base}))"
)


def eventually(page: Any, script: str, arg: Any, *, timeout: float = 10.0) -> None:
    """Poll `script(arg)` until truthy (wait_for_function evals a string, which the page's CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(script, arg):
        assert time.monotonic() < deadline, f"timed out waiting for {script}"
        page.wait_for_timeout(100)


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def stored_runs(db: Database, study_id: int) -> list[ProxyRun]:
    with db.transaction(write=False) as session:
        runs = session.query(ProxyRun).filter_by(study_id=study_id).order_by(ProxyRun.run_index).all()
        session.expunge_all()
        return runs


def test_study_page_charts_hold_the_stored_runs(
    page: Any, seeded: tuple[str, Database, dict[str, int], str]
) -> None:
    url, db, ids, secret = seeded
    open_page(page, f"{url}/dashboard/studies/{ids['lora']}?token={secret}")
    assert "token=" not in page.url, "the token leaves the address bar"
    assert page.evaluate("sessionStorage.getItem('lora-advisor-token')") == secret
    runs = stored_runs(db, ids["lora"])

    timeline = figure(page, "chart-timeline")
    bars = [bar for trace in timeline for bar in zip(trace["x"], trace["base"], trace["y"], strict=True)]
    assert {x: base + trained for x, base, trained in bars} == {r.run_index: r.examples_seen for r in runs}
    # a promoted config's bar starts where its run paused at the rung below
    resumed = {r.run_index: r.meta["resumed_from"]["examples_seen"] for r in runs if "resumed_from" in r.meta}
    assert resumed and all(base == resumed.get(x, 0) for x, base, _ in bars)
    assert {t["name"] for t in timeline} >= {"promoted", "pruned", "top rung"}

    by_config: dict[tuple[int, float], list[ProxyRun]] = {}
    for run in runs:  # the halving's runs on the proxy (not the calibration, other lengths or the target)
        if run.meta.get("role") not in {"calibration", "trend", "horizon", CONFIRMATION_ROLE}:
            by_config.setdefault((run.batch_size, run.learning_rate), []).append(run)
    expected = {}  # each config's loss at its first (lowest) rung, repeats there averaged
    for config, group in by_config.items():
        first = min(r.examples_seen for r in group)
        losses = [r.eval_loss for r in group if r.examples_seen == first and r.eval_loss is not None]
        expected[config] = statistics.fmean(losses) if losses else None
    for trace in figure(page, "chart-loss-lr"):
        if trace["name"].startswith("B="):
            batch = int(trace["name"][2:])
            for lr, loss in zip(trace["x"], trace["y"], strict=True):
                assert math.isclose(loss, expected[(batch, lr)] or math.nan)

    heat = next(t for t in figure(page, "chart-heatmap") if t["type"] == "heatmap")
    for row, batch in zip(heat["z"], heat["y"], strict=True):
        for loss, log_lr in zip(row, heat["x"], strict=True):
            match = [v for (b, lr), v in expected.items() if b == int(batch) and math.isclose(lr, 10**log_lr)]
            assert (loss is None or math.isclose(loss, match[0] or math.nan)) if match else loss is None

    curves = figure(page, "chart-curves")
    assert len(curves) == sum(1 for r in runs if r.metrics["evals"])
    # the study probed its sibling proxy and its target (stored reports), and says the medians it used
    probes = [t["name"] for t in figure(page, "chart-probes")]
    assert probes == ["lora r8 · tiny-llama-proxy", "lora r8 · tiny-llama", "median λ_max (study)"]
    with db.transaction(write=False) as session:
        reasoning = (
            session.query(RecommendationRow).filter_by(study_id=ids["lora"]).one().payload["reasoning"]
        )
    assert page.locator("#reasoning li").count() == len(reasoning) > 3
    path = screenshot(page, "dashboard-study")
    assert path.stat().st_size > 20_000


def test_list_page_polls_live_progress(page: Any, seeded: tuple[str, Database, dict[str, int], str]) -> None:
    url, db, ids, secret = seeded
    open_page(page, f"{url}/dashboard?token={secret}")
    rows = page.locator("#studies tbody tr")
    assert rows.count() == len(ids)
    running = page.locator(f"#studies tr[data-study-id='{ids['running']}'] progress")
    assert math.isclose(float(running.get_attribute("value")), 0.4)
    with db.transaction() as session:
        session.get(Study, ids["running"]).progress = 0.75
    eventually(
        page,
        "id => document.querySelector(`tr[data-study-id='${id}'] progress`).value === 0.75",
        ids["running"],
    )
    screenshot(page, "dashboard-list")
    page.click(f"#studies tr[data-study-id='{ids['diverged']}'] a")  # a link carries the token on
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#no-recommendation").inner_text().startswith("No recommendation.")
    assert "diverged" in page.locator("#no-recommendation").inner_text()
    assert page.locator("#chart-loss-lr-note").is_visible()
    assert {t["name"] for t in figure(page, "chart-heatmap")} == {"eval loss", "diverged"}
    assert page.errors == []
    screenshot(page, "dashboard-diverged")


def test_trends_page(page: Any, seeded: tuple[str, Database, dict[str, int], str]) -> None:
    url, _, _, secret = seeded
    open_page(page, f"{url}/dashboard/trends?token={secret}")
    lr_by_rank = figure(page, "trend-learning_rate-rank")
    lora = next(t for t in lr_by_rank if t["name"] == "lora")
    assert sorted(lora["x"]) == [8, 8, 16]  # two rank-8 lora studies (two models) and one at rank 16
    methods = figure(page, "trend-methods")
    assert {t["name"] for t in methods} == {"lora", "dora"}
    assert page.locator("#methods tbody tr").count() == 2
    for chart in ("trend-batch_size-dataset_examples", "trend-learning_rate-model", "trend-batch_size-model"):
        assert figure(page, chart)
    screenshot(page, "dashboard-trends")


def test_empty_database(page: Any, tmp_path: Path) -> None:
    with serve(tmp_path, seed=False, auth_disabled=True) as (url, _, _):
        open_page(page, f"{url}/dashboard")
        assert page.locator("#no-studies").is_visible()
        open_page(page, f"{url}/dashboard/trends")
        assert page.locator("#no-trends").is_visible()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_api_docs_render_their_operations_with_the_network_blocked(
    page: Any, seeded: tuple[str, Database, dict[str, int], str]
) -> None:
    """/docs and /redoc load nothing from the internet: every request off loopback is aborted."""
    url = seeded[0]
    off_loopback: list[str] = []

    def loopback_only(route: Any) -> None:
        if route.request.url.startswith(url):
            route.continue_()
        else:
            off_loopback.append(route.request.resource_type)
            route.abort()

    page.route("**/*", loopback_only)
    page.goto(f"{url}/docs")
    page.wait_for_selector(".opblock", timeout=15_000)  # Swagger UI drew the operations
    assert page.locator(".opblock-summary-path", has_text="/v1/studies").count() >= 1
    screenshot(page, "api-docs")
    page.goto(f"{url}/redoc")
    page.wait_for_selector("[data-section-id]", timeout=15_000)  # ReDoc drew its sections
    assert page.get_by_text("/v1/studies").count() >= 1
    # nothing the pages need came from off loopback: at most ReDoc's footer logo (an image) was tried, and
    # its aborted load is the only console error
    assert set(off_loopback) <= {"image"}
    assert [e for e in page.errors if "Failed to load resource" not in e] == []
