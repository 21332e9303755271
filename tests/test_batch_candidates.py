"""Candidate batch sizes that come from the run: derived from the training split, the real run's length and
its devices when the spec lists none, and extended a power of two past an edge that B* lands on."""

from __future__ import annotations

import json
from typing import Any

from advisor.jobs.control import JobControl
from advisor.jobs.functions import run_synthetic_study
from advisor.science.planner import (
    MIN_REAL_RUN_STEPS,
    batch_candidates,
    batch_edge_limit,
    batch_grid_reasoning,
    batch_past_edge,
    plan_study,
)
from advisor.science.study_plan import StudyPlan
from advisor.specs import StudySpec, parse_spec
from advisor.study.answer import batch_edge, rung_fits
from advisor.study.halving import BATCH_EXTENSION_LRS, successive_halving
from advisor.study.ledger import Ledger
from advisor.study.synthetic import Surface, SyntheticRunner


def spec(**fields: Any) -> StudySpec:
    return parse_spec({"model": "org/model", "dataset": {"path": "data.jsonl"}, **fields})


def derived(n_train: int, **training: Any) -> list[int]:
    return batch_candidates(spec(training=training), n_train).sizes


# 1. Derived candidates --------------------------------------------------------------------------------------


def test_without_batch_sizes_the_spec_leaves_them_to_be_derived_and_stores_as_valid_json() -> None:
    fresh = spec()
    assert fresh.batch_sizes is None
    assert parse_spec(json.loads(fresh.model_dump_json())).batch_sizes is None
    old_record = {
        **fresh.model_dump(mode="json"),
        "batch_sizes": [8, 16, 32, 64],
    }  # stored before this change
    assert parse_spec(old_record).batch_sizes == [8, 16, 32, 64]


def test_candidates_run_from_one_example_per_device_up_to_the_largest_batch_with_enough_real_steps() -> None:
    assert MIN_REAL_RUN_STEPS == 54  # rung 0 of a halving to the real run's length: 6 steps of the largest
    # 2,000 examples, one epoch: B = 32 leaves the real run 62 steps, B = 64 would leave 31.
    assert derived(2_000) == [1, 2, 4, 8, 16, 32]
    assert derived(1_000) == [1, 2, 4, 8, 16]  # 16 → 62 steps
    # Three epochs allow up to B = 111: the six smallest of the ladder are kept (a budget drops the largest).
    assert derived(2_000, epochs=3) == [1, 2, 4, 8, 16, 32]
    # max_steps counts the real run's examples at its batch: 100 × 16 = 1,600 examples allow B ≤ 29.
    assert derived(2_000, max_steps=100, batch_size=16, devices=2) == [2, 4, 8, 16]


def test_a_data_parallel_run_never_gets_a_candidate_below_its_device_count() -> None:
    assert derived(100_000, devices=8) == [8, 16, 32, 64, 128, 256]
    assert derived(2_000, devices=3) == [3, 6, 12, 24]  # multiples of the devices: 24 → 83 steps


def test_data_too_short_for_enough_steps_still_compares_two_batch_sizes() -> None:
    assert derived(100) == [1, 2]
    assert derived(10, devices=4) == [4, 8]


def test_the_real_runs_batch_is_always_a_derived_candidate() -> None:
    assert derived(5_000, batch_size=24) == [1, 2, 4, 8, 16, 24, 32]
    # A real batch above the six smallest moves the window up to it.
    assert derived(100_000, batch_size=256) == [8, 16, 32, 64, 128, 256]
    # ... and one that leaves the real run few steps is compared all the same.
    assert derived(1_000, batch_size=128) == [1, 2, 4, 8, 16, 128]


def test_an_explicit_list_is_used_as_given() -> None:
    listed = spec(batch_sizes=[64, 8, 8], training={"batch_size": 16})
    assert listed.batch_sizes == [8, 16, 64]  # sorted, deduplicated, the real run's batch added (as before)
    candidates = batch_candidates(listed, 2_000)
    assert candidates.sizes == [8, 16, 64] and not candidates.derived
    plan = plan_study(listed, n_train=2_000)
    assert plan.batch_sizes == [8, 16, 64] and "derived" not in plan.describe()
    assert batch_past_edge(plan, "low") is None and batch_past_edge(plan, "high") is None


def test_the_plan_says_which_batch_sizes_it_derived_and_from_what() -> None:
    plan = plan_study(spec(training={"epochs": 3}), n_train=2_000)
    assert plan.batch_sizes == [1, 2, 4, 8, 16, 32]
    assert "batch sizes [1, 2, 4, 8, 16, 32] (derived from 2,000 examples × 3 epochs on 1 device)" in (
        plan.describe()
    )
    said = " ".join(batch_grid_reasoning(plan, 4, None))
    assert "derived from 2,000 examples × 3 epochs on 1 device" in said and "B ≤ 111" in said


