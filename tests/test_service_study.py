"""The real study end to end: through the service (POST /v1/studies → the `study` job function on a real
worker → stored runs and recommendation → GET /v1/recommendations) and through `advisor recommend`, whose
second run of the same spec starts from the first one's stored answer. A tiny Llama on CPU, with budgets in
examples so the plan is the same on any machine."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from advisor.jobs.executors import wait_for
from advisor.science.knowledge import StudyContext
from advisor.specs import parse_spec
from advisor.storage import repository as repo
from advisor.storage.db import default_sqlite_url
from advisor.storage.knowledge_store import DatabaseKnowledgeStore
from api import testing
from api.app import create_app
from proxy_runs.synthetic import corpus_of, instruction_records, write_jsonl
from proxy_runs.tiny import save_tiny_model

BATCH_SIZES, LR_RANGE = [4, 8], [1e-4, 1.0]


def tiny_spec(model: Path, data: Path) -> dict[str, Any]:
    return {
        "model": str(model),
        "dataset": {"path": str(data)},
        "rank": 4,
        "training": {"max_seq_len": 32},
        "batch_sizes": BATCH_SIZES,
        "lr_range": LR_RANGE,
        "budget": {"proxy_seconds": None, "proxy_examples": 600},  # the same plan on any machine
    }


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model, dataset) inside the service's allowed roots (testing.make_roots' model-root, dataset-root)."""
    root = tmp_path_factory.mktemp("service-study")
    testing.make_roots(root)
    records = instruction_records(160, seed=0)
    data = write_jsonl(records, root / "dataset-root" / "instructions.jsonl")
    model = save_tiny_model(
        root / "model-root" / "tiny-llama-16", "llama", corpus_of(records), vocab_size=256, hidden=16
    )
    return model, data


def test_a_real_study_through_the_service(
    roots: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)  # 2 shared cores: one thread is faster than two fighting
    model, data = roots
    url = default_sqlite_url(tmp_path / "db")
    monkeypatch.setenv("LORA_ADVISOR_DATABASE_URL", url)  # the study job's warm start reads this database
    db = testing.migrated(url)
    settings = testing.make_settings(
        model.parent.parent, database_url=url, job_function="study", job_options={}, lease_seconds=6.0
    )
    headers = testing.token(db)
    with TestClient(create_app(settings, db=db, start_workers=False)) as client:
        spec = tiny_spec(model, data)
        response = client.post("/v1/studies", json=spec, headers=headers)
        assert response.status_code == 202, response.text
        study_url = response.json()["url"]

        seen: list[float] = []
        with testing.worker_thread(db, testing.worker_options(lease_seconds=6.0)):

            def finished() -> bool:
                body = client.get(study_url, headers=headers).json()
                seen.append(body["progress"])
                return body["state"] in ("succeeded", "failed", "canceled")

            assert wait_for(finished, timeout=120, interval=0.2)
        study = client.get(study_url, headers=headers).json()
        assert study["state"] == "succeeded", study["error"]
        assert all(0.0 <= p <= 1.0 for p in seen) and study["progress"] == 1.0  # done/total, clipped

        recommendation = study["recommendation"]
        assert recommendation["available"] and recommendation["batch_size"] in BATCH_SIZES
        assert LR_RANGE[0] <= recommendation["learning_rate"] <= LR_RANGE[1]
        assert recommendation["details"]["reasoning"]

        runs = client.get(study["links"]["runs"], headers=headers).json()
        statuses = [run["status"] for run in runs]
        assert len(runs) > len(BATCH_SIZES) and "pruned" in statuses and "success" in statuses
        assert {run["batch_size"] for run in runs} >= set(BATCH_SIZES)

        query = {"model": study["model"], "method": "lora", "rank": 4}
        answer = client.get("/v1/recommendations", params=query, headers=headers).json()
        assert answer["status"] == "ready" and answer["source_study_id"] == study["id"]
        assert answer["batch_size"] == recommendation["batch_size"]

    # What the next study of this context warm-starts from: this one, read back by the knowledge store.
    with db.transaction(write=False) as session:
        row = repo.get_recommendation_for_study(session, study_id=study["id"])
        assert row is not None and row.dataset_examples
        n_train = row.dataset_examples
    context = StudyContext.from_spec(parse_spec(spec), n_train=n_train)
    known = DatabaseKnowledgeStore(db).similar(context)
    assert [k.learning_rate for k in known] == [pytest.approx(recommendation["learning_rate"])]
    db.dispose()


def test_data_the_study_cannot_use_fails_on_the_first_attempt_with_the_fix(
    roots: tuple[Path, Path], tmp_path: Path
) -> None:
    """The API can check that a dataset exists, not that it has the spec's fields: the worker finds that.
    Three attempts at the same file would fail the same way, so the study fails at once, and its error is
    the field and the fix, not a traceback."""
    model, data = roots
    renamed = data.parent / "questions.jsonl"
    records = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(40)]
    renamed.write_text("".join(json.dumps(r) + "\n" for r in records))
    url = default_sqlite_url(tmp_path / "db")
    db = testing.migrated(url)
    settings = testing.make_settings(
        model.parent.parent, database_url=url, job_function="study", job_options={}
    )
    headers = testing.token(db)
    with TestClient(create_app(settings, db=db, start_workers=False)) as client:
        response = client.post("/v1/studies", json=tiny_spec(model, renamed), headers=headers)
        assert response.status_code == 202, response.text
        study_url = response.json()["url"]
        with testing.worker_thread(db):
            assert wait_for(
                lambda: client.get(study_url, headers=headers).json()["state"] == "failed", timeout=60
            )
        study = client.get(study_url, headers=headers).json()
    assert study["message"].startswith("attempt 1 of")
    assert study["error"].startswith(
        "DataError: dataset.prompt_field: field 'instruction' is not in the data"
    )
    assert "Fix: set dataset.prompt_field" in study["error"] and "Traceback" not in study["error"]
    db.dispose()


