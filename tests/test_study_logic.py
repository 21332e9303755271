"""The study's logic on a closed-form loss surface (`SyntheticRunner`): halving, extensions, paused runs, run
length, curvature and sibling transfer, end to end and without torch, in milliseconds a study.

The surface's optimum is known exactly: LR*(B, N) = 2e-4 · √(B/8) · (N/1000)^−0.1, and larger batches
lower the loss (0.5/√B), so a study should answer with the largest batch and an LR near LR* at the real
run's length.
"""

from __future__ import annotations

from typing import Any

import pytest

from advisor.jobs.control import JobControl
from advisor.jobs.functions import run_synthetic_study, study_result_to_job_result
from advisor.records import CONFIRMATION_ROLE, HALVING_ROLE, RunStatus
from advisor.science.lr_grid import lattice_index
from advisor.science.recommendation import NoRecommendation, Recommendation
from advisor.specs import StudySpec, parse_spec
from advisor.study import StudyResult, run_study
from advisor.study.synthetic import Surface, SyntheticRunner

TRAIN_EXAMPLES = 2_000


def spec(**fields: Any) -> StudySpec:
    return parse_spec(
        {
            "model": "org/model",
            "dataset": {"path": "data.jsonl"},
            "batch_sizes": [4, 8, 16, 32],
            "lr_range": [1e-6, 1e-1],
            "budget": {"proxy_seconds": None, "proxy_examples": 20_000},
            **fields,
        }
    )


def study(study_spec: StudySpec, surface: Surface | None = None, **options: Any) -> StudyResult:
    runner = SyntheticRunner(surface or Surface(noise=0.005), train_examples=TRAIN_EXAMPLES)
    return run_study(study_spec, runner, **options)


def answer(result: StudyResult) -> Recommendation:
    assert isinstance(result.recommendation, Recommendation), result.recommendation
    return result.recommendation


def lattice_steps(lr: float, other: float) -> int:
    return abs(lattice_index(lr) - lattice_index(other))


def test_a_study_answers_with_the_surfaces_best_batch_and_its_lr_at_the_real_runs_length() -> None:
    surface = Surface(noise=0.005)
    rec = answer(study(spec(), surface))
    assert rec.batch_size == 32  # larger batches lower the loss on this surface
    assert lattice_steps(rec.learning_rate, surface.optimum(32, TRAIN_EXAMPLES)) <= 1  # within 0.25 decades
    assert rec.predicted_eval_loss is not None
    assert rec.predicted_eval_loss == pytest.approx(
        surface.loss(32, rec.learning_rate, TRAIN_EXAMPLES), rel=0.05
    )


def test_the_same_spec_gives_the_same_runs_and_the_same_pick_every_time() -> None:
    first, second = study(spec()), study(spec())
    assert [(r.config.batch_size, r.config.learning_rate, r.eval_loss) for r in first.runs] == [
        (r.config.batch_size, r.config.learning_rate, r.eval_loss) for r in second.runs
    ]
    assert (answer(first).batch_size, answer(first).learning_rate) == (
        answer(second).batch_size,
        answer(second).learning_rate,
    )


def test_the_study_stays_within_its_examples_budget_and_promoted_runs_resume() -> None:
    result = study(spec(budget={"proxy_seconds": None, "proxy_examples": 6_000}))
    assert sum(r.examples_trained for r in result.runs) <= 6_000
    halving = [r for r in result.runs if r.meta["role"] == HALVING_ROLE]
    assert any(r.status == RunStatus.PRUNED for r in halving)
    resumed = [r for r in halving if r.meta.get("resumed_from")]
    assert resumed and all(r.examples_trained < r.examples_seen for r in resumed)


def test_an_optimum_above_the_lr_range_extends_the_grid_towards_it() -> None:
    rec = answer(study(spec(lr_range=[1e-6, 1e-4])))  # LR* ≈ 4e-4 at B = 32: above the range
    assert rec.learning_rate > 1e-4


def test_a_range_where_every_run_diverges_is_no_recommendation_that_says_so() -> None:
    result = study(spec(lr_range=[0.5, 1.0]))
    assert isinstance(result.recommendation, NoRecommendation)
    assert result.recommendation.kind == "all_diverged"


def test_pissa_over_a_wide_range_is_centred_by_its_curvature_ratio_and_the_probes_are_kept() -> None:
    """The surface's λ_max of PiSSA is 4× LoRA's: the grid is centred at 2e-4 / 4 (β = 1), and both probes'
    per-module reports travel with the result to be stored."""
    result = study(spec(method="pissa", lr_range=[1e-7, 1e-1]))
    prior = answer(result).evidence["curvature_prior"]
    assert prior["ratio"] == pytest.approx(4.0) and prior["lr_centre"] == pytest.approx(2e-4 / 4)
    assert [p["method"] for p in result.probes] == ["pissa", "lora"]
    stored = study_result_to_job_result(result)
    assert stored.probes == result.probes and stored.dataset_examples == TRAIN_EXAMPLES


def test_other_methods_are_derived_from_one_study_by_their_curvature_ratio() -> None:
    result = study(spec(), derive_methods=["pissa"])
    rec, pissa = answer(result), result.derived["pissa"]
    assert pissa.derived and pissa.learning_rate == pytest.approx(
        rec.learning_rate / 4 ** result_beta(result)
    )


def result_beta(result: StudyResult) -> float:
    return float(answer(result).evidence["beta"])


def test_a_sibling_proxys_answer_is_confirmed_by_runs_on_the_target_at_its_rank() -> None:
    sibling = spec(model="org/big", proxy_model="org/small", rank=32)
    result = study(sibling)
    rec = answer(result)
    target_runs = [r for r in result.runs if r.meta["role"] == CONFIRMATION_ROLE]
    assert len(target_runs) >= 3 and all(r.config.rank == 32 for r in target_runs)
    assert all(r.config.rank == 8 for r in result.runs if r.meta["role"] == HALVING_ROLE)  # the proxy's rank
    assert rec.evidence["probes"]["proxy"]["model"] == "org/small"
    assert rec.evidence["probes"]["target"]["model"] == "org/big"
    assert {p["model"] for p in result.probes} == {"org/small", "org/big"}


def test_a_top_rung_short_of_the_real_run_moves_lr_star_to_the_real_runs_length() -> None:
    """LR* falls with run length on this surface (γ = −0.1): the answer moves down from the top rung's."""
    result = study(spec(training={"epochs": 3}))
    trend = answer(result).evidence["size_trend"]
    assert trend["to_examples"] == 3 * TRAIN_EXAMPLES > trend["from_examples"]
    assert trend["factor"] < 1.0


def test_the_synthetic_job_is_the_same_study_the_queue_can_run_in_milliseconds() -> None:
    payload = {"spec": spec().model_dump(mode="json"), "seconds_per_run": 0.0}
    stored = run_synthetic_study(payload, JobControl())
    direct = study(spec(), Surface())
    assert stored.recommendation_available and stored.batch_size == answer(direct).batch_size
    assert stored.learning_rate == answer(direct).learning_rate
    assert len(stored.runs) == len(direct.runs)
    assert all(run.meta["source"] == "synthetic" for run in stored.runs)
