"""The study planner: the LR grid, its extension at an edge, the halving rungs and the cost up front."""

from __future__ import annotations

import itertools
import math
import re

import pytest

from advisor.science.fits import Observation, SurfaceFit, fit_surface
from advisor.science.lr_grid import CurvaturePrior, extend_lr_grid, extension_bounds, lr_grid
from advisor.science.planner import (
    CONFIRM_RUNS,
    HORIZON_BRACKET_RUNS,
    HORIZON_MIN_RATIO,
    TOP_EXTRAS,
    TREND_LRS,
    plan_study,
    rung_schedule,
)
from advisor.science.study_plan import CONFIRM_EXTENSIONS, HORIZON_RUNS
from advisor.specs import StudySpec, parse_spec


def spec(**fields: object) -> StudySpec:
    return parse_spec({"model": "org/model", "dataset": {"path": "data.jsonl"}, **fields})


def quarter_decade_steps(grid: list[float]) -> bool:
    """Neighbours 10^0.25 apart (up to the 3 significant digits grid values are rounded to)."""
    return all(abs(math.log10(b / a) - 0.25) < 0.005 for a, b in itertools.pairwise(grid))


def test_lr_grid_has_four_points_per_decade_with_the_common_default_on_it() -> None:
    grid = lr_grid(2e-4)
    assert quarter_decade_steps(grid)
    assert 2e-4 in grid and len(grid) == 9  # ±1 decade


