"""DatabaseKnowledgeStore on SQLite with real rows: finished studies stored through the queue (as a worker
stores them) and outcomes as POST /v1/outcomes stores them, read back as the science's warm-start records."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from advisor.jobs import queue
from advisor.records import RunConfig, RunRecord, RunStatus
from advisor.science.knowledge import StudyContext, warm_start
from advisor.science.loss_forecast import LOSS_EXPONENT, LossExponentPrior
from advisor.science.recommendation import NoRecommendation
from advisor.specs import StudySpec, parse_spec
from advisor.storage import repository as repo
from advisor.storage.db import Database, default_sqlite_url
from advisor.storage.knowledge_store import DatabaseKnowledgeStore
from api import testing

CONTENT = "c" * 64  # the dataset content hash the runs record


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = testing.migrated(default_sqlite_url(tmp_path / "db"))
    yield database
    database.dispose()


def spec(tmp_path: Path, **changes: Any) -> StudySpec:
    testing.make_roots(tmp_path)
    models = tmp_path / "model-root"
    for name in ("Qwen3-0.6B", "Qwen3-8B", "Llama-3-8B"):
        (models / name).mkdir(exist_ok=True)
        (models / name / "config.json").write_text("{}")
    fields = {**testing.example_spec(tmp_path), "model": str(models / "Qwen3-0.6B"), **changes}
    fields["dataset"] = {"path": str(tmp_path / "dataset-root" / "train.jsonl")}
    return parse_spec(fields)


def run(spec: StudySpec, *, n_train: int, content: str = CONTENT) -> RunRecord:
    config = RunConfig(
        method=spec.method,
        rank=spec.rank,
        alpha=float(spec.alpha or spec.rank),
        batch_size=8,
        learning_rate=1e-3,
        micro_batch_size=8,
        accumulation_steps=1,
        planned_steps=10,
        warmup_steps=0,
        max_seq_len=64,
        seed=0,
        device="cpu",
        precision="fp32",
    )
    return RunRecord(
        status=RunStatus.PRUNED,
        config=config,
        spec=spec.model_dump(mode="json"),
        eval_loss=2.0,
        examples_seen=80,
        dataset_fingerprint={"content_sha256": content, "n_train": n_train},
    )


def finished_study(
    db: Database,
    spec: StudySpec,
    *,
    batch_size: int = 16,
    learning_rate: float = 2e-3,
    n_train: int = 4000,
    available: bool = True,
    evidence: dict[str, Any] | None = None,
    fail: bool = False,
) -> int:
    """A study submitted, leased and completed through the queue, with the payload a study job stores."""
    study_id, _ = queue.submit_study(
        db,
        spec=spec,
        function="study",
        max_attempts=1,
        token_id=None,
        dataset_fingerprint=None,
        idempotency=None,
    )
    lease = queue.claim(db, worker_id="test", lease_seconds=30)
    assert lease is not None and lease.study_id == study_id
    if fail:
        queue.fail(db, lease=lease, error="boom", retryable=False, backoff=queue.Backoff())
        return study_id
    payload = {
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "confidence": {"score": 0.8, "label": "high"},
        "lr_rule": {"kappa": 0.6},
        "predicted_eval_loss": 1.5,
        "evidence": evidence or {},
    }
    result = queue.JobResult(
        runs=[run(spec, n_train=n_train)],
        recommendation=payload if available else {"reason": "all diverged"},
        recommendation_available=available,
        batch_size=batch_size if available else None,
        learning_rate=learning_rate if available else None,
        dataset_examples=n_train,
    )
    queue.complete(db, lease=lease, result=result)
    return study_id


def context(spec: StudySpec, n_train: int = 4000, fingerprint: str | None = None) -> StudyContext:
    return StudyContext.from_spec(spec, n_train=n_train, fingerprint=fingerprint)


def test_similar_returns_comparable_finished_studies_only(db: Database, tmp_path: Path) -> None:
    asked = spec(tmp_path)
    finished_study(db, spec(tmp_path, rank=16, alpha=32))  # α/r = 2, not 1: another LR scale
    finished_study(db, spec(tmp_path, model=str(tmp_path / "model-root" / "Qwen3-8B")))
    finished_study(db, spec(tmp_path, method="dora"))  # another method: LRs do not compare
    finished_study(db, spec(tmp_path, scaling="alpha_over_sqrt_r"))  # another α convention
    finished_study(db, spec(tmp_path, model=str(tmp_path / "model-root" / "Llama-3-8B")))  # another family
    finished_study(db, spec(tmp_path), n_train=10_000_000)  # far bigger dataset: 7 half-decades away
    finished_study(db, spec(tmp_path), available=False)  # ran, but could not recommend
    finished_study(db, spec(tmp_path), fail=True)  # never finished

    known = DatabaseKnowledgeStore(db).similar(context(asked))

    assert len(known) == 1, [k.context for k in known]
    (result,) = known
    assert (result.batch_size, result.learning_rate, result.confidence) == (16, 2e-3, 0.8)
    assert result.kappa == 0.6 and result.predicted_eval_loss == 1.5
    assert result.context.model.endswith("Qwen3-8B") and result.context.model_family == "qwen3"
    assert result.context.dataset_size == 4000 and result.context.dataset_fingerprint == CONTENT


def test_nearby_rank_and_size_buckets_count_and_warm_start_answers(db: Database, tmp_path: Path) -> None:
    asked = spec(tmp_path)  # rank 8, α 8
    finished_study(db, spec(tmp_path, rank=16, alpha=16), learning_rate=1e-3, n_train=9000)
    finished_study(db, spec(tmp_path), learning_rate=2e-3, n_train=4000)

    store = DatabaseKnowledgeStore(db)
    known = store.similar(context(asked, fingerprint=CONTENT))
    assert sorted(k.context.rank for k in known) == [8, 16]

    provisional, beta = warm_start(store, context(asked, fingerprint=CONTENT))
    assert provisional is not None and provisional.provisional
    assert provisional.batch_size == 16 and 1e-3 < provisional.learning_rate < 3e-3
    assert beta.outcomes_used == 0


# A full run as POST /v1/outcomes stores it, in the context of `spec` (batch 16).
REPORTED_RUN = {"model": "Qwen3-0.6B", "method": "lora", "rank": 8, "alpha": 8.0, "batch_size": 16}


def report_full_run(db: Database, study_id: int, learning_rate: float, final_eval_loss: float) -> None:
    values = {**REPORTED_RUN, "study_id": study_id, "learning_rate": learning_rate}
    with db.transaction() as session:
        repo.add_outcome(session, values={**values, "final_eval_loss": final_eval_loss}, token_id=None)


def test_outcomes_compare_the_best_full_run_with_the_recommendation(db: Database, tmp_path: Path) -> None:
    asked = spec(tmp_path)
    transfer = {"transfer": {"lambda_proxy": 10.0, "lambda_target": 40.0, "beta": 1.0}}
    study_id = finished_study(db, spec(tmp_path), learning_rate=1e-3, evidence=transfer)
    unlinked = finished_study(db, spec(tmp_path, method="dora"))
    with db.transaction() as session:
        for lr, loss, diverged in [(2e-3, 1.1, False), (4e-3, 0.9, False), (8e-3, None, True)]:
            values = {**REPORTED_RUN, "study_id": study_id, "learning_rate": lr, "final_eval_loss": loss}
            repo.add_outcome(session, values={**values, "diverged": diverged}, token_id=None)
        repo.add_outcome(session, values={**REPORTED_RUN, "learning_rate": 1e-2}, token_id=None)  # no study
        dora = {**REPORTED_RUN, "method": "dora", "study_id": unlinked, "learning_rate": 1e-2}
        repo.add_outcome(session, values=dora, token_id=None)

    outcomes = DatabaseKnowledgeStore(db).outcomes(context(asked))

    assert len(outcomes) == 1
    (outcome,) = outcomes
    assert outcome.best_lr == 4e-3 and outcome.recommended_lr == 1e-3 and outcome.batch_size == 16
    assert (outcome.lambda_proxy, outcome.lambda_target) == (10.0, 40.0)
    assert outcome.proxy_lr == pytest.approx(4e-3)  # 1e-3 = proxy · (10/40)^1, undone
    _, beta = warm_start(DatabaseKnowledgeStore(db), context(asked))
    assert beta.outcomes_used == 1 and math.isfinite(beta.beta)


def test_an_outcome_reads_the_proxys_lr_the_transfer_stored_when_target_runs_moved_the_answer(
    db: Database, tmp_path: Path
) -> None:
    # Target runs measured a model ratio of 0.2, so undoing the curvature ratio would not give the proxy's LR.
    transfer = {"lambda_proxy": 10.0, "lambda_target": 40.0, "beta": 1.0, "proxy_learning_rate": 5e-3}
    study_id = finished_study(db, spec(tmp_path), learning_rate=1e-3, evidence={"transfer": transfer})
    report_full_run(db, study_id, learning_rate=2e-3, final_eval_loss=1.0)

    (outcome,) = DatabaseKnowledgeStore(db).outcomes(context(spec(tmp_path)))
    assert outcome.proxy_lr == 5e-3 and outcome.recommended_lr == 1e-3


def test_an_outcome_is_compared_with_lr_stars_median_not_the_cautious_pick_below_it(
    db: Database, tmp_path: Path
) -> None:
    caution = {"caution": {"lr_star_median": 2e-3, "sd_decades": 0.2, "offset_decades": -0.3}}
    study_id = finished_study(db, spec(tmp_path), learning_rate=1e-3, evidence=caution)
    report_full_run(db, study_id, learning_rate=2e-3, final_eval_loss=1.0)

    (outcome,) = DatabaseKnowledgeStore(db).outcomes(context(spec(tmp_path)))
    # The full run found LR*'s median best: no correction is due, though the LR recommended was lower.
    assert outcome.recommended_lr == 2e-3 and outcome.best_lr == 2e-3


def test_an_empty_database_knows_nothing(db: Database, tmp_path: Path) -> None:
    store = DatabaseKnowledgeStore(db)
    assert store.similar(context(spec(tmp_path))) == [] and store.outcomes(context(spec(tmp_path))) == []


def test_a_stored_study_that_measured_the_run_length_trend_passes_it_on(db: Database, tmp_path: Path) -> None:
    measured = {"size_trend": {"lr_exponent": -0.8, "exponent_sd": 0.15, "measured": True}}
    prior_only = {"size_trend": {"lr_exponent": -0.25, "exponent_sd": 0.3, "measured": False}}
    finished_study(db, spec(tmp_path), learning_rate=1e-3, evidence=measured)
    finished_study(db, spec(tmp_path), learning_rate=2e-3, evidence=prior_only)

    known = DatabaseKnowledgeStore(db).similar(context(spec(tmp_path)))
    by_lr = {k.learning_rate: (k.size_exponent, k.size_exponent_sd) for k in known}
    assert by_lr == {1e-3: (-0.8, 0.15), 2e-3: (None, None)}


def test_a_second_study_starts_from_the_run_length_trend_the_first_one_measured(
    db: Database, tmp_path: Path
) -> None:
    """End to end, as `advisor recommend` runs on one data directory: the first study's horizon runs measure
    γ, the database keeps it, and the second study's prior of γ is built from it; then the user reports full
    runs that found the best LR at 4× the first answer, and the third study's answer moves up by the
    (shrunk) correction."""
    import torch

    from advisor.cli.recommend import run_leased, start_study
    from proxy_runs.synthetic import corpus_of, instruction_records, write_jsonl
    from proxy_runs.tiny import save_tiny_model

    torch.set_num_threads(1)
    records = instruction_records(160, seed=0)
    write_jsonl(records, tmp_path / "data.jsonl")
    save_tiny_model(tmp_path / "model", "llama", corpus_of(records), vocab_size=256, hidden=16)
    study_spec = parse_spec(
        {
            "model": str(tmp_path / "model"),
            "dataset": {"path": str(tmp_path / "data.jsonl")},
            "training": {"max_seq_len": 32, "epochs": 4},  # 576 examples: far past the top rung's 72
            "batch_sizes": [4, 8],
            "lr_range": [1e-3, 0.3],
            "budget": {"proxy_seconds": None, "proxy_examples": 1200},  # leaves room for horizon runs
        }
    )
    first_lease = start_study(db, study_spec)
    first = run_leased(db, first_lease, study_spec, budget=None).recommendation
    assert not isinstance(first, NoRecommendation)
    measured = first.evidence["size_trend"]
    assert measured["measured"] and measured["prior"]["studies"] == 0 and "horizon" in measured

    second = run_leased(db, start_study(db, study_spec), study_spec, budget=None).recommendation
    assert not isinstance(second, NoRecommendation)
    prior = second.evidence["size_trend"]["prior"]
    # arXiv 2602.04998's ± 0.3, sharpened by the first study
    assert prior["studies"] == 1 and prior["sd"] < 0.3
    assert any("from arXiv 2602.04998 and 1 stored studies" in sentence for sentence in second.reasoning)

    base = {
        "model": study_spec.model,
        "method": "lora",
        "rank": 8,
        "alpha": 8.0,
        "batch_size": first.batch_size,
    }
    median = first.learning_rate  # LR*'s median: the default lr_pick
    with db.transaction() as session:  # as POST /v1/outcomes stores them
        for factor, loss in [(1.0, 2.0), (4.0, 1.5)]:
            values = {**base, "study_id": first_lease.study_id, "learning_rate": factor * median}
            repo.add_outcome(session, values={**values, "final_eval_loss": loss}, token_id=None)
    third = run_leased(db, start_study(db, study_spec), study_spec, budget=None).recommendation
    assert not isinstance(third, NoRecommendation)
    correction = third.evidence["outcome_correction"]
    assert correction["outcomes_used"] == 1
    assert correction["factor"] == pytest.approx(4 ** (1 / 3))  # one outcome against a prior worth two
    assert any("1 reported full-run outcome(s)" in sentence for sentence in third.reasoning)
    # The best full run's loss (1.5) against the first study's L* measures the loss forecast's slope.
    first_forecast = first.evidence["loss_forecast"]
    reported = math.log10(1.5 / first_forecast["from_loss"]) / math.log10(
        first_forecast["examples"] / first_forecast["from_examples"]
    )
    loss_prior = third.evidence["loss_forecast"]["prior"]
    assert loss_prior["outcomes"] == 1 and loss_prior["sd"] < LossExponentPrior().sd
    assert min(reported, LOSS_EXPONENT) < loss_prior["mean"] < max(reported, LOSS_EXPONENT)
