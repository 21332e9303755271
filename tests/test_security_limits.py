"""Budgets and quotas that hold (issue 35, finding 3): a study's cost is checked against per-study limits
before it is queued, and the planner refuses a plan its budget cannot pay for; a token's active and daily
studies and the queue as a whole are capped (429 with Retry-After); uploads stream to disk under a size limit.

Each test failed on the code before these limits: `batch_sizes: [1048576]` on 600 examples was planned at
5.2M, `proxy_seconds: 1e308` was accepted, studies and jobs had no cap, and an upload was read whole.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from advisor.errors import SpecError
from advisor.science.planner import plan_study
from advisor.specs import parse_spec
from advisor.storage.db import Database
from advisor.storage.models import Job, JobState, Study, StudyState
from api import testing

PROBLEM = "application/problem+json"


Env = testing.ServiceEnv


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from testing.database_url(request.param, tmp_path)


@pytest.fixture
def env(url: str, tmp_path: Path) -> Iterator[Env]:
    with testing.service_env(url, tmp_path) as made:
        yield made


def problem(response: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert field in [error["field"] for error in body["errors"]], body
    return body


def finish(db: Database, study_id: int) -> None:
    """What a worker leaves when a study succeeds: it no longer counts as active."""
    with db.transaction() as session:
        session.execute(update(Study).where(Study.id == study_id).values(state=StudyState.SUCCEEDED))
        session.execute(update(Job).where(Job.study_id == study_id).values(state=JobState.SUCCEEDED))


# 1. Per-study cost, checked before a study is queued --------------------------------------------------------


def test_a_budget_past_the_per_study_limits_is_refused_naming_the_field_and_the_limit(env: Env) -> None:
    endless = env.submit(training={"epochs": 100}, budget={"proxy_seconds": 1e308})
    assert "86400 s" in problem(endless, 422, "budget.proxy_seconds")["detail"]
    many = env.submit(budget={"proxy_seconds": None, "proxy_examples": 10**11})
    assert "10000000" in problem(many, 422, "budget.proxy_examples")["detail"]
    assert env.count(Study) == 0  # refused before anything was queued
    assert env.submit(budget={"proxy_seconds": 86_400}).status_code == 202  # at the limit: a long study


def test_a_batch_larger_than_the_study_may_spend_is_refused_naming_batch_sizes(env: Env) -> None:
    # The case: one step of B = 1,048,576 is 1,750× a budget of 600 examples.
    huge = env.submit(batch_sizes=[1_048_576], budget={"proxy_seconds": None, "proxy_examples": 600})
    assert "exceeds the study's budget.proxy_examples of 600" in problem(huge, 422, "batch_sizes")["detail"]
    # Under a seconds budget, its cheapest plan (5 LRs × one step each) is 5.2M examples, ~29 h at the
    # planner's guess of 0.02 s per example: past the limit of a day.
    timed = env.submit(batch_sizes=[1_048_576], budget={"proxy_seconds": 900})
    assert "86400 s per study" in problem(timed, 422, "batch_sizes")["detail"]
    # Derived candidates start at the device count: 2^20 devices cannot take one step within the limit.
    devices = env.submit(batch_sizes=None, training={"devices": 1_048_576})
    problem(devices, 422, "training.devices")
    assert env.count(Study) == 0


def test_the_planner_refuses_a_plan_whose_first_rung_its_budget_cannot_pay_for() -> None:
    """Rung 0 runs every config whole (only later rungs stop at the budget): a plan that cannot afford it
    used to be planned anyway, [1048576] on 600 examples at 5 × 1,048,576 examples."""
    spec = parse_spec(
        {
            "model": "org/model",
            "dataset": {"path": "data.jsonl"},
            "batch_sizes": [1_048_576],
            "budget": {"proxy_seconds": None, "proxy_examples": 600},
        }
    )
    with pytest.raises(SpecError) as refused:
        plan_study(spec, n_train=500)
    assert refused.value.field == "batch_sizes" and "5242880 examples" in refused.value.message
    # Under a seconds budget the clock stops rung 0 after its first run, which must fit the budget.
    timed = spec.model_copy(update={"budget": spec.budget.model_copy(update={"proxy_seconds": 900.0})})
    timed = timed.model_copy(update={"budget": timed.budget.model_copy(update={"proxy_examples": None})})
    with pytest.raises(SpecError, match="one run to the first rung"):
        plan_study(timed, n_train=500, seconds_per_example=0.001)  # 1,049 s for one step
    small = spec.model_copy(update={"batch_sizes": [4, 8]})
    assert plan_study(small, n_train=500).rungs[0].examples == 8  # a plan that fits is planned as before


# 2. Per-token quotas on active and daily studies ------------------------------------------------------------


def test_a_token_at_its_limit_of_active_studies_gets_429_with_retry_after(url: str, tmp_path: Path) -> None:
    with testing.service_env(url, tmp_path, max_active_studies_per_token=2) as env:
        first = env.submit(headers={**env.headers, "Idempotency-Key": "first"})
        assert first.status_code == 202 and env.submit().status_code == 202
        refused = env.submit()
        body = problem(refused, 429, "max_active_studies_per_token")
        assert int(refused.headers["Retry-After"]) > 0
        assert "2 studies queued or running" in body["detail"] and "LORA_ADVISOR_MAX_ACTIVE" in body["detail"]
        replay = env.submit(headers={**env.headers, "Idempotency-Key": "first"})
        assert replay.status_code == 200  # a replay creates nothing, so no quota refuses it
        assert env.submit(headers=testing.token(env.db)).status_code == 202  # other tokens are not held up
        finish(env.db, first.json()["id"])
        assert env.submit().status_code == 202  # a finished study frees its slot


def test_concurrent_submits_cannot_share_out_the_last_slots_twice(url: str, tmp_path: Path) -> None:
    with testing.service_env(url, tmp_path, max_active_studies_per_token=5) as env:

        async def post_all() -> list[int]:
            transport = httpx.ASGITransport(app=env.client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                spec = testing.example_spec(env.root)
                posts = [client.post("/v1/studies", json=spec, headers=env.headers) for _ in range(40)]
                return [response.status_code for response in await asyncio.gather(*posts)]

        statuses = asyncio.run(post_all())
        assert statuses.count(202) == 5 and statuses.count(429) == 35 and env.count(Study) == 5


def test_a_token_at_its_daily_limit_gets_429_until_its_oldest_is_a_day_old(url: str, tmp_path: Path) -> None:
    with testing.service_env(url, tmp_path, max_daily_studies_per_token=2) as env:
        ids = [env.submit().json()["id"] for _ in range(2)]
        for study_id in ids:
            finish(env.db, study_id)  # not active: only the daily count holds
        refused = env.submit()
        problem(refused, 429, "max_daily_studies_per_token")
        assert 86_000 < int(refused.headers["Retry-After"]) <= 86_401  # when the oldest leaves the window
        with env.db.transaction() as session:
            yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(hours=25)
            session.execute(update(Study).where(Study.id == ids[0]).values(created_at=yesterday))
        assert env.submit().status_code == 202


# 3. A cap on queued jobs overall ----------------------------------------------------------------------------


def test_a_full_queue_refuses_every_token_with_429_and_retry_after(url: str, tmp_path: Path) -> None:
    with testing.service_env(url, tmp_path, max_queued_jobs=2) as env:
        tokens = [env.headers, testing.token(env.db), testing.token(env.db)]
        assert [env.submit(headers=t).status_code for t in tokens[:2]] == [202, 202]
        refused = env.submit(headers=tokens[2])
        assert "2 jobs" in problem(refused, 429, "max_queued_jobs")["detail"]
        assert int(refused.headers["Retry-After"]) > 0
        assert env.count(Study) == 2


def test_the_default_limits_let_a_normal_user_submit_a_normal_study(env: Env) -> None:
    accepted = env.submit()  # the example spec: batch sizes [8, 16], 60 s
    assert accepted.status_code == 202, accepted.text
    examples = env.submit(budget={"proxy_seconds": None, "proxy_examples": 100_000}, batch_sizes=[64, 128])
    assert examples.status_code == 202, examples.text


# 4. Uploads streamed to disk with a size limit --------------------------------------------------------------


def test_an_upload_streams_to_disk_holding_a_small_part_of_it_in_memory(env: Env) -> None:
    line = b'{"instruction": "q", "output": "' + b"a" * 200 + b'"}\n'
    chunk, chunks = line * 256, 128  # ~60 KB at a time, as uvicorn hands a body over; 7.7 MB in all
    size = len(chunk) * chunks

    async def body() -> AsyncIterator[bytes]:  # no Content-Length: a chunked upload
        for _ in range(chunks):
            yield chunk

    async def upload() -> httpx.Response:
        # httpx's ASGI transport hands the app one chunk at a time (TestClient would read the body whole).
        transport = httpx.ASGITransport(app=env.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.post("/v1/datasets", content=body(), headers=env.headers)

    tracemalloc.start()
    try:
        response = asyncio.run(upload())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 201, response.text
    stored = response.json()
    assert stored["rows"] == 256 * chunks and stored["bytes"] == size
    assert stored["fingerprint"] == hashlib.sha256(chunk * chunks).hexdigest()
    assert Path(stored["path"]).stat().st_size == size
    # Read whole, the body, its text and its lines each took the upload's size (3× and more).
    assert peak < size / 4, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB upload"


def test_an_upload_past_the_limit_is_refused_while_streaming_leaving_no_file(
    url: str, tmp_path: Path
) -> None:
    with testing.service_env(url, tmp_path, max_upload_bytes=10_000) as env:

        def body() -> Iterator[bytes]:
            yield from [b'{"a": 1}\n' * 500] * 10  # 45 KB, declared nowhere

        refused = env.client.post("/v1/datasets", content=body(), headers=env.headers)
        assert refused.status_code == 413 and refused.headers["content-type"].startswith(PROBLEM)
        assert "10000 bytes" in refused.json()["detail"]
        assert list(env.settings.upload_dir.glob("*")) == []  # no .part file left behind
        fits = env.client.post("/v1/datasets", content=b'{"a": 1}\n' * 100, headers=env.headers)
        assert fits.status_code == 201 and [p.suffix for p in env.settings.upload_dir.iterdir()] == [".jsonl"]
