"""The dashboard without a browser: every page and asset answers with the right content type, pages embed
the stored numbers, auth follows the API's (bearer header or `?token=`), and a missing study is a 404."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from advisor.storage.db import Database
from api import testing
from api.app import create_app
from api.dashboard import figures, sample

HTML = "text/html; charset=utf-8"


def embedded(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="dashboard-data">(.*?)</script>', page, re.S)
    assert match, "the page embeds its data"
    return json.loads(match.group(1))


def client_for(root: Path, **settings: Any) -> Iterator[tuple[TestClient, Database, dict[str, int]]]:
    config = testing.make_settings(root, **settings)
    db = testing.migrated(config.url)
    ids = sample.seed(db)
    with TestClient(create_app(config, db=db, start_workers=False)) as client:
        yield client, db, ids
    db.dispose()


@pytest.fixture
def open_client(tmp_path: Path) -> Iterator[tuple[TestClient, Database, dict[str, int]]]:
    yield from client_for(tmp_path, auth_disabled=True)


@pytest.fixture
def locked_client(tmp_path: Path) -> Iterator[tuple[TestClient, Database, dict[str, int]]]:
    yield from client_for(tmp_path)


def test_pages_render_with_auth_disabled(open_client: tuple[TestClient, Database, dict[str, int]]) -> None:
    client, _, ids = open_client
    paths = [
        "/dashboard",
        "/dashboard/",
        "/dashboard/trends",
        *(f"/dashboard/studies/{i}" for i in ids.values()),
    ]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == HTML
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert "cdn" not in response.text.lower()


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("plotly.min.js", "text/javascript"),
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
    ],
)
def test_static_assets_are_served_offline(
    locked_client: tuple[TestClient, Database, dict[str, int]], name: str, media_type: str
) -> None:
    client, _, _ = locked_client
    response = client.get(f"/dashboard/static/{name}")  # public: library code and no data
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    if name == "plotly.min.js":
        assert len(response.content) > 1_000_000 and b"plotly.js" in response.content[:500]
    assert client.get("/dashboard/static/..%2Fapp.py").status_code == 404
    assert client.get("/dashboard/static/secret.txt").status_code == 404


def test_study_page_embeds_the_stored_numbers(
    open_client: tuple[TestClient, Database, dict[str, int]],
) -> None:
    client, _, ids = open_client
    page = client.get(f"/dashboard/studies/{ids['lora']}").text
    data = embedded(page)
    study = client.get(f"/v1/studies/{ids['lora']}").json()
    runs = client.get(f"/v1/studies/{ids['lora']}/runs").json()
    rec = study["recommendation"]
    assert f"<b>Batch size</b> {rec['batch_size']}" in page
    assert set(data["figures"]) == {
        "chart-loss-lr",
        "chart-heatmap",
        "chart-timeline",
        "chart-curves",
        "chart-probes",
    }
    timeline = data["figures"]["chart-timeline"]["data"]
    assert sorted(x for trace in timeline for x in trace["x"]) == sorted(r["run_index"] for r in runs)
    star = data["figures"]["chart-heatmap"]["data"][-1]
    assert star["name"] == "recommended" and star["y"] == [str(rec["batch_size"])]
    for sentence in rec["details"]["reasoning"]:
        assert html.escape(sentence) in page  # as the page escapes it
    # A sibling proxy's loss is not the target's: that answer predicts none. A study of the model itself does.
    assert rec["details"]["predicted_eval_loss"] is None
    page = client.get(f"/dashboard/studies/{ids['qwen']}").text
    data = embedded(page)
    rec = client.get(f"/v1/studies/{ids['qwen']}").json()["recommendation"]
    low, high = rec["details"]["predicted_eval_loss_interval"]
    assert f"(90%: {low:.4f} – {high:.4f}, at the real run's length)" in page
    predicted = data["figures"]["chart-loss-lr"]["data"][-1]
    assert predicted["y"] == [rec["details"]["predicted_eval_loss"]]
    assert predicted["error_y"]["arrayminus"][0] == pytest.approx(predicted["y"][0] - low)


def test_diverged_study_says_why(open_client: tuple[TestClient, Database, dict[str, int]]) -> None:
    client, _, ids = open_client
    page = client.get(f"/dashboard/studies/{ids['diverged']}").text
    assert 'id="no-recommendation"' in page and "diverged" in page and "lower lr_range" in page
    assert "chart-loss-lr" not in embedded(page)["figures"]


def test_empty_database(tmp_path: Path) -> None:
    config = testing.make_settings(tmp_path, auth_disabled=True)
    db = testing.migrated(config.url)
    with TestClient(create_app(config, db=db, start_workers=False)) as client:
        assert embedded(client.get("/dashboard").text)["studies"] == []
        trends = client.get("/dashboard/trends").text
        assert "No recommendations stored yet" in trends and embedded(trends)["figures"] == {}
        assert client.get("/dashboard/studies/1").status_code == 404
    db.dispose()


def test_auth_bearer_header_or_token_query(
    locked_client: tuple[TestClient, Database, dict[str, int]],
) -> None:
    client, db, ids = locked_client
    for path in ("/dashboard", "/dashboard/trends", f"/dashboard/studies/{ids['lora']}"):
        assert client.get(path).status_code == 401
        assert client.get(path, params={"token": "lra_wrong"}).status_code == 401
    header = testing.token(db, "read")
    secret = header["Authorization"].split()[1]
    assert client.get("/dashboard", headers=header).status_code == 200
    assert client.get("/dashboard/trends", params={"token": secret}).status_code == 200
    assert client.get("/dashboard", headers=testing.token(db, "submit")).status_code == 403


def test_embedded_json_cannot_close_the_script(tmp_path: Path) -> None:
    from api.dashboard.views import embed_json

    text = embed_json({"message": "</script><script>alert(1)</script>"})
    assert "<" not in text and json.loads(text)["message"].startswith("</script>")


def test_the_timeline_tells_horizon_and_second_seed_runs_from_pruned_ones() -> None:
    def run(index: int, lr: float, examples: int, status: str, role: str | None) -> figures.RunPoint:
        return figures.RunPoint(index, index, status, None, 4, lr, 3.0, examples, (), role)

    runs = [
        run(1, 0.01, 32, "pruned", "halving"),
        run(2, 0.02, 32, "pruned", "halving"),
        run(3, 0.01, 96, "success", "halving"),
        run(4, 0.01, 96, "success", "second seed"),
        run(5, 0.01, 600, "success", "horizon"),
        run(6, 0.03, 40, "success", None),  # stored before roles: judged by the halving's runs alone
    ]
    timeline = figures.timeline(runs)
    assert timeline is not None
    named = {trace["name"]: trace["x"] for trace in timeline["data"]}
    assert named == {"promoted": [1], "pruned": [2, 6], "top rung": [3], "second seed": [4], "horizon": [5]}