def advisor_recommend(spec_file: Path, data_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LORA_ADVISOR_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    env.pop("LORA_ADVISOR_DATABASE_URL", None)
    command = [sys.executable, "-m", "advisor.cli", "recommend", str(spec_file), "--json", *flags]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=180, check=False)


def test_advisor_recommend_copies_an_axolotl_config_and_says_what_to_write_back(
    roots: tuple[Path, Path], tmp_path: Path
) -> None:
    """The user's own training config starts the study: its recipe (targets, clipping, schedule, batch
    layout) is what the proxies train, and the answer gives the config's own keys to change."""
    model, data = roots
    config = tmp_path / "axolotl.yaml"
    config.write_text(
        f"""\
base_model: {model}
adapter: lora
lora_r: 4
lora_alpha: 8
lora_target_modules: [q_proj, v_proj]
datasets:
  - path: {data}
    type: alpaca
sequence_len: 32
micro_batch_size: 2
gradient_accumulation_steps: 2
num_epochs: 1
optimizer: paged_adamw_8bit
adam_beta2: 0.95
max_grad_norm: 0.0
lr_scheduler: cosine
warmup_ratio: 0.1
learning_rate: 2e-4
wandb_project: my-run
"""
    )
    done = advisor_recommend(config, tmp_path / "data", "--budget-examples", "600", "--batch-sizes", "8")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["mapped_from"]["format"] == "axolotl"
    assert "optimizer: paged 8-bit AdamW trained as AdamW" in answer["mapped_from"]["notes"]
    values = answer["write_back"]["values"]
    assert answer["batch_size"] in (4, 8)  # the config's own 2 × 2 and the flag's 8
    assert values["micro_batch_size"] * values["gradient_accumulation_steps"] == answer["batch_size"]
    assert values["micro_batch_size"] == 2  # the config's micro-batch, kept where it divides

    db = testing.migrated(default_sqlite_url(tmp_path / "data"))
    with db.transaction(write=False) as session:
        (study,), _ = repo.list_studies(session, state=None, model=None, method=None, limit=10, offset=0)
        training = study.spec["training"]
        assert study.spec["target_modules"] == ["q_proj", "v_proj"] and study.spec["batch_sizes"] == [4, 8]
        assert (training["max_grad_norm"], training["optimizer"]["betas"]) == (None, [0.9, 0.95])
        assert (training["warmup_ratio"], training["batch_size"], training["packing"]) == (0.1, 4, False)
        assert study.mapped_from is not None and study.mapped_from["format"] == "axolotl"
    db.dispose()


def test_advisor_recommend_stores_its_study_and_warm_starts_the_next(
    roots: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = roots
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(tiny_spec(model, data)))

    first = advisor_recommend(spec_file, tmp_path / "data")
    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)
    assert answer["batch_size"] in BATCH_SIZES and answer["learning_rate"] > 0
    assert "warm_start" not in answer  # nothing stored yet
    assert (tmp_path / "data" / "advisor.db").is_file()

    second = advisor_recommend(spec_file, tmp_path / "data")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert "warm start: provisional: batch" in second.stderr
    assert again["warm_start"]["batch_size"] == answer["batch_size"]
    assert math.isclose(
        math.log10(again["warm_start"]["learning_rate"]), math.log10(answer["learning_rate"]), abs_tol=0.01
    )
    assert again["batch_size"] in BATCH_SIZES and again["learning_rate"] > 0


def test_ctrl_c_or_sigterm_cancels_the_stored_study_even_when_sent_twice(
    roots: tuple[Path, Path], tmp_path: Path
) -> None:
    """An interrupted `advisor recommend` leaves no study 'running' with nobody running it: the second
    Ctrl-C of an impatient user is held off while the study is marked canceled; the exit code is 130."""
    model, data = roots
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({**tiny_spec(model, data), "budget": {"proxy_examples": 10**6}}))
    env = {**os.environ, "LORA_ADVISOR_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    env.pop("LORA_ADVISOR_DATABASE_URL", None)
    command = [sys.executable, "-m", "advisor.cli", "recommend", str(spec_file)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    assert process.stderr is not None
    for line in process.stderr:  # the plan is printed when the first run starts: the study is under way
        if line.startswith("[0/"):
            break
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGTERM)  # as `timeout` or a CI runner would send next
    assert process.wait(timeout=60) == 130
    assert "interrupted" in process.stderr.read()

    db = testing.migrated(default_sqlite_url(tmp_path / "data"))
    with db.transaction(write=False) as session:
        (study,), _ = repo.list_studies(session, state=None, model=None, method=None, limit=10, offset=0)
        assert study.state == "canceled" and study.message.startswith("interrupted (Ctrl-C or SIGTERM)")
    db.dispose()
