"""A whole study end to end on a tiny Llama: plan, successive halving, fits, a recommendation."""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import pytest
import torch

from advisor.cli.recommend import LogProgress, TerminalProgress, add_recommend, open_database, render
from advisor.jobs.functions import study_result_to_job_result
from advisor.records import CONFIRMATION_ROLE, HALVING_ROLE, RunStatus
from advisor.science.fits import Observation, SurfaceFit, fit_surface
from advisor.science.knowledge import SIZE_EXPONENT, ExponentPrior
from advisor.science.loss_forecast import LOSS_EXPONENT
from advisor.science.lr_grid import extension_bounds, lattice_index, lattice_lr
from advisor.science.planner import paused_runs_needed, plan_study
from advisor.science.recommendation import Cost, NoRecommendation, Recommendation
from advisor.science.study_plan import Rung, StudyPlan
from advisor.specs import BudgetSpec, StudySpec, parse_spec
from advisor.storage.models import Study
from advisor.study import StudyResult
from advisor.study.answer import UNMEASURED_NOISE, Fits, thin_data_caveat
from advisor.study.answer import recommend_from_rungs as answer_from_rungs
from advisor.study.curvature import ProbeLog, curvature_prior
from advisor.study.halving import loss_at, promote, successive_halving
from advisor.study.ledger import Ledger
from advisor.study.run_length import (
    TrendResult,
    bracketing_lr,
    deepest_bowl,
    horizon_lrs,
)
from advisor.study.run_length import apply_size_trend as _apply_size_trend
from advisor.study.run_length import forecast_real_run_loss as _forecast_real_run_loss
from advisor.study.runner import DataSummary, ShelfRoom
from proxy_runs.runner import TorchRunner, run_study
from proxy_runs.synthetic import corpus_of, instruction_records, write_jsonl
from proxy_runs.tiny import save_tiny_model


def recommend_from_rungs(
    fits: Fits, by_rung: dict[int, list[Observation]], *, spec: StudySpec, cost: Cost, evidence: dict
) -> Recommendation | NoRecommendation:
    """The study's answer from these rungs (`advisor.study.answer.recommend_from_rungs`'s recommendation)."""
    return answer_from_rungs(fits, by_rung, spec=spec, cost=cost, evidence=evidence).recommendation


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory: pytest.TempPathFactory) -> StudySpec:
    folder = tmp_path_factory.mktemp("study")
    records = instruction_records(160, seed=0)
    write_jsonl(records, folder / "data.jsonl")
    save_tiny_model(folder / "model", "llama", corpus_of(records), vocab_size=256, hidden=16)
    return parse_spec(
        {
            "model": str(folder / "model"),
            "dataset": {"path": str(folder / "data.jsonl")},
            "training": {"max_seq_len": 32},
            "batch_sizes": [4, 8],
            "lr_range": [1e-4, 1.0],
            "budget": {"proxy_seconds": None, "proxy_examples": 1200},  # the same plan on any machine
        }
    )


@pytest.fixture(scope="module")
def study(tiny_spec: StudySpec) -> tuple[StudyResult, list[tuple[int, int, str]]]:
    torch.set_num_threads(1)  # 2 shared cores: one thread is faster than two fighting
    seen: list[tuple[int, int, str]] = []
    result = run_study(tiny_spec, progress=lambda done, total, message: seen.append((done, total, message)))
    return result, seen


def test_a_tiny_study_recommends_an_lr_inside_the_searched_range(study: tuple[StudyResult, list]) -> None:
    result, _ = study
    rec = result.recommendation
    assert isinstance(rec, Recommendation), rec
    searched = [r.config.learning_rate for r in result.runs]
    assert min(searched) <= rec.learning_rate <= max(searched)
    assert rec.batch_size in {r.config.batch_size for r in result.runs}
    assert rec.cost.runs == len(result.runs) and rec.cost.examples_seen > 0
    # every candidate batch size was compared; the band says which were within ε (what `advisor check` uses)
    assert set(rec.band.batch_sizes) <= set(rec.band.compared_batch_sizes) == set(result.plan.batch_sizes)
    assert rec.confidence.lr_interval is not None  # and `advisor check` passes all of it
    assert (
        rec.band.lr_low <= rec.confidence.lr_interval[0] <= rec.confidence.lr_interval[1] <= rec.band.lr_high
    )
    assert "caution" not in rec.evidence  # the default lr_pick is LR*'s median, not a move below it


