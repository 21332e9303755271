"""A whole study end to end on a tiny Llama: plan, successive halving, fits, a recommendation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from advisor.cli_recommend import add_recommend, render
from advisor.records import RunStatus
from advisor.science.fits import Observation
from advisor.science.recommendation import NoRecommendation, Recommendation
from advisor.specs import StudySpec, parse_spec
from proxy_runs.study import StudyResult, loss_at, promote, run_study
from proxy_runs.synthetic import corpus_of, instruction_records, write_jsonl
from proxy_runs.tiny import save_tiny_model


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


@pytest.mark.slow
def test_a_sibling_proxy_is_transferred_by_curvature_confirmed_and_derives_other_methods(
    tmp_path: Path,
) -> None:
    records = instruction_records(160, seed=0)
    write_jsonl(records, tmp_path / "data.jsonl")
    save_tiny_model(tmp_path / "small", "llama", corpus_of(records), vocab_size=256, hidden=16)
    save_tiny_model(tmp_path / "big", "llama", corpus_of(records), vocab_size=256, hidden=32)
    spec = parse_spec(
        {
            "model": str(tmp_path / "big"),
            "proxy_model": str(tmp_path / "small"),
            "rank": 16,
            "dataset": {"path": str(tmp_path / "data.jsonl")},
            "training": {"max_seq_len": 32},
            "batch_sizes": [4, 8],
            "lr_range": [1e-4, 1.0],
            "budget": {
                "proxy_seconds": None,
                "proxy_examples": 1500,
            },  # examples: the same plan on any machine
        }
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

    def fake_study(spec: StudySpec, **options: object) -> StudyResult:
        assert options["budget_override"] == 5.0
        progress = options["progress"]
        progress(1, 2, "B=4 LR=0.01 to 24 examples: pruned")  # type: ignore[operator]
        return result

    monkeypatch.setattr("proxy_runs.study.run_study", fake_study)
    parser = argparse.ArgumentParser()
    add_recommend(parser.add_subparsers())
    args = parser.parse_args(["recommend", str(spec_file), "--budget", "5", "--json"])
    assert args.handler(args) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["learning_rate"] == result.recommendation.learning_rate  # type: ignore[union-attr]
    assert "[" in err and "1/2" in err
