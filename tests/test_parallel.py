"""A study's proxy runs trained several at once, in worker processes: the same runs and the same pick at any
number of workers, each run recorded once, and a worker's death costs only its run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from advisor.records import RunStatus
from advisor.science.recommendation import Recommendation
from advisor.specs import StudySpec, parse_spec
from advisor.study import StudyResult, run_study
from advisor.study.runner import ProxyRunner
from advisor.study.synthetic import Surface, SyntheticRunner
from proxy_runs.parallel import ParallelRunner
from tests.conftest import make_spec

DEATH_MARK_ENV = "ADVISOR_TEST_DEATH_MARK"  # a file: the first worker to train LR 2e-4 dies, once
SECONDS_PER_RUN = 0.02  # long enough that every worker gets runs, short enough for a study in seconds


def noisy_surface() -> ProxyRunner:
    return SyntheticRunner(Surface(noise=0.01), seconds_per_run=SECONDS_PER_RUN)


def dying_once() -> ProxyRunner:
    """A synthetic runner whose worker process dies (as under kill -9) the first time any worker trains
    LR 2e-4 (the grid's centre), mid-rung; the mark file makes it once per test, across processes."""

    def maybe_die(spec: StudySpec, config: tuple[int, float]) -> None:
        mark = Path(os.environ[DEATH_MARK_ENV])
        if config[1] == 2e-4 and not mark.exists():
            mark.touch()
            os._exit(9)

    return SyntheticRunner(Surface(noise=0.01), seconds_per_run=SECONDS_PER_RUN, on_run=maybe_die)


def synthetic_spec() -> StudySpec:
    return parse_spec(
        {
            "model": "org/model",
            "dataset": {"path": "data.jsonl"},
            "batch_sizes": [4, 8, 16],
            "lr_range": [1e-5, 1e-1],
            "budget": {"proxy_seconds": None, "proxy_examples": 8000},
        }
    )


def runs_of(result: StudyResult) -> list[tuple[int, float, int, float | None, str]]:
    return [
        (r.config.batch_size, r.config.learning_rate, r.examples_seen, r.eval_loss, str(r.status))
        for r in result.runs
    ]


def test_the_same_runs_and_pick_at_one_and_at_three_workers() -> None:
    one, three = ParallelRunner(1, noisy_surface), ParallelRunner(3, noisy_surface)
    try:
        serial, parallel = run_study(synthetic_spec(), one), run_study(synthetic_spec(), three)
    finally:
        one.close()
        three.close()
    assert runs_of(serial) == runs_of(parallel)
    assert isinstance(parallel.recommendation, Recommendation)
    assert parallel.recommendation.learning_rate == serial.recommendation.learning_rate  # type: ignore[union-attr]
    workers = {r.meta.get("worker") for r in parallel.runs if r.meta.get("role") == "halving"}
    assert len(workers) >= 2  # the halving's runs spread over the workers (a third may start late on 2 cores)


def test_a_worker_killed_mid_rung_costs_only_its_run_and_the_study_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEATH_MARK_ENV, str(tmp_path / "died"))
    runner = ParallelRunner(2, dying_once)
    try:
        result = run_study(synthetic_spec(), runner)
    finally:
        runner.close()
    assert (tmp_path / "died").exists()  # a worker did die
    assert isinstance(result.recommendation, Recommendation)
    runs = [  # a run: its role, config, seed and length (a trend run may stop where a halving run paused)
        (r.meta.get("role"), r.config.batch_size, r.config.learning_rate, r.examples_seen, r.config.seed)
        for r in result.runs
    ]
    assert len(runs) == len(set(runs))  # exactly one record per run
    assert not any(r.status == RunStatus.FAILED for r in result.runs)  # the lost run was retried once


def test_real_proxy_runs_in_two_workers_make_the_same_pick_as_in_one(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    spec = parse_spec(
        make_spec(
            tiny_llama,
            instruction_jsonl,
            batch_sizes=[4, 8],
            lr_range=[1e-3, 1.0],
            budget={"proxy_seconds": None, "proxy_examples": 900},
        )
    )
    one, two = ParallelRunner(1), ParallelRunner(2)
    try:
        serial, parallel = run_study(spec, one), run_study(spec, two)
    finally:
        one.close()
        two.close()
    assert runs_of(serial) == runs_of(parallel)
    # promoted configs went on from the runs they paused, in whichever worker took them: each trained only
    # the examples past its pause (the checkpoints wait in a folder every worker reads)
    resumed = [r for r in parallel.runs if r.examples_trained < r.examples_seen]
    assert resumed and [r.examples_trained for r in resumed] == [
        r.examples_trained for r in serial.runs if r.examples_trained < r.examples_seen
    ]