def test_the_answer_carries_the_untrained_loss_every_finished_run_ends_below(
    study: tuple[StudyResult, list],
) -> None:
    result, _ = study
    rec = result.recommendation
    assert isinstance(rec, Recommendation)
    base = rec.evidence["base_eval_loss"]  # outcomes reported above it are refused (tests/test_security.py)
    finished = [r.eval_loss for r in result.runs if r.status.value == "success" and r.eval_loss]
    assert finished and min(finished) < base
    assert rec.predicted_eval_loss is None or rec.predicted_eval_loss < base


def test_successive_halving_prunes_runs_and_reports_progress(study: tuple[StudyResult, list]) -> None:
    result, seen = study
    statuses = [r.status for r in result.runs]
    assert RunStatus.PRUNED in statuses
    assert len(seen) >= len(result.runs) and seen[-1][0] == len(result.runs)
    assert "Estimated cost" in seen[0][2]  # the plan and its cost are said up front


def test_configs_are_compared_at_equal_examples_seen(study: tuple[StudyResult, list]) -> None:
    result, _ = study
    first_rung = result.plan.rungs[0].examples
    pruned_first = [r for r in result.runs if r.examples_seen == first_rung]
    assert {r.config.batch_size for r in pruned_first} == set(result.plan.batch_sizes)
    assert all(loss_at(r, first_rung) is not None for r in pruned_first if r.status != RunStatus.DIVERGED)


def test_promoted_configs_resume_their_runs_and_the_study_pays_only_for_new_examples(
    study: tuple[StudyResult, list],
) -> None:
    result, _ = study
    assert result.plan.resumes_promotions and "resuming" in result.plan.describe()
    resumed = [r for r in result.runs if r.meta.get("resumed_from")]
    lower_rungs = [r.examples for r in result.plan.rungs[:-1]]
    assert resumed and all(r.meta["role"] == HALVING_ROLE for r in resumed)
    assert all(r.meta["resumed_from"]["examples_seen"] in lower_rungs for r in resumed)
    # the whole curve: a resumed run still reports the loss it had at the rung it paused at
    assert all(loss_at(r, r.meta["resumed_from"]["examples_seen"]) is not None for r in resumed)
    rec = result.recommendation
    assert isinstance(rec, Recommendation)
    assert rec.cost.examples_seen == sum(r.examples_trained for r in result.runs)
    assert rec.cost.examples_seen < sum(r.examples_seen for r in result.runs)


def test_a_halving_whose_paused_runs_wait_on_disk_in_a_shelf_of_the_promoted_third_measures_the_same(
    tiny_spec: StudySpec,
) -> None:
    """No memory and disk room for only the runs rung 1 promotes: the shelf keeps the lowest losses, every
    promoted config still resumes, and each rung measures what a shelf in memory measured, loss for loss."""
    runner = TorchRunner()
    data = runner.prepare(tiny_spec)
    plan = plan_study(tiny_spec, n_train=data.train_examples, pausable_runs=10**6)
    paused_bytes = runner.calibrate(tiny_spec, 4).checkpoint_bytes
    needed = paused_runs_needed(len(plan.configs))
    assert needed < len(plan.configs)  # the disk cannot hold all of rung 0

    def halving(room: ShelfRoom) -> tuple[dict[int, list[Observation]], list]:
        ledger = Ledger(0, None, budget_examples=10**9)
        return successive_halving(runner, tiny_spec, plan, ledger, room).by_rung, ledger.runs

    in_memory, _ = halving(ShelfRoom(memory_bytes=2**30))
    on_disk, runs = halving(ShelfRoom(memory_bytes=0, disk_bytes=needed * (paused_bytes + 4096)))

    def losses(by_rung: dict[int, list[Observation]]) -> dict[int, list[tuple[int, float, float | None]]]:
        return {k: [(o.batch_size, o.learning_rate, o.loss) for o in v] for k, v in by_rung.items()}

    assert losses(on_disk) == losses(in_memory)
    promoted = [
        r for r in runs if r.examples_seen > plan.rungs[0].examples and r.meta["role"] == HALVING_ROLE
    ]
    assert promoted and all(r.meta.get("resumed_from") for r in promoted)


def test_promotion_keeps_the_leader_and_its_lr_neighbours() -> None:
    grid = [1e-3, 2e-3, 4e-3, 8e-3]
    observations = [Observation(8, lr, loss) for lr, loss in zip(grid, [3.0, 2.5, 2.0, 2.6], strict=True)]
    observations.append(Observation(16, 4e-3, None))  # diverged: never promoted
    assert set(promote(observations, 1, grid)) == {(8, 4e-3), (8, 2e-3), (8, 8e-3)}


