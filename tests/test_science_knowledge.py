"""Warm start from stored studies, and β recalibrated from reported outcomes (an in-memory store)."""

from __future__ import annotations

import math

import pytest

from advisor.science.knowledge import (
    SIZE_EXPONENT,
    SIZE_EXPONENT_SD,
    KnowledgeStore,
    KnownResult,
    ReportedOutcome,
    StudyContext,
    context_distance,
    loss_exponent_prior,
    provisional_recommendation,
    rank_bucket,
    recalibrate_beta,
    size_bucket,
    size_exponent_prior,
    warm_start,
)
from advisor.science.loss_forecast import LossExponentPrior
from advisor.science.transfer import BETA_BAND, BETA_DEFAULT
from advisor.specs import parse_spec


class MemoryStore:
    """The smallest KnowledgeStore: lists in memory (the SQL repository is tested elsewhere)."""

    def __init__(self, known: list[KnownResult], outcomes: list[ReportedOutcome] | None = None) -> None:
        self.known, self.reported = known, outcomes or []

    def similar(self, context: StudyContext) -> list[KnownResult]:
        return self.known

    def outcomes(self, context: StudyContext) -> list[ReportedOutcome]:
        return self.reported


def context(**changes: object) -> StudyContext:
    spec = parse_spec({"model": "Qwen/Qwen3-0.6B", "dataset": {"path": "d.jsonl"}, "rank": 16})
    return StudyContext.from_spec(spec, n_train=10_000).model_copy(update=changes)


def known(lr: float = 2e-4, batch: int = 16, **changes: object) -> KnownResult:
    return KnownResult(
        context=context(**changes), batch_size=batch, learning_rate=lr, confidence=0.9, kappa=0.6
    )


def test_context_buckets_group_nearby_ranks_and_sizes() -> None:
    assert rank_bucket(8) == rank_bucket(12) != rank_bucket(16)
    assert size_bucket(4_000) == size_bucket(9_000) != size_bucket(11_000)
    assert context().model_family == "qwen3" and context().alpha_over_rank == 1.0


def test_distance_is_zero_for_the_same_context_and_infinite_across_methods_or_alpha() -> None:
    assert context_distance(context(), context()) == 0.0
    assert context_distance(context(), context(method="pissa")) == math.inf
    assert context_distance(context(), context(alpha_over_rank=2.0)) == math.inf
    assert (
        0
        < context_distance(context(), context(rank_bucket=5, rank=32))
        < context_distance(context(), context(rank_bucket=5, rank=32, model_family="gemma3"))
    )


def test_a_stored_study_of_the_same_context_answers_provisionally_at_once() -> None:
    store: KnowledgeStore = MemoryStore([known(2e-4, 16), known(3e-4, 16)])
    rec, calibration = warm_start(store, context())
    assert rec is not None and rec.provisional
    assert rec.batch_size == 16 and 2e-4 <= rec.learning_rate <= 3e-4
    assert rec.confidence.score <= 0.5 and rec.cost.runs == 0
    assert rec.lr_rule.kappa == pytest.approx(0.6) and calibration.beta == BETA_DEFAULT


def test_neighbours_at_another_rank_are_moved_along_the_rank_trend() -> None:
    at_rank_4 = known(1e-3, rank=4, rank_bucket=2)
    rec = provisional_recommendation(context(), [at_rank_4])
    # arXiv 2602.04998: higher rank (α = r) wants a lower LR
    assert rec is not None and rec.learning_rate < 1e-3


def test_a_neighbour_of_another_dataset_size_moves_along_the_trend_the_store_measured() -> None:
    half = {"dataset_size": 5_000, "dataset_size_bucket": size_bucket(5_000)}
    assumed = provisional_recommendation(context(), [known(1e-3, **half)])
    steep = {"size_exponent": -1.0, "size_exponent_sd": 0.1}  # it measured LR* ∝ N^−1 with horizon runs
    measured = provisional_recommendation(context(), [known(1e-3, **half).model_copy(update=steep)])
    assert assumed is not None and measured is not None
    # twice the data, arXiv 2602.04998's γ
    assert assumed.learning_rate == pytest.approx(1e-3 * 2**SIZE_EXPONENT)
    # γ from the store: −1 measured half a bucket away, pulled towards arXiv 2602.04998's −0.25 (to −0.88)
    assert 1e-3 * 2**-1.0 < measured.learning_rate < 1e-3 * 2**-0.8
    assert "stored studies" in measured.reasoning[0]


