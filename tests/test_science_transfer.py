"""Proxy → target transfer, other methods through λ ratios, and the Recommendation's exports."""

from __future__ import annotations

import math

import pytest

from advisor.science.fits import Observation, SurfaceFit, bootstrap_optimum, fit_surface
from advisor.science.lr_grid import lr_grid
from advisor.science.recommendation import Cost, Recommendation
from advisor.science.transfer import (
    BETA_BAND,
    band_holding_interval,
    beta_interval,
    build_recommendation,
    confirmation_lrs,
    curvature_ratio_lr,
    derive_method,
    measured_model_ratio,
    past_the_edge,
    picked_lr,
    transfer_to_target,
    with_cautious_lr,
)


@pytest.fixture(scope="module")
def proxy_rec() -> Recommendation:
    observations = [
        Observation(
            b,
            lr,
            2.0
            + 0.01 * abs(math.log2(b / 32))
            + 0.08 * (math.log10(lr) - math.log10(1e-3 * (b / 16) ** 0.5)) ** 2,
        )
        for b in (8, 16, 32, 64)
        for lr in lr_grid(1e-3)
    ]
    fit = fit_surface(observations)
    assert isinstance(fit, SurfaceFit)
    return build_recommendation(
        fit,
        bootstrap_optimum(observations, fit, replicates=50),
        method="lora_plus",
        cost=Cost(proxy_seconds=12.0, examples_seen=4000, runs=36),
        lora_plus_ratio=16.0,
    )


def test_ten_times_the_curvature_means_ten_times_lower_lr_at_beta_one() -> None:
    assert curvature_ratio_lr(1e-3, 2.0, 20.0) == pytest.approx(1e-4)
    assert curvature_ratio_lr(1e-3, 2.0, 20.0, beta=0.7) == pytest.approx(1e-3 * 10**-0.7)
    low, high = beta_interval(1e-3, 2.0, 20.0)
    assert low == pytest.approx(1e-3 * 10 ** -BETA_BAND[1]) and high == pytest.approx(
        1e-3 * 10 ** -BETA_BAND[0]
    )


def test_non_positive_curvature_leaves_the_lr_alone() -> None:
    assert curvature_ratio_lr(1e-3, 2.0, -1.0) == 1e-3


def test_the_proxy_recommendation_carries_everything_the_issue_asks_for(proxy_rec: Recommendation) -> None:
    assert proxy_rec.batch_size == 32
    assert proxy_rec.band.lr_low < proxy_rec.learning_rate < proxy_rec.band.lr_high
    assert proxy_rec.lr_rule.kappa == pytest.approx(0.5, abs=0.05) and proxy_rec.lr_rule.measured
    assert proxy_rec.lr_rule.lr_at(64) == pytest.approx(proxy_rec.learning_rate * 2**0.5, rel=0.05)
    assert proxy_rec.lora_plus_ratio == 16.0
    assert proxy_rec.confidence.label == "high" and proxy_rec.predicted_eval_loss == pytest.approx(
        2.0, abs=1e-3
    )
    assert proxy_rec.reasoning and all(sentence.endswith(".") for sentence in proxy_rec.reasoning)


def test_the_band_that_check_passes_holds_the_whole_interval_of_lr_star(proxy_rec: Recommendation) -> None:
    # Top-rung losses that differ by more than ε leave an ε-band of the best LR alone.
    point = proxy_rec.band.model_copy(update={"lr_low": 1e-3, "lr_high": 1e-3})
    at_a_point = proxy_rec.model_copy(
        update={
            "band": point,
            "confidence": proxy_rec.confidence.model_copy(update={"lr_interval": (5e-4, 3e-3)}),
        }
    )
    widened = band_holding_interval(at_a_point)
    assert (widened.band.lr_low, widened.band.lr_high) == (5e-4, 3e-3)
    assert widened.learning_rate == at_a_point.learning_rate  # only the band moves
    wide = proxy_rec.band.model_copy(update={"lr_low": 1e-4, "lr_high": 1e-2})
    already = at_a_point.model_copy(update={"band": wide})
    assert band_holding_interval(already).band == wide  # a band wider than the interval stays as it is