def test_recommend_json_has_batch_size_and_learning_rate_at_the_top(study: tuple[StudyResult, list]) -> None:
    result, _ = study
    data = json.loads(render(result.recommendation, as_json=True))
    assert data["batch_size"] == result.recommendation.batch_size  # type: ignore[union-attr]
    assert data["learning_rate"] > 0 and "search_space" in data and data["reasoning"]


def test_no_recommendation_renders_its_reason_in_json() -> None:
    answer = NoRecommendation(reason="all 8 runs diverged", kind="all_diverged", fix="lower lr_range")
    data = json.loads(render(answer, as_json=True))
    assert data["batch_size"] is None and data["no_recommendation"]["reason"] == "all 8 runs diverged"
    assert render(answer, as_json=False).startswith("no recommendation: all 8 runs diverged")


def sibling_pair_spec(tmp_path: Path, records: int, **fields: object) -> StudySpec:
    """A target (tiny Llama, hidden 32) at rank 16 with a sibling proxy half as wide, on instruction data."""
    data = instruction_records(records, seed=0)
    write_jsonl(data, tmp_path / "data.jsonl")
    save_tiny_model(tmp_path / "small", "llama", corpus_of(data), vocab_size=256, hidden=16)
    save_tiny_model(tmp_path / "big", "llama", corpus_of(data), vocab_size=256, hidden=32)
    return parse_spec(
        {
            "model": str(tmp_path / "big"),
            "proxy_model": str(tmp_path / "small"),
            "rank": 16,
            "dataset": {"path": str(tmp_path / "data.jsonl")},
            "training": {"max_seq_len": 32},
            "batch_sizes": [4, 8],
            **fields,
        }
    )


def test_a_sibling_proxys_lr_moves_by_the_ratio_target_runs_measure_at_one_of_its_rungs(
    tmp_path: Path,
) -> None:
    spec = sibling_pair_spec(
        tmp_path,
        96,
        lr_range=[1e-3, 1.0],
        # A seconds budget prices the target's runs by a calibration on it; the examples cap binds.
        budget={"proxy_seconds": 3600, "proxy_examples": 900},
    )
    result = run_study(spec)
    calibrations = [r for r in result.runs if r.meta["role"] == "calibration"]
    assert sorted(r.config.rank for r in calibrations) == [8, 16] and result.plan.target_cost_ratio >= 1
    rec = result.recommendation
    assert isinstance(rec, Recommendation) and not rec.derived
    ratio = rec.evidence["transfer"]["model_ratio"]
    assert ratio["examples"] == result.plan.confirm_examples  # the rung the plan priced them at
    target_runs = [r for r in result.runs if r.meta["role"] == CONFIRMATION_ROLE]
    assert len(target_runs) >= 3 and all(r.config.rank == 16 for r in target_runs)  # the proxy trains at 8
    assert all(r.examples_seen == ratio["examples"] for r in target_runs)
    proxy_lr = rec.evidence["transfer"]["proxy_learning_rate"]
    assert rec.learning_rate == pytest.approx(proxy_lr * ratio["target_lr"] / ratio["proxy_lr"])
    assert sum(r.examples_trained for r in result.runs) <= 900  # a resumed run pays for its new examples
    # the proxy's and the target's curvature probes, module by module, go to the probes table
    stored = study_result_to_job_result(result).probes
    assert [p["model"] for p in stored] == [spec.proxy_model, spec.model] and all(
        p["modules"] for p in stored
    )


@pytest.mark.slow
def test_a_sibling_proxy_is_transferred_by_curvature_confirmed_and_derives_other_methods(
    tmp_path: Path,
) -> None:
    spec = sibling_pair_spec(
        tmp_path,
        160,
        lr_range=[1e-4, 1.0],
        budget={"proxy_seconds": None, "proxy_examples": 1500},  # examples: the same plan on any machine
    )
    result = run_study(spec, derive_methods=["pissa"])
    rec = result.recommendation
    assert isinstance(rec, Recommendation)
    assert result.derived["pissa"].derived and result.derived["pissa"].method == "pissa"
    assert rec.evidence["transfer"]["confirmations"] and rec.cost.target_seconds > 0
    assert any("curvature ratio" in sentence for sentence in rec.reasoning)


