"""The `advisor` console script, run as a user runs it: a real process, a spec file, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import make_spec

ADVISOR = [sys.executable, "-m", "advisor.cli"]


def advisor(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*ADVISOR, *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )


def write_spec(tmp_path: Path, spec: dict[str, object]) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_train_proxy_prints_the_run_record_as_json(
    tmp_path: Path, tiny_llama: Path, instruction_jsonl: Path
) -> None:
    spec = write_spec(tmp_path, make_spec(tiny_llama, instruction_jsonl))
    result = advisor(
        "train-proxy", str(spec), "--batch-size", "8", "--lr", "1e-3", "--max-steps", "3", "--json"
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "success" and record["steps"] == 3
    assert record["eval_loss"] > 0 and len(record["metrics"]["steps"]) == 3


def test_train_proxy_prints_a_readable_summary(
    tmp_path: Path, tiny_llama: Path, instruction_jsonl: Path
) -> None:
    spec = write_spec(tmp_path, make_spec(tiny_llama, instruction_jsonl))
    result = advisor("train-proxy", str(spec), "--batch-size", "4", "--lr", "1e-3", "--max-steps", "2")
    assert result.returncode == 0, result.stderr
    assert "status        success" in result.stdout and "eval curve" in result.stdout


def test_a_bad_spec_exits_2_naming_the_field(tmp_path: Path, instruction_jsonl: Path) -> None:
    spec = write_spec(tmp_path, make_spec("/no/such/model", instruction_jsonl, rank=-2))
    result = advisor("train-proxy", str(spec), "--batch-size", "4", "--lr", "1e-3")
    assert result.returncode == 2
    assert "rank" in result.stderr and "Traceback" not in result.stderr


def test_a_missing_model_exits_2_naming_the_model(tmp_path: Path, instruction_jsonl: Path) -> None:
    spec = write_spec(tmp_path, make_spec("/no/such/model", instruction_jsonl))
    result = advisor("train-proxy", str(spec), "--batch-size", "4", "--lr", "1e-3")
    assert result.returncode == 2 and result.stderr.startswith("error: model:")


def test_a_dataset_field_that_is_not_in_the_data_exits_2(
    tmp_path: Path, tiny_llama: Path, instruction_jsonl: Path
) -> None:
    spec = write_spec(
        tmp_path,
        make_spec(
            tiny_llama,
            instruction_jsonl,
            dataset={"path": str(instruction_jsonl), "response_field": "answer"},
        ),
    )
    result = advisor("train-proxy", str(spec), "--batch-size", "4", "--lr", "1e-3")
    assert result.returncode == 2 and "dataset.response_field" in result.stderr


def test_a_non_positive_learning_rate_is_a_usage_error(
    tmp_path: Path, tiny_llama: Path, instruction_jsonl: Path
) -> None:
    spec = write_spec(tmp_path, make_spec(tiny_llama, instruction_jsonl))
    result = advisor("train-proxy", str(spec), "--batch-size", "4", "--lr", "-1")
    assert result.returncode == 2 and "--lr" in result.stderr


def test_the_top_level_help_says_what_the_tool_does_and_its_exit_codes() -> None:
    text = " ".join(advisor("--help").stdout.split())
    assert "Batch size and learning rate for a LoRA fine-tune, from cheap proxy runs" in text
    assert "exit codes: 0 a result was produced" in text and "3 `check` knows nothing yet" in text
    assert "torch" not in text  # a note for developers, not for users


def test_methods_lists_every_method() -> None:
    result = advisor("methods")
    assert result.returncode == 0
    assert {line.split()[0] for line in result.stdout.splitlines()} >= {"lora", "balora", "reflora", "full"}
