"""The REST API on SQLite and on PostgreSQL (marker postgres): studies end to end through a real worker,
auth and scopes, bad input → problem+json naming the field with nothing half-stored, uploads, idempotency
under 200 concurrent POSTs, rate limits, readiness and metrics."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from advisor.jobs.executors import wait_for
from advisor.storage.errors import SchemaOutOfDate
from advisor.storage.models import DatasetRow, IdempotencyKey, Job, Study
from api import testing
from api.app import create_app
from api.settings import Settings

PROBLEM = "application/problem+json"


Env = testing.ServiceEnv


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from testing.database_url(request.param, tmp_path)


@pytest.fixture
def env(url: str, tmp_path: Path) -> Iterator[Env]:
    with testing.service_env(url, tmp_path) as made:
        yield made


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if field is not None:
        assert field in [error["field"] for error in body["errors"]], body
    return body


AXOLOTL_CONFIG = {  # the real run's own config, as an Axolotl user has it (paths inside the service's roots)
    "base_model": "tiny-llama",
    "adapter": "lora",
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_target_linear": True,
    "datasets": [{"path": "train.jsonl", "type": "alpaca"}],
    "sequence_len": 64,
    "micro_batch_size": 4,
    "gradient_accumulation_steps": 2,
    "num_epochs": 1,
    "optimizer": "adamw_bnb_8bit",
    "learning_rate": 2e-4,
    "output_dir": "./out",
}


def test_a_training_config_starts_a_study_of_its_recipe_and_the_answer_says_what_to_write_back(
    env: Env,
) -> None:
    body = {"config": AXOLOTL_CONFIG, "format": "auto", "batch_sizes": [16], "budget": {"proxy_seconds": 60}}
    response = env.client.post("/v1/studies", json=body, headers=env.headers)
    assert response.status_code == 202, response.text
    with testing.worker_thread(env.db):
        assert wait_for(
            lambda: (
                env.client.get(response.json()["url"], headers=env.headers).json()["state"] == "succeeded"
            ),
            timeout=20,
            interval=0.1,
        )
    study = env.client.get(response.json()["url"], headers=env.headers).json()
    spec, mapped_from = study["spec"], study["mapped_from"]
    assert (spec["rank"], spec["alpha"], spec["target_modules"]) == (8, 16.0, "all-linear")
    assert spec["batch_sizes"] == [8, 16] and spec["training"]["batch_size"] == 8  # the config's own batch
    assert (spec["training"]["max_grad_norm"], spec["training"]["packing"]) == (1.0, False)  # Axolotl's
    assert mapped_from["format"] == "axolotl" and mapped_from["devices"] == {"count": 1, "source": "default"}
    assert {"key": "output_dir", "reason": "bookkeeping: does not move the best LR or batch"} in (
        mapped_from["dropped"]
    )
    recommendation = study["recommendation"]
    values = recommendation["write_back"]["values"]
    assert values["learning_rate"] == pytest.approx(recommendation["learning_rate"], rel=0.01)
    assert values["micro_batch_size"] * values["gradient_accumulation_steps"] == recommendation["batch_size"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"config": {**AXOLOTL_CONFIG, "rl": "dpo"}}, "config.rl"),
        ({"config": {**AXOLOTL_CONFIG, "optimizer": "sgd"}}, "config.optimizer"),
        ({"config": {"epochs": 3}}, "config.format"),
        ({"config": AXOLOTL_CONFIG, "format": "megatron"}, "format"),
        ({"config": {k: v for k, v in AXOLOTL_CONFIG.items() if k != "datasets"}}, "config.dataset"),
    ],
)
def test_a_config_that_cannot_be_copied_is_a_problem_naming_its_key(
    env: Env, body: dict[str, Any], field: str
) -> None:
    assert_problem(env.client.post("/v1/studies", json=body, headers=env.headers), 422, field)
    assert env.count(Study) == 0


def test_the_openapi_schema_shows_both_study_requests(env: Env) -> None:
    operation = env.client.get("/openapi.json").json()["paths"]["/v1/studies"]["post"]
    shapes = operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert [set(shape["required"]) for shape in shapes] == [{"model", "dataset"}, {"config"}]


def test_the_openapi_schema_documents_every_error_as_a_problem(env: Env) -> None:
    """Errors were undocumented (401, 403, 404, 409, 429 …) or documented as FastAPI's default
    HTTPValidationError in application/json, which no route sends; schemathesis (tests/test_fuzz.py) fails
    on an undocumented status or media type, so the document says what the service really answers."""
    paths = env.client.get("/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            errors = {status: r for status, r in operation["responses"].items() if status[0] in "45"}
            assert "422" in errors, (method, path)  # a NUL in any parameter or header, on every route
            for status, response in errors.items():
                assert list(response["content"]) == [PROBLEM], (method, path, status)
                assert {"type", "title", "status", "detail"} <= set(
                    response["content"][PROBLEM]["schema"]["required"]
                )
            if path.startswith("/v1/"):
                assert {"401", "403", "429", "503"} <= set(errors), (method, path)
    assert "200" in paths["/v1/studies"]["post"]["responses"]  # a replay under the same Idempotency-Key
    assert "binary" in str(paths["/v1/datasets"]["post"]["requestBody"])  # the file's bytes, not JSON


def test_a_posted_study_is_answered_end_to_end(env: Env) -> None:
    response = env.client.post("/v1/studies", json=env.spec(), headers=env.headers)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["location"] == accepted["url"] and accepted["url"].endswith(
        f"/v1/studies/{accepted['id']}"
    )

    with testing.worker_thread(env.db):
        assert wait_for(
            lambda: env.client.get(accepted["url"], headers=env.headers).json()["state"] == "succeeded",
            timeout=20,
            interval=0.1,
        )
    study = env.client.get(accepted["url"], headers=env.headers).json()
    assert study["progress"] == 1.0 and study["model"].endswith("tiny-llama")
    recommendation = study["recommendation"]
    assert recommendation["available"] and recommendation["batch_size"] in (8, 16)

    runs = env.client.get(study["links"]["runs"], headers=env.headers).json()
    assert len(runs) == testing.example_study_runs() and all(run["metrics"] is None for run in runs)
    top = max((r for r in runs if r["status"] == "success"), key=lambda r: r["examples_seen"])
    run = env.client.get(f"/v1/runs/{top['id']}", headers=env.headers).json()  # its curve, in full
    steps = [point["step"] for point in run["metrics"]["evals"]]
    assert len(steps) >= 3 and steps == sorted(steps)  # evaluated at every rung below it and its own

    query = {"model": study["model"], "method": "lora", "rank": 8}
    answer = env.client.get("/v1/recommendations", params=query, headers=env.headers).json()
    assert answer["status"] == "ready" and answer["batch_size"] == recommendation["batch_size"]
    doubled = env.client.get("/v1/recommendations", params={**query, "alpha": 16}, headers=env.headers).json()
    assert doubled["learning_rate"] == pytest.approx(answer["learning_rate"] / 2)  # lr·α/r kept constant
    none = env.client.get("/v1/recommendations", params={**query, "rank": 64}, headers=env.headers).json()
    assert none["status"] == "none" and "no study" in none["detail"]

    check = {**query, "batch_size": answer["batch_size"], "learning_rate": answer["learning_rate"]}
    assert env.client.post("/v1/check", json=check, headers=env.headers).json()["verdict"] == "ok"
    wild = env.client.post("/v1/check", json={**check, "learning_rate": 1.0}, headers=env.headers).json()
    assert wild["verdict"] == "warn" and "learning_rate" in wild["messages"][0]

    page = env.client.get(
        "/v1/studies", params={"state": "succeeded", "limit": 1}, headers=env.headers
    ).json()
    assert page["total"] == 1 and page["items"][0]["id"] == accepted["id"]
    assert env.client.get("/v1/studies", params={"state": "queued"}, headers=env.headers).json()["total"] == 0


def test_missing_wrong_or_underscoped_tokens_are_refused_and_store_nothing(env: Env) -> None:
    body = assert_problem(env.client.post("/v1/studies", json=env.spec()), 401)
    assert "advisor token create" in body["detail"]
    assert env.client.get("/v1/studies").headers["www-authenticate"].startswith("Bearer")
    assert_problem(env.client.get("/v1/studies", headers={"Authorization": "Bearer lra_wrong"}), 401)
    assert_problem(env.client.get("/v1/studies", headers={"Authorization": "Basic abc"}), 401)
    reader = testing.token(env.db, "read")
    assert env.client.get("/v1/studies", headers=reader).status_code == 200
    assert_problem(env.client.post("/v1/studies", json=env.spec(), headers=reader), 403)
    assert env.count(Study) == 0 and env.count(Job) == 0


def test_auth_may_be_off_only_on_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="loopback"):
        Settings(data_dir=tmp_path, host="0.0.0.0", auth_disabled=True)
    assert Settings(data_dir=tmp_path, host="127.0.0.1", auth_disabled=True).auth_disabled


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lerning_rate": 1e-4}, "lerning_rate"),
        ({"rank": -4}, "rank"),
        ({"method": "lorax"}, "method"),
        ({"lr_pick": "safest"}, "lr_pick"),
        ({"dataset": {"path": "../../../../etc/passwd"}}, "dataset.path"),
        ({"dataset": {"path": "/etc/passwd"}}, "dataset.path"),
        ({"dataset": {"path": "train.jsonl", "eval_path": "missing.jsonl"}}, "dataset.eval_path"),
        ({"model": "no-such-model"}, "model"),
        ({"model": "meta-llama/Llama-3-8B"}, "model"),  # hub ids are off unless enabled
        ({"model": "m" * 5000}, "model"),  # longer than a file name may be: refused, not an OSError
        ({"rank": 10**30}, "rank"),  # larger than a database integer: refused before it reaches one
        ({"training": {"seed": 2**40}}, "training.seed"),
    ],
)
def test_bad_study_input_is_a_problem_naming_the_field(env: Env, change: dict[str, Any], field: str) -> None:
    assert_problem(env.client.post("/v1/studies", json=env.spec(**change), headers=env.headers), 422, field)
    assert env.count(Study) == 0 and env.count(Job) == 0 and env.count(IdempotencyKey) == 0


def test_malformed_json_and_non_object_bodies(env: Env) -> None:
    headers = {**env.headers, "content-type": "application/json"}
    assert_problem(env.client.post("/v1/studies", content=b'{"model": ', headers=headers), 400, "body")
    assert_problem(env.client.post("/v1/studies", content=b"[1, 2]", headers=headers), 422)
    assert_problem(env.client.get("/v1/studies/999999", headers=env.headers), 404)
    assert_problem(env.client.get("/v1/studies", params={"limit": 0}, headers=env.headers), 422, "limit")
    assert env.count(Study) == 0


def test_nan_infinity_and_oversized_ids_are_problems_naming_the_field(env: Env) -> None:
    """Python's JSON parser reads NaN and Infinity, which no field means; ids past 64 bits can name no row.
    Both used to reach the database or the error renderer and come back as a 500."""
    headers = {**env.headers, "content-type": "application/json"}

    def post(path: str, body: dict[str, Any]) -> httpx.Response:
        return env.client.post(path, content=json.dumps(body, allow_nan=True), headers=headers)

    nan_budget = env.spec(budget={"proxy_seconds": float("nan")})
    assert_problem(post("/v1/studies", nan_budget), 422, "budget.proxy_seconds")
    body = assert_problem(post("/v1/studies", env.spec(lr_range=[1e-5, float("inf")])), 422, "lr_range.1")
    assert "inf" in [error["value"] for error in body["errors"]]  # echoed as text: JSON has no Infinity
    outcome = {"model": "m", "rank": 8, "alpha": 8, "batch_size": 4, "learning_rate": 1e-3}
    nan_loss = {**outcome, "final_eval_loss": float("nan")}
    assert_problem(post("/v1/outcomes", nan_loss), 422, "final_eval_loss")
    assert_problem(post("/v1/check", {**outcome, "learning_rate": float("nan")}), 422, "learning_rate")
    assert_problem(env.client.get(f"/v1/studies/{2**64}", headers=env.headers), 422, "study_id")
    assert_problem(env.client.get(f"/v1/runs/{2**64}", headers=env.headers), 422, "run_id")
    too_far = {"offset": 10**20}
    assert_problem(env.client.get("/v1/studies", params=too_far, headers=env.headers), 422, "offset")
    assert env.count(Study) == 0


def test_nul_characters_are_refused_wherever_they_come_from(env: Env) -> None:
    """PostgreSQL can neither store nor compare text holding NUL: in a body, a query parameter or a header it
    used to fail in the database (a 500 on PostgreSQL only). Run on both backends."""
    spec = env.spec(target_modules=["q_proj\x00"])
    assert_problem(env.client.post("/v1/studies", json=spec, headers=env.headers), 422, "target_modules")
    outcome = {"model": "m", "rank": 8, "alpha": 8, "batch_size": 4, "learning_rate": 1e-3, "notes": "a\x00"}
    assert_problem(env.client.post("/v1/outcomes", json=outcome, headers=env.headers), 422, "notes")
    query = {"model": "m\x00"}
    assert_problem(env.client.get("/v1/studies", params=query, headers=env.headers), 422, "model")
    assert_problem(env.client.get("/v1/recommendations", params=query, headers=env.headers), 422, "model")
    keyed = {**env.headers, "Idempotency-Key": "k\x00"}
    assert_problem(
        env.client.post("/v1/studies", json=env.spec(), headers=keyed), 422, "header idempotency-key"
    )
    assert env.count(Study) == 0 and env.count(IdempotencyKey) == 0


# Values that broke the API before (each was a 500 on SQLite or PostgreSQL, found by sweeping every field with
# them): NaN and Infinity, integers past 64 bits, a name longer than a file name may be, NUL characters.
MALFORMED = [None, -1, 0, 10**30, float("nan"), float("inf"), "", "x" * 5000, "a\x00b", [], {}, [1], True]
SPEC_FIELDS = [
    "model", "proxy_model", "revision", "method", "rank", "alpha", "scaling", "target_modules", "batch_sizes",
    "lr_range", "lr_pick", "budget", "budget.proxy_seconds", "budget.proxy_examples", "dataset",
    "dataset.path", "dataset.format", "dataset.eval_fraction", "dataset.max_examples", "dataset.split",
    "training", "training.epochs", "training.max_seq_len", "training.seed", "training.micro_batch_size",
    "method_options.lora_plus_ratio", "method_options.num_virtual_tokens", "unknown_field",
]  # fmt: skip


def with_value(spec: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    changed = json.loads(json.dumps(spec))
    *parents, last = dotted.split(".")
    node = changed
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return changed


def test_no_malformed_value_in_any_field_gets_a_500(env: Env) -> None:
    """Every spec field, every outcome and check field, ids and query parameters, each given every value in
    MALFORMED: the answer is a success or a problem+json, never a server error; nothing half-stored."""
    headers = {**env.headers, "content-type": "application/json"}
    outcome = {"model": "m", "rank": 8, "alpha": 8, "batch_size": 4, "learning_rate": 1e-3}
    posts = [
        ("/v1/studies", with_value(env.spec(), field, value)) for field in SPEC_FIELDS for value in MALFORMED
    ]
    posts += [
        (path, {**body, field: value})
        for path, body in (("/v1/outcomes", {**outcome, "final_eval_loss": 2.0}), ("/v1/check", outcome))
        for field in [*body, "study_id"]
        for value in MALFORMED
    ]
    answers = [
        env.client.post(path, content=json.dumps(body, allow_nan=True), headers=headers)
        for path, body in posts
    ]
    gets = [
        "/v1/studies/" + str(2**64),
        f"/v1/runs/{2**40}",
        "/v1/studies?offset=" + str(10**20),
        "/v1/studies?model=%00",
    ]
    answers += [env.client.get(path, headers=env.headers) for path in gets]
    served = [(a.request.url.path, a.status_code, a.text[:200]) for a in answers if a.status_code >= 500]
    assert served == []
    assert all(a.headers["content-type"].startswith(PROBLEM) for a in answers if a.status_code >= 400)
    assert env.count(Study) == sum(a.status_code == 202 for a in answers)


def test_a_symlink_out_of_a_root_is_refused(env: Env, tmp_path: Path) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"instruction": "q", "output": "a"}\n')
    (env.settings.dataset_roots[0] / "escape.jsonl").symlink_to(outside)
    body = assert_problem(
        env.client.post("/v1/studies", json=env.spec(dataset={"path": "escape.jsonl"}), headers=env.headers),
        422,
        "dataset.path",
    )
    assert "not a usable dataset" in body["detail"]  # the words of every refused path: nothing to probe
    # and how the roots are set, not where they are (tests/test_security_surface.py)
    assert "LORA_ADVISOR_DATA_DIR" in body["detail"] and "LORA_ADVISOR_DATASET_ROOTS" in body["detail"]


def test_uploads_fingerprint_then_feed_a_study(env: Env) -> None:
    data = b'{"instruction": "q1", "output": "a1"}\n{"instruction": "q2", "output": "a2"}\n'
    response = env.client.post("/v1/datasets", content=data, headers=env.headers)
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["rows"] == 2 and dataset["bytes"] == len(data) and len(dataset["fingerprint"]) == 64
    again = env.client.post("/v1/datasets", content=data, headers=env.headers).json()
    assert again == dataset and env.count(DatasetRow) == 1
    csv = env.client.post(
        "/v1/datasets", params={"format": "csv"}, content=b"instruction,output\nq,a\n", headers=env.headers
    )
    assert csv.status_code == 201 and csv.json()["rows"] == 1

    accepted = env.client.post(
        "/v1/studies", json=env.spec(dataset={"path": dataset["path"]}), headers=env.headers
    )
    study = env.client.get(accepted.json()["url"], headers=env.headers).json()
    assert study["dataset_fingerprint"] == dataset["fingerprint"]


def test_bad_or_oversized_uploads_store_nothing(url: str, tmp_path: Path) -> None:
    with testing.service_env(url, tmp_path, max_upload_bytes=1000, max_body_bytes=2000) as env:
        uploads = env.settings.upload_dir
        assert_problem(env.client.post("/v1/datasets", content=b"x" * 1001, headers=env.headers), 413)

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
            yield from [b'{"a": 1}\n' * 50] * 4

        assert_problem(env.client.post("/v1/datasets", content=chunks(), headers=env.headers), 413)
        assert_problem(
            env.client.post("/v1/datasets", content=b'{"a": 1}\nnot json\n', headers=env.headers), 422, "body"
        )
        assert_problem(env.client.post("/v1/datasets", content=b"", headers=env.headers), 422)
        assert_problem(
            env.client.post("/v1/studies", json={**env.spec(), "pad": "x" * 3000}, headers=env.headers), 413
        )
        assert env.count(DatasetRow) == 0 and env.count(Study) == 0
        assert not uploads.exists() or list(uploads.iterdir()) == []


def test_uploads_past_the_parsers_own_limits_are_problems_not_500s(env: Env) -> None:
    """JSON nested past Python's recursion limit and a CSV field over the csv module's 128 KiB."""
    deep = b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"\n"
    body = assert_problem(env.client.post("/v1/datasets", content=deep, headers=env.headers), 422, "body")
    assert "nests too deeply" in body["detail"]
    wide = b"instruction,output\n" + b"x" * 200_000 + b",y\n"
    upload = env.client.post("/v1/datasets", params={"format": "csv"}, content=wide, headers=env.headers)
    assert "does not parse" in assert_problem(upload, 422, "body")["detail"]
    assert env.count(DatasetRow) == 0


def test_200_concurrent_posts_with_20_idempotency_keys_make_20_studies(env: Env) -> None:
    async def post_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=env.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await asyncio.gather(
                *[
                    client.post(
                        "/v1/studies",
                        json=env.spec(rank=8 + i % 20),
                        headers={**env.headers, "Idempotency-Key": f"key-{i % 20}"},
                    )
                    for i in range(200)
                ]
            )

    responses = asyncio.run(post_all())
    assert all(r.status_code in (200, 202) for r in responses), {r.status_code: r.text for r in responses}
    assert sum(r.status_code == 202 for r in responses) == 20
    ids_by_key: dict[int, set[int]] = {}
    for i, response in enumerate(responses):
        ids_by_key.setdefault(i % 20, set()).add(response.json()["id"])
    assert all(len(ids) == 1 for ids in ids_by_key.values())
    assert env.count(Study) == 20 and env.count(Job) == 20 and env.count(IdempotencyKey) == 20

    reuse = env.client.post(
        "/v1/studies", json=env.spec(rank=99), headers={**env.headers, "Idempotency-Key": "key-0"}
    )
    assert_problem(reuse, 409)
    assert env.count(Study) == 20


def test_rate_limit_per_token(url: str, tmp_path: Path) -> None:
    with testing.service_env(url, tmp_path, rate_limit_per_second=0.5, rate_limit_burst=3) as env:
        statuses = [env.client.get("/v1/studies", headers=env.headers).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = env.client.get("/v1/studies", headers=env.headers)
        assert_problem(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1
        other = testing.token(env.db, "read")  # a different token has its own bucket
        assert env.client.get("/v1/studies", headers=other).status_code == 200


def test_cancel_outcomes_readiness_and_metrics(env: Env) -> None:
    study = env.client.post("/v1/studies", json=env.spec(), headers=env.headers).json()
    canceled = env.client.post(f"{study['url']}/cancel", headers=env.headers)
    assert canceled.status_code == 202 and canceled.json()["state"] == "canceled"
    assert_problem(env.client.post(f"{study['url']}/cancel", headers=env.headers), 409)

    outcome = {
        "model": "tiny-llama",
        "rank": 8,
        "alpha": 16,
        "batch_size": 16,
        "learning_rate": 2e-4,
        "final_eval_loss": 1.2,
        "study_id": study["id"],
    }
    assert env.client.post("/v1/outcomes", json=outcome, headers=env.headers).status_code == 201
    assert_problem(
        env.client.post("/v1/outcomes", json={**outcome, "rank": -1}, headers=env.headers), 422, "rank"
    )
    assert_problem(
        env.client.post("/v1/outcomes", json={**outcome, "study_id": 10**6}, headers=env.headers), 404
    )

    assert env.client.get("/healthz").json() == {"status": "ok"}
    assert env.client.get("/readyz").status_code == 200
    env.settings.readyz_requires_workers = True
    assert_problem(env.client.get("/readyz"), 503)
    with testing.worker_thread(env.db):
        assert wait_for(lambda: env.client.get("/readyz").status_code == 200, timeout=10)

    text = env.client.get("/metrics").text
    assert 'advisor_http_requests_total{method="POST",route="/v1/studies",status="202"} 1.0' in text
    assert 'advisor_jobs{state="canceled"} 1.0' in text
    assert "/openapi.json" and env.client.get("/openapi.json").json()["paths"]["/v1/studies"]


def test_an_out_of_date_schema_is_refused_with_the_fix(tmp_path: Path) -> None:
    settings = testing.make_settings(tmp_path)
    with (
        pytest.raises(SchemaOutOfDate, match="advisor db upgrade"),
        TestClient(create_app(settings, start_workers=False)),
    ):
        pass


@pytest.mark.skipif(os.environ.get("CI_SKIP_SERVE") == "1", reason="opt-out for very slow machines")
def test_serve_refuses_an_empty_database_through_the_cli(tmp_path: Path) -> None:
    import argparse

    from advisor.cli import service as cli_service

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (cli_service.add_serve, cli_service.add_db, cli_service.add_token):
        add(commands)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    args = parser.parse_args(["serve", "--database-url", url])
    with pytest.raises(SchemaOutOfDate):
        args.handler(args)
    args = parser.parse_args(["db", "upgrade", "--database-url", url])
    assert args.handler(args) == 0
    args = parser.parse_args(
        ["token", "create", "--name", "ci", "--scopes", "read,nope", "--database-url", url]
    )
    assert args.handler(args) == 2


def test_the_api_docs_come_with_their_own_assets_not_a_cdn(env: Env) -> None:
    for page, asset in (
        ("/docs", "/docs-assets/swagger-ui-bundle.js"),
        ("/redoc", "/docs-assets/redoc.standalone.js"),
    ):
        html = env.client.get(page)
        assert html.status_code == 200 and asset in html.text
        assert "cdn.jsdelivr" not in html.text and "fonts.googleapis" not in html.text
        script = env.client.get(asset)
        assert script.status_code == 200 and len(script.content) > 100_000  # the bundle itself