def test_advisor_recommend_prints_json_with_a_progress_bar_on_stderr(
    study: tuple[StudyResult, list],
    tiny_spec: StudySpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result, _ = study
    monkeypatch.setenv("LORA_ADVISOR_DATA_DIR", str(tmp_path / "data"))  # the CLI persists there
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(tiny_spec.model_dump_json())

    def fake_study(spec: StudySpec, runner: object, **options: object) -> StudyResult:
        assert options["budget_override"] == 5.0
        progress = options["progress"]
        progress(1, 2, "B=4 LR=0.01 to 24 examples: pruned")  # type: ignore[operator]
        return result

    monkeypatch.setattr("advisor.study.run_study", fake_study)
    parser = argparse.ArgumentParser()
    add_recommend(parser.add_subparsers())
    args = parser.parse_args(["recommend", str(spec_file), "--budget", "5", "--json"])
    assert args.handler(args) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["learning_rate"] == result.recommendation.learning_rate  # type: ignore[union-attr]
    assert "[" in err and "1/2" in err
    db = open_database(tmp_path / "data")  # the stored study says the budget it was given, not the spec's
    with db.transaction(write=False) as session:
        assert session.query(Study).one().spec["budget"]["proxy_seconds"] == 5.0
    db.dispose()


def test_progress_in_a_log_is_a_line_per_tenth_of_the_study_not_a_redrawn_bar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    progress = LogProgress()
    progress(0, 63, "Study on the target model itself ...")
    for done in range(1, 64):
        progress(done, 63, f"run {done}")
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"\[0/63, \d+ s\] Study on the target model itself \.\.\.", lines[0])
    assert (
        len(lines) == 11
    )  # the plan, then 10 tenths, each with the time so far and what is left at that pace
    assert re.fullmatch(r"\[63/63, \d+ s, ~0 s left\] run 63", lines[-1])
    assert not any("\r" in line for line in lines)


def test_progress_on_a_terminal_is_a_bar_with_elapsed_time_and_an_eta(
    capsys: pytest.CaptureFixture[str],
) -> None:
    progress = TerminalProgress()
    progress(0, 40, "the plan")
    progress(12, 41, "B=4 LR=0.01 to 24 examples: pruned")  # the study extended its grid by a run
    progress.close()
    drawn = capsys.readouterr().err
    assert "12/41 runs" in drawn and "pruned" in drawn
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d\]", drawn)  # elapsed < remaining


def test_the_best_top_rung_configs_are_rerun_with_a_second_seed(study: tuple[StudyResult, list]) -> None:
    result, _ = study
    top = result.plan.top_examples
    seed = result.plan.seeds[0]
    second = [r for r in result.runs if r.config.seed == seed + 1]
    assert 1 <= len(second) <= 2 and all(r.examples_seen == top for r in second)
    assert all(r.meta["role"] == "second seed" for r in second)  # the dashboard tells them from the halving
    assert result.runs[0].meta["role"] == "calibration"
    first_seed_top = {
        (r.config.batch_size, r.config.learning_rate) for r in result.runs if r.examples_seen == top
    }
    assert {(r.config.batch_size, r.config.learning_rate) for r in second} <= first_seed_top


def bowl_runs(lr_star: float, examples: int, seeds: int = 1) -> list[Observation]:
    """Clean parabolas in log LR at B = 8, lowest at `lr_star`, on the 4-per-decade lattice."""
    lrs = [lattice_lr(lattice_index(lr_star) + k) for k in range(-2, 3)]
    return [
        Observation(8, lr, 2.0 + 0.2 * math.log10(lr / lr_star) ** 2, seed, examples, examples)
        for lr in lrs
        for seed in range(seeds)
    ]


def horizon_bowl(lrs: list[float], lr_star: float) -> list[Observation]:
    """Horizon runs of 3000 examples on a bowl 0.8× as deep as the top rung's, lowest at `lr_star`."""
    return [
        Observation(8, lr, 0.8 * (2.0 + 0.2 * math.log10(lr / lr_star) ** 2), 0, 3000, 3000) for lr in lrs
    ]


def interval_decades(rec: Recommendation) -> float:
    assert rec.confidence.lr_interval is not None
    return math.log10(rec.confidence.lr_interval[1] / rec.confidence.lr_interval[0])


def short_top_rung(
    spec: StudySpec, top_runs: list[Observation]
) -> tuple[StudyPlan, SurfaceFit, Recommendation]:
    """A plan whose top rung saw 300 of the real run's 3000 examples, and the top rung's answer."""
    top_fit = fit_surface(top_runs)
    assert isinstance(top_fit, SurfaceFit)
    plan = plan_study(spec, n_train=3000)
    plan.rungs[-1] = Rung(300, 3)
    cost = Cost(proxy_seconds=0, examples_seen=0, runs=0)
    answer = answer_from_rungs({300: top_fit}, {300: top_runs}, spec=spec, cost=cost, evidence={})
    assert isinstance(answer.recommendation, Recommendation)
    read = answer.fits[300]  # with the noise level the answer assumed
    assert isinstance(read, SurfaceFit)
    return plan, read, answer.recommendation