def test_no_neighbour_within_reach_means_no_provisional_answer() -> None:
    assert provisional_recommendation(context(), [known(method="pissa")]) is None
    assert provisional_recommendation(context(), []) is None


def outcome(beta_true: float, ratio: float, reporter: str = "token 1") -> ReportedOutcome:
    return ReportedOutcome(
        reporter=reporter,
        context=context(),
        batch_size=16,
        proxy_lr=1e-3,
        recommended_lr=1e-3 / ratio,
        best_lr=1e-3 * ratio**-beta_true,
        lambda_proxy=1.0,
        lambda_target=ratio,
    )


def test_outcomes_recalibrate_beta_towards_what_full_runs_found() -> None:
    ratios = (2.0, 4.0, 8.0, 3.0, 5.0, 6.0)
    calibration = recalibrate_beta([outcome(1.3, r, f"token {i}") for i, r in enumerate(ratios)])
    assert calibration.outcomes_used == 6
    assert BETA_DEFAULT < calibration.beta < 1.3  # shrunk towards the prior, moving towards the truth
    assert calibration.beta == pytest.approx((6 * 1.3 + 2 * 1.0) / 8)


def test_beta_stays_inside_the_band_and_ignores_uninformative_outcomes() -> None:
    assert recalibrate_beta([outcome(5.0, 10.0)] * 20).beta == BETA_BAND[1]
    assert recalibrate_beta([outcome(0.8, 1.01)]).outcomes_used == 0  # curvature ratio ≈ 1 says nothing


def test_full_run_losses_reported_back_measure_the_loss_forecasts_slope() -> None:
    # The study's L* was 2.0 on 300 examples; full runs of 3000 examples ended at 2.0 × 10^−0.3 = 1.0.
    def reported(
        final: float | None, forecast_examples: int = 3000, reporter: str = "token 1"
    ) -> ReportedOutcome:
        return ReportedOutcome(
            reporter=reporter,
            context=context(),
            batch_size=16,
            proxy_lr=2e-4,
            recommended_lr=2e-4,
            best_lr=2e-4,
            final_eval_loss=final,
            forecast_from=(300, 2.0),
            forecast_examples=forecast_examples,
        )

    default = LossExponentPrior()
    assert loss_exponent_prior([reported(None), reported(1.9, forecast_examples=300)]) == default
    learned = loss_exponent_prior([reported(2.0 * 10**-0.3, reporter=f"token {i}") for i in range(3)])
    assert learned.outcomes == 3 and learned.sd < default.sd
    assert -0.3 < learned.mean < -0.25  # three outcomes at ± 0.03 outweigh the prior's ± 0.07
    assert "from 3 reported full-run outcome(s)" in learned.describe()


def test_reported_outcomes_correct_the_provisional_lr() -> None:
    reported = [
        ReportedOutcome(context=context(), batch_size=16, proxy_lr=2e-4, recommended_lr=2e-4, best_lr=4e-4)
        for _ in range(6)
    ]
    plain = provisional_recommendation(context(), [known(2e-4)])
    corrected = provisional_recommendation(context(), [known(2e-4)], reported)
    assert plain is not None and corrected is not None
    assert plain.learning_rate < corrected.learning_rate < 4e-4


def test_stored_studies_that_measured_the_run_length_trend_sharpen_its_prior() -> None:
    alone = size_exponent_prior(context(), [known()])  # a neighbour that only applied the prior
    assert (alone.mean, alone.sd, alone.studies) == (pytest.approx(SIZE_EXPONENT), SIZE_EXPONENT_SD, 0)
    steep = {"size_exponent": -0.9, "size_exponent_sd": 0.1}  # measured by horizon runs, say
    near = size_exponent_prior(context(), [known().model_copy(update=steep)])
    assert near.studies == 1 and -0.9 < near.mean < -0.8 and near.sd == pytest.approx(0.1)  # the floor
    farther = size_exponent_prior(context(), [known(rank_bucket=6).model_copy(update=steep)])
    assert near.mean < farther.mean < SIZE_EXPONENT  # a rank 2 buckets away says less
    other_method = known(method="dora").model_copy(update=steep)
    assert size_exponent_prior(context(), [other_method]).studies == 0  # LRs of another method do not compare
    assert "1 stored studies" in near.describe() and "arXiv 2602.04998's prior" in alone.describe()
