"""The response-surface fits, on synthetic loss surfaces whose optimum is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from advisor.science.fits import (
    GRID_STEP,
    KAPPA_BOUNDS,
    KAPPA_PRIOR,
    BootstrapSummary,
    GridEdge,
    Observation,
    SurfaceFit,
    bootstrap_optimum,
    cautious_offset,
    confidence_score,
    fit_curve,
    fit_surface,
    shrink_kappa,
    truncated_normal_mean,
)
from advisor.science.length_scaling import (
    LogMeasurement,
    bowl_coefficient,
    loglog_line,
    lr_star_sd,
    vertex_of_pair,
)
from advisor.science.lr_grid import lr_grid
from advisor.science.recommendation import NoRecommendation

BATCHES = [8, 16, 32, 64]
TRUE_KAPPA = 0.5
TRUE_BEST_BATCH = 32


def true_lr_star(batch: int, lr_at_16: float = 1e-3) -> float:
    return lr_at_16 * (batch / 16) ** TRUE_KAPPA


def bowl(batch: int, lr: float, *, lr_at_16: float = 1e-3, curvature: float = 0.08) -> float:
    """Loss: a parabola in log10 LR around LR*(B) ∝ B^0.5, lowest at B = 32 (2.0)."""
    batch_penalty = 0.01 * abs(math.log2(batch / TRUE_BEST_BATCH))
    return 2.0 + batch_penalty + curvature * (math.log10(lr) - math.log10(true_lr_star(batch, lr_at_16))) ** 2


def surface(
    grid: list[float], *, noise: float = 0.0, seeds: int = 1, rng_seed: int = 0, **bowl_args: float
) -> list[Observation]:
    rng = np.random.default_rng(rng_seed)
    return [
        Observation(b, lr, bowl(b, lr, **bowl_args) + noise * rng.standard_normal(), seed=s)
        for b in BATCHES
        for lr in grid
        for s in range(seeds)
    ]


def fitted(observations: list[Observation]) -> SurfaceFit:
    result = fit_surface(observations)
    assert isinstance(result, SurfaceFit), result
    return result


def decades_between(a: float, b: float) -> float:
    return abs(math.log10(a / b))


def test_clean_bowl_recovers_lr_star_per_batch_and_kappa() -> None:
    fit = fitted(surface(lr_grid(1e-3)))
    assert fit.batch_size == TRUE_BEST_BATCH
    for batch, curve in fit.curves.items():
        assert decades_between(curve.lr_star, true_lr_star(batch)) < GRID_STEP
    assert fit.kappa is not None and fit.kappa.kappa == pytest.approx(TRUE_KAPPA, abs=0.05)
    assert fit.loss == pytest.approx(2.0, abs=1e-3)
    assert fit.edges == []


def bowls_at(lr_stars: dict[int, float], *, curvature: float, noise: float) -> list[Observation]:
    """Two seeds of a parabola in log10 LR per batch size, around the given LR*(B)."""
    rng = np.random.default_rng(0)
    return [
        Observation(
            b, lr, 2.0 + curvature * math.log10(lr / star) ** 2 + noise * rng.standard_normal(), seed=s
        )
        for b, star in lr_stars.items()
        for lr in lr_grid(3e-4)
        for s in range(2)
    ]


def test_a_clean_kappa_over_four_batch_sizes_is_kept() -> None:
    runs = surface(lr_grid(1e-3), noise=0.002, seeds=2)
    kappa = shrink_kappa(runs, fitted(runs))
    assert kappa is not None and kappa.sd is not None and kappa.sd < 0.15
    assert kappa.rule_kappa == pytest.approx(TRUE_KAPPA, abs=0.06)  # the data outweigh the prior's 0.7


def test_a_wild_kappa_from_two_noisy_optima_is_pulled_towards_the_prior() -> None:
    # LR* half a decade lower at B = 16 than at 8 (κ ≈ −1.7), in shallow, noisy bowls: LR* is uncertain
    runs = bowls_at({8: 1e-3, 16: 3e-4}, curvature=0.02, noise=0.01)
    kappa = shrink_kappa(runs, fitted(runs))
    assert kappa is not None and kappa.kappa < -1.0 and kappa.sd is not None and kappa.sd > 0.3
    assert kappa.kappa < kappa.rule_kappa < KAPPA_PRIOR
    assert abs(kappa.rule_kappa - KAPPA_PRIOR) < abs(kappa.rule_kappa - kappa.kappa)  # mostly the prior


def test_two_batch_sizes_an_octave_apart_never_outweigh_the_prior_alone() -> None:
    sharp = bowls_at({8: 1e-3, 16: 3e-4}, curvature=0.08, noise=0.001)
    shallow = bowls_at({8: 1e-3, 16: 3e-4}, curvature=0.02, noise=0.01)
    clean, noisy = shrink_kappa(sharp, fitted(sharp)), shrink_kappa(shallow, fitted(shallow))
    assert clean is not None and noisy is not None and clean.sd is not None
    # Optima known to a quarter-decade grid step (±0.072 decades) leave κ ± 0.34 over one octave of B.
    assert clean.sd == pytest.approx(0.072 / (math.log10(2) / math.sqrt(2)), rel=0.02)
    assert clean.kappa < clean.rule_kappa < noisy.rule_kappa < KAPPA_PRIOR  # cleaner data move it further


@pytest.mark.parametrize(
    ("lr_stars", "bound"),
    [
        ({8: 2e-4, 16: 1.5e-3}, 1.0),  # LR* 7.5 times higher an octave up: κ ≈ 2.9 measured
        ({8: 1.5e-3, 16: 2e-4}, 0.0),  # 7.5 times lower: κ ≈ −2.9
    ],
)
def test_the_rule_keeps_kappa_between_flat_and_linear(lr_stars: dict[int, float], bound: float) -> None:
    """At equal examples seen, LR*(B) can be flat (curvature caps the LR) or grow as fast as B (the linear
    scaling rule), not faster and not falling: a slope outside comes from noisy optima, and the rule stays
    inside however clean the bowls."""
    runs = bowls_at(lr_stars, curvature=0.08, noise=0.001)
    kappa = shrink_kappa(runs, fitted(runs))
    assert kappa is not None and abs(kappa.kappa) > 2.5
    assert KAPPA_BOUNDS[0] < kappa.rule_kappa < KAPPA_BOUNDS[1]
    assert abs(kappa.rule_kappa - bound) < abs(KAPPA_PRIOR - bound)  # the data still pull it their way


def test_a_truncated_normal_mean_stays_inside_its_bounds() -> None:
    assert truncated_normal_mean(0.5, 0.2, (0.0, 1.0)) == pytest.approx(0.5)  # symmetric: unmoved
    assert 0.8 < truncated_normal_mean(1.43, 0.265, (0.0, 1.0)) < 0.95
    assert truncated_normal_mean(50.0, 0.1, (0.0, 1.0)) == 1.0  # no mass inside: the nearer bound


def test_band_holds_every_batch_size_within_epsilon_and_brackets_lr_star() -> None:
    fit = fit_surface(surface(lr_grid(1e-3)), epsilon_rel=0.006)
    assert isinstance(fit, SurfaceFit)
    # ε = 0.012: B = 16 and 64 are 0.01 worse than B* = 32 (inside), B = 8 is 0.02 worse (outside). An ε of
    # exactly 0.01 would put 16 and 64 on the boundary, where the fit's rounding decides.
    assert {e.batch_size for e in fit.band} == {16, 32, 64}
    best = next(e for e in fit.band if e.batch_size == TRUE_BEST_BATCH)
    assert best.lr_low < true_lr_star(TRUE_BEST_BATCH) < best.lr_high


def test_noisy_surface_bootstrap_interval_covers_the_true_lr_star() -> None:
    observations = surface(lr_grid(1e-3), noise=0.004, seeds=2, rng_seed=3)
    fit = fitted(observations)
    summary = bootstrap_optimum(observations, fit, replicates=150)
    low, high = summary.lr_interval
    assert low <= true_lr_star(fit.batch_size) <= high
    assert decades_between(fit.learning_rate, true_lr_star(fit.batch_size)) < 2 * GRID_STEP
    assert fit.noise_sd == pytest.approx(0.004, rel=0.5)  # measured from the two seeds


def test_flat_surface_gives_low_confidence_and_a_wide_band() -> None:
    grid = lr_grid(1e-3)
    observations = surface(grid, noise=0.0005, curvature=0.0)
    fit = fitted(observations)
    summary = bootstrap_optimum(observations, fit, replicates=100)
    best = next(e for e in fit.band if e.batch_size == fit.batch_size)
    assert fit.is_flat
    assert decades_between(best.lr_low, best.lr_high) >= 1.5  # most of the 2-decade grid
    assert confidence_score(fit, summary) <= 0.2


def test_optimum_beyond_the_grid_is_reported_as_an_edge() -> None:
    grid = lr_grid(1e-3)
    fit = fitted(surface(grid, lr_at_16=3e-2))  # LR* far above the grid's top (2e-3 … 1e-2)
    assert GridEdge("lr", "high", TRUE_BEST_BATCH) in fit.edges
    assert fit.learning_rate == pytest.approx(max(grid))  # no extrapolation beyond what was tried


def test_an_optimum_on_the_edge_leaves_its_interval_open_a_grid_step_beyond_it() -> None:
    grid = lr_grid(1e-3)
    observations = surface(grid, lr_at_16=3e-2, noise=0.002, seeds=2, rng_seed=1)
    fit = fitted(observations)
    summary = bootstrap_optimum(observations, fit, replicates=50)
    low, high = summary.lr_interval
    # Every resample puts LR* on the highest LR tried; the optimum may lie at least a step above it.
    assert low <= max(grid) * (1 + 1e-9) and decades_between(high, max(grid)) == pytest.approx(GRID_STEP)


def test_a_curve_without_a_bowl_knows_lr_star_to_half_a_grid_step_either_side() -> None:
    # Best in the middle of a zig-zag, no convex bowl around it: the best grid point is all there is.
    zigzag = [2.1, 2.04, 2.1, 2.0, 2.1, 2.04, 2.1]
    points = [(1e-3 * 10 ** (GRID_STEP * k), loss) for k, loss in enumerate(zigzag, start=-3)]
    observations = [Observation(16, lr, loss, seed=s) for lr, loss in points for s in (0, 1)]
    fit = fitted(observations)
    assert fit.curves[16].kind == "grid" and fit.curves[16].edge is None
    summary = bootstrap_optimum(observations, fit, replicates=30)
    assert summary.lr_width_decades == pytest.approx(GRID_STEP)  # resamples alone: a zero-width interval


def test_diverged_runs_above_the_optimum_bound_it_without_an_edge() -> None:
    grid = lr_grid(1e-3)
    observations = [
        o if o.learning_rate < 5e-3 else Observation(o.batch_size, o.learning_rate, None)
        for o in surface(grid)
    ]
    fit = fitted(observations)
    assert not any(e.axis == "lr" and e.side == "high" for e in fit.edges)
    assert fit.n_diverged == 4 * sum(lr >= 5e-3 for lr in grid)


def test_best_batch_size_at_the_smallest_tried_is_a_batch_edge() -> None:
    observations = [o for o in surface(lr_grid(1e-3)) if o.batch_size >= 32] + [Observation(64, 1e-3, 5.0)]
    fit = fitted([o for o in observations if not (o.batch_size == 64 and o.loss == 5.0)])
    assert fit.batch_size == 32 and GridEdge("batch", "low") in fit.edges


def test_all_runs_diverged_is_a_no_recommendation_with_the_reason() -> None:
    observations = [Observation(b, lr, None) for b in BATCHES for lr in lr_grid(1e-3)]
    result = fit_surface(observations)
    assert isinstance(result, NoRecommendation)
    assert result.kind == "all_diverged"
    assert "diverged" in result.reason and "lowest learning rate" in result.reason
    assert result.fix


def test_no_runs_is_a_no_recommendation() -> None:
    assert isinstance(fit_surface([]), NoRecommendation)


def test_a_precise_measurement_at_a_longer_run_pins_the_lr_path_and_a_noisy_one_barely_moves_it() -> None:
    # LR* is 0.1 at 300 examples (±0.1 decade) and truly falls as N^-0.8; the real run sees 3000.
    anchor = LogMeasurement(300, -1.0, 0.1)
    at_900 = -1.0 - 0.8 * math.log10(3)
    precise = loglog_line(anchor, [LogMeasurement(900, at_900, 0.05)], prior_exponent=-0.25, prior_sd=0.3)
    noisy = loglog_line(anchor, [LogMeasurement(900, at_900, 1.0)], prior_exponent=-0.25, prior_sd=0.3)
    prior_only = loglog_line(anchor, [], prior_exponent=-0.25, prior_sd=0.3)
    assert prior_only.exponent == pytest.approx(-0.25) and prior_only.at(300) == pytest.approx((-1.0, 0.1))
    assert precise.exponent < -0.5 < noisy.exponent < -0.25
    truth = -1.0 - 0.8
    (precise_mean, precise_sd), (noisy_mean, _) = precise.at(3000), noisy.at(3000)
    assert abs(precise_mean - truth) < abs(noisy_mean - truth) and abs(precise_mean - truth) < 2 * precise_sd
    assert precise_sd < prior_only.at(3000)[1]  # measuring narrows the answer at the real run


def test_a_measurement_at_the_anchor_length_sharpens_the_anchor_not_the_exponent() -> None:
    path = loglog_line(LogMeasurement(300, -1.0, 0.2), [LogMeasurement(300, -1.2, 0.2)], -0.25, 0.3)
    assert path.intercept == pytest.approx(-1.1) and path.exponent == pytest.approx(-0.25)
    assert path.at(300)[1] == pytest.approx(0.2 / math.sqrt(2))


def test_two_runs_and_a_known_bowl_width_locate_the_vertex() -> None:
    def loss(lr: float) -> float:
        return 2.0 + 0.3 * (math.log10(lr) + 1.4) ** 2  # LR* = 10^-1.4 ≈ 0.04

    pair = [(lr, loss(lr)) for lr in (0.0356, 0.112)]
    found = vertex_of_pair(pair[0], pair[1], bowl=0.3, noise_sd=0.01, examples=900)
    assert found.log_value == pytest.approx(-1.4) and found.examples == 900
    assert found.sd == pytest.approx(
        max(0.01 * math.sqrt(2) / (2 * 0.3 * 0.5), GRID_STEP / math.sqrt(12)), rel=0.01
    )
    far = vertex_of_pair(pair[0], (0.112, loss(0.112) + 1.0), bowl=0.3, noise_sd=0.01, examples=900)
    assert far.log_value == pytest.approx(math.log10(0.0356) - 0.25, abs=0.01)  # at most half a spacing out
    assert far.sd >= math.log10(0.112 / 0.0356) / 2  # a clamped vertex is known only to half a spacing


def test_the_bowl_width_comes_from_the_quadratic_or_from_three_points_around_the_best() -> None:
    grid = [1e-3 * 10 ** (k / 4) for k in range(-2, 3)]
    quadratic = fit_curve(16, [(lr, 2.0 + 0.2 * math.log10(lr / 1e-3) ** 2) for lr in grid])
    assert quadratic is not None and bowl_coefficient(quadratic) == pytest.approx(0.2)
    three = fit_curve(16, [(1e-3, 2.1), (1.78e-3, 2.0), (3.16e-3, 2.1)], noise_sd=None)
    assert three is not None and bowl_coefficient(three) == pytest.approx(0.1 / 0.25**2, rel=0.02)
    edge = fit_curve(16, [(1e-3, 2.0), (1.78e-3, 2.1), (3.16e-3, 2.15)])  # concave, best at an end
    assert edge is not None and bowl_coefficient(edge) is None  # the best is the lowest LR: no bowl seen


def test_lr_star_spread_comes_from_the_bootstrap_interval_but_never_beats_the_grid_resolution() -> None:
    observations = surface(lr_grid(1e-3), noise=0.004, seeds=2, rng_seed=3)
    summary = bootstrap_optimum(observations, fitted(observations), replicates=100)
    assert lr_star_sd(summary) == pytest.approx(max(summary.lr_width_decades / 3.29, 0.0722), rel=0.01)
    exact = BootstrapSummary((1e-3, 1e-3), (2.0, 2.0), {32: 1.0}, replicates=100, level=0.9)
    assert lr_star_sd(exact) == pytest.approx(GRID_STEP / math.sqrt(12))  # known to a grid point, no better


def _expected_excess(pick: float, sd: float, asymmetry: float) -> float:
    """E[excess loss] of a pick `pick` decades from LR*'s median, by quadrature over LR* ~ N(0, sd²), on a
    bowl of curvature 1 below LR* and `asymmetry` above."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(201)
    d = pick - sd * nodes  # pick minus LR*
    return float(np.sum(weights * np.where(d > 0, asymmetry, 1.0) * d**2) / np.sum(weights))


@pytest.mark.parametrize("asymmetry", [2.0, 3.0, 10.0])
def test_the_cautious_pick_minimises_the_expected_loss_on_a_bowl_steeper_above(asymmetry: float) -> None:
    sd = 0.3
    offset = cautious_offset(sd, asymmetry)
    grid = np.linspace(-3 * sd, sd, 801)
    brute = grid[np.argmin([_expected_excess(u, sd, asymmetry) for u in grid])]
    assert offset < 0 and offset == pytest.approx(brute, abs=2 * (grid[1] - grid[0]))


def test_the_cautious_move_grows_with_the_uncertainty_and_vanishes_without_it() -> None:
    assert cautious_offset(0.2) == pytest.approx(2 * cautious_offset(0.1))
    assert cautious_offset(0.0) == 0.0
    assert cautious_offset(0.3, asymmetry=1.0) == 0.0  # a symmetric bowl: the median is best