def test_single_seed_runs_that_measure_no_noise_never_claim_lr_star_exactly(tiny_spec: StudySpec) -> None:
    # Five single-seed runs on an exact parabola: no replicate, no residual. Zero noise would make every
    # bootstrap resample identical (an interval of 0.0356 … 0.0356); the study assumes 1% of the loss.
    top_runs = bowl_runs(0.0356, 300)
    _, _, rec = short_top_rung(tiny_spec, top_runs)
    assert rec.learning_rate == pytest.approx(0.0356, rel=0.01)
    assert interval_decades(rec) > 0.05
    assert rec.band.epsilon >= 2 * UNMEASURED_NOISE * 2.0  # twice the assumed noise at L* = 2.0
    assert any("taken as 1% of the loss" in sentence for sentence in rec.reasoning)


def test_a_measured_dataset_size_trend_moves_the_lr_between_the_measurement_and_the_prior(
    tiny_spec: StudySpec,
) -> None:
    # LR* is 0.0356 on 100 examples and 0.0112 (half a decade lower) on 300: γ measured = −1.05.
    top_runs, trend_runs = bowl_runs(0.0112, 300, seeds=2), bowl_runs(0.0356, 100)
    plan, top_fit, rec = short_top_rung(tiny_spec, top_runs)
    trend_fit = fit_surface(trend_runs)
    assert isinstance(trend_fit, SurfaceFit)
    moved = _apply_size_trend(rec, plan, top_fit, top_runs, TrendResult(100, 8, trend_fit, trend_runs))
    trend = moved.evidence["size_trend"]
    assert trend["trend"]["lr_star"] == pytest.approx(0.0356, rel=0.05)
    assert -1.05 < trend["lr_exponent"] < SIZE_EXPONENT - 0.1  # pulled well away from the prior
    assert moved.learning_rate == pytest.approx(rec.learning_rate * trend["factor"], rel=1e-6)
    assert "a line through the top rung's LR*" in moved.reasoning[-1]


def test_horizon_runs_near_the_real_run_carry_the_lr_where_they_found_it(tiny_spec: StudySpec) -> None:
    # LR* is 0.0356 after 300 examples and 0.0112 after the real run's 3000 (γ = −0.5, twice the prior's).
    top_runs = bowl_runs(0.0356, 300, seeds=2)
    plan, top_fit, rec = short_top_rung(tiny_spec, top_runs)
    lrs = horizon_lrs(tiny_spec, top_fit.learning_rate, 300, 3000)
    assert len(lrs) == 2 and math.log10(lrs[1] / lrs[0]) == pytest.approx(0.5, abs=0.01)
    # The longer run has a lower loss; its bowl keeps its shape relative to that level.
    horizon_runs = horizon_bowl(lrs, 0.0112)
    moved = _apply_size_trend(rec, plan, top_fit, top_runs, None, TrendResult(3000, 8, None, horizon_runs))
    evidence = moved.evidence["size_trend"]
    assert evidence["horizon"]["examples"] == 3000 and len(evidence["horizon"]["runs"]) == 2
    assert abs(math.log10(moved.learning_rate / 0.0112)) < 0.1  # the prior alone would say 0.02
    prior_only = _apply_size_trend(rec, plan, top_fit, top_runs, None, None)
    assert prior_only.learning_rate == pytest.approx(rec.learning_rate * 10**SIZE_EXPONENT, rel=1e-6)
    for answer in (moved, prior_only):  # the interval of LR* moves with the answer
        assert answer.confidence.lr_interval is not None
        low, high = answer.confidence.lr_interval
        assert low < answer.learning_rate < high
    # A decade of extrapolation on the prior alone (γ ± 0.3) is less certain than the measured horizon.
    assert interval_decades(prior_only) > max(interval_decades(moved), interval_decades(rec))
    assert prior_only.confidence.score <= min(moved.confidence.score, rec.confidence.score)


def test_the_horizon_pair_sits_below_the_predicted_lr_star_where_the_loss_slopes_gently(
    tiny_spec: StudySpec,
) -> None:
    # The prior γ = −0.25 over 10× the length moves LR*(top) = 0.0356 to 0.02: the higher run goes there and
    # the lower one half a decade below, away from the cliff above LR*.
    low, high = horizon_lrs(tiny_spec, 0.0356, 300, 3000, exponent=-0.25)
    assert lattice_index(high) == lattice_index(0.0356 * 10**-0.25) and high == pytest.approx(0.02)
    assert lattice_index(high) - lattice_index(low) == 2 and low == pytest.approx(0.00632)