def test_the_synthetic_job_runs_a_spec_without_batch_sizes() -> None:
    payload = {"spec": spec(lr_range=[1e-5, 1e-2]).model_dump(mode="json"), "seconds_per_run": 0.0}
    result = run_synthetic_study(payload, JobControl())
    assert {r.config.batch_size for r in result.runs} == {1, 2, 4, 8, 16, 32}  # 2,000 nominal examples


# 2. Extending past an edge ----------------------------------------------------------------------------------


def test_an_edge_extends_by_a_power_of_two_within_the_devices_the_real_runs_steps_and_the_budget() -> None:
    plan = plan_study(spec(training={"batch_size": 64}), n_train=20_000)  # B ≤ 370
    assert plan.batch_sizes == [2, 4, 8, 16, 32, 64] and plan.rungs[0].examples % 128 == 0
    assert batch_past_edge(plan, "low") == 1 and batch_past_edge(plan, "high") == 128
    plan.dropped_batch_sizes = [128]
    assert batch_edge_limit(plan, "high") == "the budget left B = 128 out of the plan"
    on_two = plan_study(spec(training={"devices": 2}), n_train=20_000)
    assert on_two.batch_sizes[0] == 2 and batch_past_edge(on_two, "low") is None
    assert (
        batch_edge_limit(on_two, "low")
        == "B = 2 is already one example per device on the real run's 2 devices"
    )
    short = plan_study(spec(training={"epochs": 3}), n_train=2_000)  # B ≤ 111
    short.batch_sizes = [*short.batch_sizes, 64]
    assert batch_edge_limit(short, "high") == (
        f"B = 128 would leave the real run fewer than {MIN_REAL_RUN_STEPS} optimizer steps"
    )


def bowl_surface(best_batch: int) -> Surface:
    """A bowl in log LR around LR*(B) = 2e-4·√(B/8) at any length, deepest at `best_batch` and 0.02 higher
    per doubling away from it; a second seed measures a little noise."""
    return Surface(
        floor=2.0,
        width=0.1,
        best_batch=best_batch,
        batch_cost=0.02,
        length_exponent=0.0,
        slow=0.0,
        noise=5e-4,
    )


def halve(study_spec: StudySpec, n_train: int, best_batch: int) -> tuple[StudyPlan, str | None]:
    """The plan after a successive halving on `bowl_surface(best_batch)`, and the batch edge B* sits on in the
    answer's fit (None inside)."""
    runner = SyntheticRunner(bowl_surface(best_batch), train_examples=n_train)
    plan = plan_study(study_spec, n_train=n_train)
    ledger = Ledger(0, None, budget_examples=plan.budget_examples)
    halving = successive_halving(runner, study_spec, plan, ledger)
    return halving.plan, batch_edge(rung_fits(halving.by_rung, halving.plan.batch_sizes))


BIG_BUDGET = {"proxy_seconds": None, "proxy_examples": 10**7}


def test_b_star_on_the_smallest_derived_candidate_extends_the_batch_grid_below_it() -> None:
    """The real run's B = 64 puts the candidates at 2 … 64; the best batch is 1, so B* = 2 sits on the edge at
    the first rung, and the study tries B = 1 at LRs around LR*(2)."""
    study_spec = spec(training={"batch_size": 64}, budget=BIG_BUDGET)
    plan, edge = halve(study_spec, 20_000, best_batch=1)
    assert plan.batch_origin is not None and plan.batch_origin.sizes == [2, 4, 8, 16, 32, 64]
    assert plan.extended_batch_sizes == [1] and plan.batch_sizes == [1, 2, 4, 8, 16, 32, 64]
    assert edge is None  # B* = 1: no smaller batch exists, so no edge is left open
    said = " ".join(batch_grid_reasoning(plan, 1, edge))
    assert "extended them to [1]" in said and "still sits" not in said  # B = 1: nothing smaller exists


def test_b_star_on_the_largest_derived_candidate_extends_until_the_real_run_would_lack_steps() -> None:
    """2,000 examples × 3 epochs allow B ≤ 111: the candidates stop at 32 (the six smallest), B* = 32 at the
    top edge adds 64, and B* = 64 stays on the edge, as 128 would leave the real run 46 steps."""
    study_spec = spec(training={"epochs": 3}, budget=BIG_BUDGET)
    plan, edge = halve(study_spec, 2_000, best_batch=256)
    assert plan.extended_batch_sizes == [64] and edge == "high"
    assert len([c for c in plan.configs if c[0] == 64]) >= BATCH_EXTENSION_LRS
    said = " ".join(batch_grid_reasoning(plan, 64, edge))
    assert "extended them to [64]" in said
    assert "B* = 64 still sits on the largest batch size compared: B = 128 would leave the real run" in said


def test_an_explicit_list_keeps_its_edge() -> None:
    study_spec = spec(batch_sizes=[2, 4, 8, 16, 32, 64], budget=BIG_BUDGET)
    plan, edge = halve(study_spec, 20_000, best_batch=1)
    assert plan.extended_batch_sizes == [] and plan.batch_sizes == [2, 4, 8, 16, 32, 64] and edge == "low"
    assert batch_grid_reasoning(plan, 2, edge) == []  # the surface's own sentence says to add a batch