def test_an_uncertain_lr_star_moves_the_pick_below_its_median_and_keeps_the_band(
    proxy_rec: Recommendation,
) -> None:
    interval = (1e-3 / 10**0.5, 1e-3 * 10**0.5)  # 90%: ±0.5 decades, one sd ≈ 0.3
    median = proxy_rec.model_copy(
        update={
            "learning_rate": 1e-3,
            "confidence": proxy_rec.confidence.model_copy(update={"lr_interval": interval}),
        }
    )
    careful = with_cautious_lr(median)
    assert interval[0] < careful.learning_rate < 1e-3 * 10**-0.1  # about 0.13 decades down
    assert careful.band == median.band and careful.confidence == median.confidence
    assert careful.lr_rule.lr_at(careful.lr_rule.reference_batch) == pytest.approx(careful.learning_rate)
    assert careful.evidence["caution"]["lr_star_median"] == 1e-3
    assert "below LR*'s median" in careful.reasoning[-1]
    narrow = median.model_copy(
        update={"confidence": median.confidence.model_copy(update={"lr_interval": (0.9e-3, 1.1e-3)})}
    )
    assert with_cautious_lr(narrow).learning_rate > careful.learning_rate  # better known, moved less


def test_the_spec_picks_lr_stars_median_unless_it_asks_for_the_cautious_pick(
    proxy_rec: Recommendation,
) -> None:
    interval = (1e-3 / 10**0.5, 1e-3 * 10**0.5)
    median = proxy_rec.model_copy(
        update={
            "learning_rate": 1e-3,
            "confidence": proxy_rec.confidence.model_copy(update={"lr_interval": interval}),
        }
    )
    assert picked_lr(median, "median") == median
    assert picked_lr(median, "cautious") == with_cautious_lr(median)


def test_the_search_space_exports_to_optuna_and_ray_tune(proxy_rec: Recommendation) -> None:
    space = proxy_rec.search_space()
    lr = space["optuna"]["learning_rate"]
    assert lr["log"] and lr["low"] < proxy_rec.band.lr_low and lr["high"] > proxy_rec.band.lr_high
    assert proxy_rec.batch_size in space["optuna"]["batch_size"]["choices"]
    assert space["ray_tune"]["learning_rate"]["type"] == "loguniform"
    assert set(space["ray_tune"]["batch_size"]["categories"]) == set(space["optuna"]["batch_size"]["choices"])


def test_transfer_keeps_batch_size_and_moves_lr_by_the_curvature_ratio(proxy_rec: Recommendation) -> None:
    target = transfer_to_target(proxy_rec, lambda_proxy=3.0, lambda_target=6.0)
    assert target.batch_size == proxy_rec.batch_size
    assert target.learning_rate == pytest.approx(proxy_rec.learning_rate / 2)
    assert target.band.lr_high == pytest.approx(proxy_rec.band.lr_high / 2)
    assert target.confidence.score < proxy_rec.confidence.score  # unconfirmed transfer
    # Unconfirmed, the answer is only as good as β: its interval of LR* holds β's band, 0.7–1.5.
    assert target.confidence.lr_interval is not None
    low, high = target.confidence.lr_interval
    assert low <= proxy_rec.learning_rate * 2**-1.5 * (1 + 1e-9)
    assert high >= proxy_rec.learning_rate * 2**-0.7 * (1 - 1e-9)


def test_target_runs_span_beta_from_zero_to_the_curvature_ratio() -> None:
    # λ_target 100× λ_proxy: β = 1 moves the LR down 2 decades; the runs cover that and the LR as is.
    low, middle, high = confirmation_lrs(1e-2, lambda_proxy=1.0, lambda_target=100.0, beta=1.0)
    assert (low, middle, high) == pytest.approx((1e-4, 1e-3, 1e-2))
    # Curvature alike: a quarter decade either side of the proxy's LR, a loss difference short runs show.
    assert confirmation_lrs(1e-2, 1.0, 1.0) == pytest.approx([1e-2 * 10**-0.25, 1e-2, 1e-2 * 10**0.25])