def test_a_third_horizon_run_goes_above_the_pair_only_when_the_loss_still_falls_at_its_upper_lr(
    tiny_spec: StudySpec,
) -> None:
    low, high = horizon_lrs(tiny_spec, 0.0356, 300, 3000, exponent=-0.25)  # 0.00632 and 0.02
    assert bracketing_lr(tiny_spec, horizon_bowl([low, high], 0.0632)) == pytest.approx(0.0632)
    # The lower LR did better: the pair bounds LR* from above, on the bowl's gentle side; no third run.
    assert bracketing_lr(tiny_spec, horizon_bowl([low, high], 0.005)) is None
    diverged = [*horizon_bowl([low], 0.0632), Observation(8, high, None, 0, 3000, 3000)]
    assert bracketing_lr(tiny_spec, diverged) is None  # the divergence already bounds LR* from above
    ceiling = extension_bounds(tiny_spec)[1]  # never past the reach of the grid's extensions
    top = lattice_lr(lattice_index(ceiling) - 1)
    assert bracketing_lr(tiny_spec, horizon_bowl([lattice_lr(lattice_index(top) - 2), top], 1.0)) is None


def test_a_third_horizon_run_reads_an_lr_star_that_rose_past_the_pair(tiny_spec: StudySpec) -> None:
    # LR* is 0.0356 after 300 examples and 0.0632 after 3000 (it rose, as on SmolLM2-135M), so the pair the
    # prior places (0.00632, 0.02) lies below it: on its own it can say no more than "at least 0.0356".
    top_runs = bowl_runs(0.0356, 300, seeds=2)
    plan, top_fit, rec = short_top_rung(tiny_spec, top_runs)
    pair = horizon_bowl(horizon_lrs(tiny_spec, 0.0356, 300, 3000), 0.0632)
    bracketed = [*pair, *horizon_bowl([0.0632], 0.0632)]

    def lr_star(horizon: list[Observation]) -> float:
        moved = _apply_size_trend(rec, plan, top_fit, top_runs, None, TrendResult(3000, 8, None, horizon))
        return float(moved.evidence["size_trend"]["horizon"]["lr_star"])

    assert lr_star(pair) <= 0.0357  # clamped half a spacing above the pair
    assert lr_star(bracketed) == pytest.approx(0.0632, rel=0.15)


def test_a_third_horizon_run_on_the_cliff_above_lr_star_leaves_the_pairs_reading_alone(
    tiny_spec: StudySpec,
) -> None:
    # LR* is 0.0178 after 3000 examples, between the pair; the third run at 0.0632 climbed onto a plateau.
    top_runs = bowl_runs(0.0356, 300, seeds=2)
    plan, top_fit, rec = short_top_rung(tiny_spec, top_runs)
    pair = horizon_bowl(horizon_lrs(tiny_spec, 0.0356, 300, 3000), 0.0178)
    cliff = Observation(8, 0.0632, 3.0, 0, 3000, 3000)
    readings = [
        _apply_size_trend(rec, plan, top_fit, top_runs, None, TrendResult(3000, 8, None, runs))
        for runs in (pair, [*pair, cliff])
    ]
    alone, with_cliff = (r.evidence["size_trend"]["horizon"]["lr_star"] for r in readings)
    assert with_cliff == pytest.approx(alone) and alone == pytest.approx(0.0178, rel=0.1)


def test_the_predicted_loss_is_the_real_runs_read_off_the_horizon_runs_not_the_short_top_rung(
    tiny_spec: StudySpec,
) -> None:
    # L* is 2.0 after the top rung's 300 examples; the horizon pair at the real run's 3000 sits on a bowl
    # 0.8× as deep whose bottom, 1.6, lies between them.
    top_runs = bowl_runs(0.0356, 300, seeds=2)
    plan, top_fit, rec = short_top_rung(tiny_spec, top_runs)
    bowl = deepest_bowl({300: top_fit}, 8)
    lrs = horizon_lrs(tiny_spec, top_fit.learning_rate, 300, 3000)
    horizon_runs = horizon_bowl(lrs, 0.0112)
    horizon = TrendResult(3000, 8, None, horizon_runs)
    measured = _forecast_real_run_loss(rec, plan, (300, top_fit), horizon, bowl)
    assert rec.predicted_eval_loss == pytest.approx(2.0, rel=1e-3)  # the top rung's L*, 300 examples in
    assert measured.predicted_eval_loss == pytest.approx(1.6, rel=0.01)
    assert measured.predicted_eval_loss_interval is not None
    low, high = measured.predicted_eval_loss_interval
    assert low < measured.predicted_eval_loss < high < 2.0
    assert measured.evidence["loss_forecast"]["measured_at"] == [3000]
    prior_only = _forecast_real_run_loss(rec, plan, (300, top_fit), None, bowl)
    assert prior_only.predicted_eval_loss == pytest.approx(2.0 * 10**LOSS_EXPONENT, rel=1e-3)  # 10× longer
    assert "from the prior alone" in prior_only.reasoning[-1]