def test_a_curvature_prior_centres_the_grid() -> None:
    prior = CurvaturePrior(lambda_max=40.0, reference_lambda=4.0, reference_lr=2e-3, beta=1.0)
    assert prior.lr_centre() == pytest.approx(2e-4)  # 10× the curvature → 10× lower LR
    plan = plan_study(spec(), n_train=1000, prior=prior)
    middle = plan.learning_rates[len(plan.learning_rates) // 2]
    assert middle == pytest.approx(2e-4) and len(plan.learning_rates) == 9
    assert any("curvature prior" in note for note in plan.notes)


def test_without_a_prior_the_grid_is_wider() -> None:
    assert len(plan_study(spec(), n_train=1000).learning_rates) == 13  # ±1.5 decades


def test_a_narrow_user_lr_range_is_covered_whole() -> None:
    grid = plan_study(spec(lr_range=[1e-3, 1e-1]), n_train=1000).learning_rates
    assert grid[0] == pytest.approx(1.12e-3) and grid[-1] == pytest.approx(6.32e-2)
    assert len(grid) == 8  # the lattice points inside the range, 4 per decade


def test_optimum_on_the_grid_edge_makes_the_planner_extend_the_grid() -> None:
    grid = lr_grid(1e-3)
    bowl = [Observation(16, lr, 2.0 + 0.1 * (math.log10(lr) - math.log10(5e-2)) ** 2) for lr in grid]
    fit = fit_surface(bowl)
    assert isinstance(fit, SurfaceFit)
    (edge,) = [e for e in fit.edges if e.axis == "lr"]
    new = extend_lr_grid(grid, edge.side)
    assert edge.side == "high" and len(new) == 2 and min(new) > max(grid)
    assert quarter_decade_steps([max(grid), *new])


def test_extension_stops_at_the_bounds() -> None:
    assert extend_lr_grid([0.5, 0.89], "high", bounds=(1e-8, 1.0)) == []
    assert extend_lr_grid([2e-4, 3.56e-4], "low", steps=1) == [pytest.approx(1.12e-4)]


def test_extensions_reach_a_decade_past_either_end_of_the_users_lr_range() -> None:
    # The default range tops out at 1e-2; LoRA on SmolLM2-135M does best at 0.0112 (bench/real_llm.py).
    bounds = extension_bounds(spec())
    assert bounds == (pytest.approx(1e-7), pytest.approx(1e-1))
    assert extend_lr_grid([3.56e-3, 6.32e-3], "high", bounds=bounds) == [pytest.approx(0.0112), 0.02]
    assert extend_lr_grid([0.0356, 0.0632], "high", bounds=bounds) == []  # 0.112 is past the reach
    assert extension_bounds(spec(lr_range=[1e-3, 0.5])) == (pytest.approx(1e-4), 1.0)  # never past LR_BOUNDS


def test_a_measured_centre_near_the_top_of_lr_range_gets_a_grid_on_both_sides_of_it() -> None:
    # A stored study's answer of 0.0076 (the warm Swedish study on SmolLM2) against the default top, 1e-2.
    plan = plan_study(spec(), n_train=1000, lr_centre=0.0076)
    grid = plan.learning_rates
    assert grid[len(grid) // 2] == pytest.approx(6.32e-3) and len(grid) == 9  # ±1 decade, none clipped
    assert grid[-1] == pytest.approx(6.32e-2) and quarter_decade_steps(grid)


def test_a_measured_centre_stays_within_the_reach_of_extensions() -> None:
    grid = plan_study(spec(lr_range=[1e-4, 1e-2]), n_train=1000, lr_centre=5.0).learning_rates
    assert max(grid) <= extension_bounds(spec(lr_range=[1e-4, 1e-2]))[1] == pytest.approx(0.1)
    assert grid == [0.0112, 0.02, 0.0356, pytest.approx(0.0632)]  # centred on the reach's top, clipped there


def test_without_a_measured_centre_the_grid_stays_inside_the_users_lr_range() -> None:
    grid = plan_study(spec(lr_range=[1e-4, 1e-2], method="lora"), n_train=1000).learning_rates
    assert min(grid) >= 1e-4 and max(grid) <= 1e-2


def test_rungs_multiply_by_eta_and_are_multiples_of_the_largest_batch() -> None:
    rungs = rung_schedule(36, 6400, granularity=64)
    assert [r.examples for r in rungs] == [704, 2112, 6336]
    assert [r.configs for r in rungs] == [36, 12, 4]
    assert all(r.examples % 64 == 0 for r in rungs)


def test_the_plan_fits_the_budget_and_states_its_cost_up_front() -> None:
    roomy = plan_study(spec(), n_train=20_000, seconds_per_example=0.01, budget_seconds=10_000)
    tight = plan_study(spec(), n_train=20_000, seconds_per_example=0.01, budget_seconds=300)
    assert tight.estimated_seconds <= 300 < roomy.estimated_seconds
    assert roomy.estimated_examples < roomy.grid_examples / 2  # halving: a fraction of the full grid
    text = tight.describe()
    assert "Estimated cost" in text and f"{tight.estimated_runs} runs" in text


def test_a_short_budget_adds_horizon_runs_towards_the_real_runs_length() -> None:
    plan = plan_study(spec(), n_train=50_000, seconds_per_example=0.01, budget_seconds=600)
    assert plan.full_examples == 50_000 and plan.top_examples < 50_000 / 2
    # The pair, and a third reserved above it in case the loss still falls at the pair's upper LR.
    assert plan.horizon_runs == HORIZON_RUNS + HORIZON_BRACKET_RUNS and plan.horizon_examples is not None
    assert HORIZON_MIN_RATIO * plan.top_examples <= plan.horizon_examples <= plan.full_examples
    assert plan.dataset_sizes == [plan.top_examples, plan.horizon_examples]
    assert f"up to {plan.horizon_runs} horizon runs × {plan.horizon_examples} examples" in plan.describe()


def test_the_real_runs_length_is_max_steps_times_its_batch_when_max_steps_is_set() -> None:
    by_steps = spec(training={"max_steps": 300, "batch_size": 16, "epochs": 3})
    assert plan_study(by_steps, n_train=50_000).full_examples == 300 * 16  # max_steps replaces epochs
    assert plan_study(spec(training={"epochs": 3}), n_train=50_000).full_examples == 150_000


def small_task(examples: int) -> StudySpec:
    """The benchmark's shape: 900 training examples, 4 batch sizes, 2 decades of LR, a budget in examples."""
    return spec(
        batch_sizes=[4, 8, 16, 32],
        lr_range=[3e-3, 3e-1],
        budget={"proxy_examples": examples, "proxy_seconds": None},
    )


def test_every_plan_that_can_afford_it_reruns_the_top_configs_with_a_second_seed() -> None:
    roomy = plan_study(small_task(9000), n_train=900)
    assert roomy.top_extras == TOP_EXTRAS and roomy.trend_runs == 0  # the top rung reaches 576 of 900
    assert roomy.estimated_examples <= 9000


def test_second_seeds_come_first_then_horizon_runs_or_a_cheaper_trend_study_then_edge_runs() -> None:
    # 288 of 900 examples at the top rung: LR* has to be moved to the real run's length.
    tight = plan_study(small_task(4000), n_train=900)
    assert tight.top_extras == 2 and not tight.trend_runs and not tight.horizon_runs  # second seeds only
    middling = plan_study(small_task(4400), n_train=900)  # no room for 2 runs of 576: the subset study
    assert middling.trend_runs == TREND_LRS and middling.trend_examples == middling.top_examples // 3
    assert f"dataset-size trend of {TREND_LRS} runs" in middling.describe()
    pair = plan_study(small_task(5400), n_train=900)  # 2 runs of 768, where 3 would not reach 2 × 288
    assert pair.horizon_runs == HORIZON_RUNS and pair.horizon_examples == 768
    assert "up to" not in pair.describe()
    enough = plan_study(small_task(6000), n_train=900)  # 3 runs: the pair and one reserved above it
    assert enough.horizon_runs == HORIZON_RUNS + HORIZON_BRACKET_RUNS
    assert enough.horizon_examples is not None and enough.horizon_examples >= HORIZON_MIN_RATIO * 288
    roomy = plan_study(small_task(7000), n_train=900)
    assert roomy.horizon_examples == 900 and roomy.top_extras > 2  # the real run's length, an edge run too
    plans = ((tight, 4000), (middling, 4400), (pair, 5400), (enough, 6000), (roomy, 7000))
    assert all(p.estimated_examples <= b for p, b in plans)


def test_a_plan_that_moves_lr_star_by_the_prior_alone_says_what_budget_would_measure_it() -> None:
    # 288 of 900 examples at the top rung and no room for horizon runs: LR* moves by the prior γ.
    tight = plan_study(small_task(4000), n_train=900)
    [note] = [n for n in tight.notes if "more training examples of budget" in n]
    assert "by a prior γ alone" in note
    said = re.search(r"about (\d+) more training examples", note)
    assert said is not None
    more = int(said.group(1))
    assert 0 < more < 4000
    # With that much more the study reads LR* near the real run's length; with 10% less of it, not yet.
    measured = plan_study(small_task(4000 + more), n_train=900)
    assert measured.horizon_runs > 0 or measured.top_examples >= 450
    short = plan_study(small_task(4000 + int(0.9 * more)), n_train=900)
    assert short.horizon_runs == 0 and short.top_examples < 450
    # A plan with horizon runs, or one whose top rung reads the whole run, has nothing to add.
    for budget in (6000, 30000):
        notes = plan_study(small_task(budget), n_train=900).notes
        assert not any("more training examples" in n for n in notes)


def test_the_calibration_run_counts_against_an_examples_budget() -> None:
    spent = plan_study(small_task(4000), n_train=900, spent_examples=1000)
    assert spent.budget_examples == 3000 and spent.estimated_examples <= 3000


def test_a_sibling_proxy_trains_at_low_rank_and_is_confirmed_on_the_target() -> None:
    plan = plan_study(
        spec(proxy_model="org/small", rank=64),
        n_train=5_000,
        seconds_per_example=0.001,
        budget_seconds=10_000,
    )
    assert not plan.proxy_is_target and plan.proxy_rank == 8
    assert plan.confirm_lrs == 3


def test_a_sibling_study_keeps_a_quarter_of_its_budget_for_target_runs_at_a_rung_length() -> None:
    sibling = plan_study(small_task(6000).model_copy(update={"proxy_model": "org/small"}), n_train=900)
    on_target = plan_study(small_task(6000), n_train=900)
    halving = sibling.estimated_examples - sibling.confirm_lrs * sibling.confirm_examples
    assert halving <= 0.75 * 6000 < on_target.estimated_examples
    # As long as the longest rung whose 3 runs and one past an edge fit the rest: compared at equal length.
    assert sibling.confirm_examples in {r.examples for r in sibling.rungs}
    assert (CONFIRM_RUNS + CONFIRM_EXTENSIONS) * sibling.confirm_examples <= 6000 - halving
    assert sibling.estimated_examples <= 6000
    assert f"3 target runs × {sibling.confirm_examples} examples at B*" in sibling.describe()


def test_under_a_seconds_budget_a_dearer_target_gets_shorter_runs() -> None:
    sibling = spec(proxy_model="org/small", batch_sizes=[4, 8, 16, 32], lr_range=[3e-3, 3e-1])
    timed = {"n_train": 900, "seconds_per_example": 0.01, "budget_seconds": 60.0}
    alike, dearer = (plan_study(sibling, **timed, target_cost_ratio=ratio) for ratio in (1.0, 8.0))
    assert dearer.confirm_examples < alike.confirm_examples
    target_seconds = dearer.confirm_lrs * dearer.confirm_examples * 8 * 0.01  # at 8× a proxy example
    assert target_seconds <= 0.25 * 60.0 and dearer.estimated_seconds <= 60.0


def test_a_budget_below_the_smallest_plan_leaves_out_the_largest_batch_and_says_so() -> None:
    # 4 batch sizes up to 32 need ≥ 2400 examples on 450: B = 32 sets rung 0 at 32 examples per config
    plan = plan_study(small_task(1400), n_train=450)
    assert plan.batch_sizes == [4, 8, 16] and plan.rungs[0].examples == 16
    assert plan.estimated_examples <= 1400 and len(plan.rungs) == 3  # a complete halving
    assert "the smallest plan with batch sizes [32]" in plan.describe() and plan.dropped_batch_sizes == [32]
    assert plan.dropped_batch_note(4) is None  # B* inside the kept sizes: nothing untried beyond it
    assert "[32] were left out" in str(plan.dropped_batch_note(16))


def test_a_budget_below_the_smallest_plan_with_two_batch_sizes_is_said_up_front() -> None:
    plan = plan_study(small_task(300), n_train=450)
    assert plan.batch_sizes == [4, 8] and plan.dropped_batch_sizes == [16, 32]
    assert plan.estimated_examples > 300
    assert "the halving will stop at the rung the budget reaches" in plan.describe()