def test_a_target_run_past_the_edge_is_added_only_when_the_best_lr_is_an_end() -> None:
    falling = [(1e-3, 3.0), (3e-3, 2.8), (1e-2, 2.6)]  # still falling at the highest LR tried
    assert past_the_edge(falling, batch_size=8) == pytest.approx(1e-2 * 10 / 3)
    assert past_the_edge([(1e-3, 2.5), (3e-3, 2.8), (1e-2, None)], batch_size=8) == pytest.approx(1e-3 / 3)
    assert past_the_edge([(1e-3, 2.9), (3e-3, 2.6), (1e-2, 2.8)], batch_size=8) is None  # a bowl


def test_the_model_ratio_is_measured_at_equal_examples_and_scales_the_proxys_answer(
    proxy_rec: Recommendation,
) -> None:
    # The target's bowl bottoms out at 4e-4 where the proxy's LR* at the same rung was 1e-3: ratio 0.4.
    runs = [(lr, 2.0 + 0.3 * math.log10(lr / 4e-4) ** 2) for lr in (2e-4, 4e-4, 8e-4)]
    ratio = measured_model_ratio(1e-3, proxy_rec.batch_size, 96, runs)
    assert ratio is not None and ratio.kind == "quadratic" and ratio.ratio == pytest.approx(0.4, rel=1e-6)
    assert measured_model_ratio(1e-3, 8, 96, [(1e-3, None)]) is None  # every run diverged
    # The curvature ratio (λ 2×: LR ÷ 2) is overruled by the measurement.
    confirmed = transfer_to_target(
        proxy_rec, lambda_proxy=3.0, lambda_target=6.0, confirmations=runs, model_ratio=ratio
    )
    assert confirmed.learning_rate == pytest.approx(proxy_rec.learning_rate * 0.4)
    assert confirmed.confidence.score == proxy_rec.confidence.score
    assert confirmed.evidence["transfer"]["model_ratio"]["examples"] == 96
    assert "put the target's LR* at 0.0004 against the proxy's 0.001" in " ".join(confirmed.reasoning)
    assert proxy_rec.confidence.lr_interval is not None and confirmed.confidence.lr_interval is not None
    width = math.log10(proxy_rec.confidence.lr_interval[1] / proxy_rec.confidence.lr_interval[0])
    assert math.log10(
        confirmed.confidence.lr_interval[1] / confirmed.confidence.lr_interval[0]
    ) == pytest.approx(width)  # runs on the target measured the move: β's band no longer matters


def test_other_methods_are_derived_through_lambda_ratios_with_lower_confidence(
    proxy_rec: Recommendation,
) -> None:
    # arXiv 2602.04998: ~12×
    pissa = derive_method(proxy_rec, "pissa", lambda_measured=1.0, lambda_method=12.0)
    assert pissa.method == "pissa" and pissa.derived
    assert pissa.learning_rate == pytest.approx(proxy_rec.learning_rate / 12)
    assert pissa.confidence.score < proxy_rec.confidence.score
    assert pissa.lora_plus_ratio is None and pissa.predicted_eval_loss is None
    assert "derived" in pissa.reasoning[-1]
    # The band `advisor check` reads holds every LR β's band (0.7–1.5) gives: 12^-1.5 … 12^-0.7 of the LR.
    lowest, highest = proxy_rec.learning_rate * 12**-1.5, proxy_rec.learning_rate * 12**-0.7
    assert pissa.band.lr_low <= lowest * (1 + 1e-9) and pissa.band.lr_high >= highest * (1 - 1e-9)


def test_the_recommendation_round_trips_through_json(proxy_rec: Recommendation) -> None:
    data = proxy_rec.model_dump(mode="json")
    assert data["batch_size"] == 32 and "learning_rate" in data
    assert Recommendation.model_validate(data) == proxy_rec


def test_a_best_batch_at_the_edge_of_the_candidates_is_said_in_plain_words() -> None:
    observations = [
        Observation(b, lr, 2.0 + 0.01 * math.log2(b / 8) + 0.08 * math.log10(lr / 1e-3) ** 2)
        for b in (8, 16)
        for lr in lr_grid(1e-3)
    ]
    fit = fit_surface(observations)
    assert isinstance(fit, SurfaceFit)
    rec = build_recommendation(
        fit, None, method="lora", cost=Cost(proxy_seconds=1.0, examples_seen=1, runs=1)
    )
    assert rec.batch_size == 8 and any("smallest candidate batch size" in s for s in rec.reasoning)
    assert rec.confidence.score <= 0.5  # an open edge halves the confidence