def test_a_prior_learned_from_stored_studies_moves_the_lr_when_nothing_was_measured(
    tiny_spec: StudySpec,
) -> None:
    top_runs = bowl_runs(0.0356, 300, seeds=2)
    plan, top_fit, rec = short_top_rung(tiny_spec, top_runs)
    learned = ExponentPrior(mean=-0.8, sd=0.1, studies=2)
    moved = _apply_size_trend(rec, plan, top_fit, top_runs, None, None, None, learned)
    assert moved.learning_rate == pytest.approx(rec.learning_rate * 10**-0.8, rel=1e-6)  # 10× the length
    assert "from arXiv 2602.04998 and 2 stored studies" in moved.reasoning[-1]
    assert moved.evidence["size_trend"]["measured"] is False  # so it does not feed later priors itself


def test_a_diverged_horizon_run_is_said_and_the_lr_falls_back_on_the_prior(tiny_spec: StudySpec) -> None:
    top_runs = bowl_runs(0.0356, 300, seeds=2)
    plan, top_fit, rec = short_top_rung(tiny_spec, top_runs)
    lows = [Observation(8, lr, None, 0, 3000, 3000) for lr in (0.0112, 0.0356)]  # both diverged
    moved = _apply_size_trend(rec, plan, top_fit, top_runs, None, TrendResult(3000, 8, None, lows))
    assert "0 of the 2 horizon runs finished" in moved.evidence["size_trend"]["horizon"]["skipped"]
    assert "the horizon runs told nothing" in moved.reasoning[-1]
    assert moved.learning_rate == pytest.approx(rec.learning_rate * 10**SIZE_EXPONENT, rel=1e-6)


def test_an_answer_from_below_the_top_rung_says_so(tiny_spec: StudySpec) -> None:
    shallow_runs = bowl_runs(0.0356, 100, seeds=2)  # the budget ran out before the 300-example rung
    plan, _, _ = short_top_rung(tiny_spec, bowl_runs(0.0356, 300, seeds=2))
    shallow = fit_surface(shallow_runs)
    assert isinstance(shallow, SurfaceFit)
    cost = Cost(proxy_seconds=0, examples_seen=0, runs=0)
    answer = answer_from_rungs({100: shallow}, {100: shallow_runs}, spec=tiny_spec, cost=cost, evidence={})
    rec, read = answer.recommendation, answer.fits[100]
    assert isinstance(rec, Recommendation) and isinstance(read, SurfaceFit)
    moved = _apply_size_trend(rec, plan, read, shallow_runs, None, None)
    assert (
        "the budget stopped the halving at 100 examples into its 300-example schedule" in moved.reasoning[-1]
    )
    assert moved.evidence["size_trend"]["sd_decades_at_full"] < 0.5  # its own runs bootstrap it


def test_a_top_rung_without_a_bowl_borrows_the_bowl_width_of_a_shallower_rung() -> None:
    shallow = fit_surface(bowl_runs(0.02, 96))  # 5 LRs around 0.02: a clean bowl, c = 0.2
    edge_only = [  # the best is the lowest LR promoted, and the rest is concave: no bowl at the top
        Observation(8, lr, loss, 0, 300, 300) for lr, loss in ((0.02, 2.0), (0.0356, 2.15), (0.0632, 2.2))
    ]
    top = fit_surface(edge_only)
    assert isinstance(shallow, SurfaceFit) and isinstance(top, SurfaceFit)
    assert deepest_bowl({300: top}, 8) is None
    coefficient, level = deepest_bowl({96: shallow, 300: top}, 8) or (0.0, 0.0)
    assert coefficient == pytest.approx(0.2) and level == pytest.approx(2.0)


def test_a_seconds_budget_caps_what_is_left_by_the_throughput_measured_at_that_batch_size(
    study: tuple[StudyResult, list],
) -> None:
    result, _ = study
    at_four = [r for r in result.runs if r.config.batch_size == 4 and r.examples_seen > 0]
    # A resumed run's seconds are those of the examples it trained itself, after its pause.
    per_example = sum(r.seconds for r in at_four) / sum(r.examples_trained for r in at_four)
    ledger = Ledger(0, None, runs=at_four, budget_examples=10**9, hard_deadline=time.perf_counter() + 60)
    assert ledger.examples_left(4) == pytest.approx(60 / per_example, rel=0.05)  # time binds, not examples
    untimed = Ledger(0, None, runs=at_four, budget_examples=sum(r.examples_trained for r in at_four) + 100)
    assert untimed.examples_left(4) == 100  # an examples budget alone: what is left of it


def test_an_answer_from_too_little_data_is_low_confidence_and_says_why(tiny_spec: StudySpec) -> None:
    """Two training examples under every batch size and one held-out example: a clean-looking bowl must not
    read as a high-confidence answer."""
    top_runs = bowl_runs(0.02, seeds=2, examples=300)
    fit = fit_surface(top_runs)
    assert isinstance(fit, SurfaceFit)
    cost = Cost(proxy_seconds=0, examples_seen=0, runs=0)
    rec = recommend_from_rungs({300: fit}, {300: top_runs}, spec=tiny_spec, cost=cost, evidence={})
    assert isinstance(rec, Recommendation) and rec.confidence.label != "low"
    plenty = DataSummary(train_examples=144, eval_examples=16)
    assert thin_data_caveat(rec, tiny_spec, plenty) == rec

    thin = thin_data_caveat(rec, tiny_spec, DataSummary(train_examples=2, eval_examples=1))
    assert thin.confidence.label == "low" and thin.confidence.score <= 0.3
    assert "fewer than the smallest batch size 4" in thin.reasoning[-1]
    assert "mean over 1 held-out examples" in thin.reasoning[-1]
    assert (thin.batch_size, thin.learning_rate) == (rec.batch_size, rec.learning_rate)  # said, not moved


def test_a_spec_without_batch_sizes_compares_batches_derived_from_its_data_and_says_which(
    tiny_spec: StudySpec,
) -> None:
    """144 training examples for one epoch: B = 2 leaves the real run 72 optimizer steps, B = 4 only 36."""
    budget = BudgetSpec(proxy_seconds=None, proxy_examples=400)
    result = run_study(tiny_spec.model_copy(update={"batch_sizes": None, "budget": budget}))
    rec = result.recommendation
    assert isinstance(rec, Recommendation)
    assert result.plan.batch_sizes == [1, 2] == rec.band.compared_batch_sizes
    assert "batch sizes [1, 2] (derived from 144 examples × 1 epoch on 1 device)" in rec.evidence["plan"]
    assert rec.evidence["batch_sizes"]["derived_from"] == "144 examples × 1 epoch on 1 device"
    assert any("The candidate batch sizes were [1, 2], derived from" in r for r in rec.reasoning)


def test_pissa_is_centred_by_its_curvature_ratio_to_lora_and_lora_is_not(tiny_spec: StudySpec) -> None:
    probes = ProbeLog(TorchRunner())
    wide = tiny_spec.model_copy(update={"method": "pissa", "lr_range": (1e-6, 1e-2)})
    prior, evidence = curvature_prior(probes, wide, seconds_per_example=1e-3, budget=None, beta=1.0)
    assert prior is not None and prior.reference_lr == 2e-4
    assert prior.lr_centre() == pytest.approx(2e-4 / evidence["ratio"], rel=1e-6)
    assert evidence["method"]["median_lambda_max"] > 0 and evidence["lora"]["median_lambda_max"] > 0
    # both probes' per-module reports are kept for the probes table and the study page
    assert [(r["kind"], r["method"]) for r in probes.reports] == [
        ("hessian_top_eigenvalue", "pissa"),
        ("hessian_top_eigenvalue", "lora"),
    ]
    assert all(m["eigenvalue"] > 0 for r in probes.reports for m in r["modules"])
    lora = wide.model_copy(update={"method": "lora"})
    assert curvature_prior(probes, lora, seconds_per_example=1e-3, budget=None, beta=1.0) == (None, {})
    narrow = wide.model_copy(update={"lr_range": (1e-4, 1e-2)})  # 2 decades: the range is searched whole
    assert curvature_prior(probes, narrow, seconds_per_example=1e-3, budget=None, beta=1.0)[0] is None
    slow = curvature_prior(probes, wide, seconds_per_example=1.0, budget=60.0, beta=1.0)
    assert slow[0] is None and "exceed 15% of the budget" in slow[1]["skipped"]
