"""The study spec: defaults, round trips, and errors that name the field, the value and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from advisor.errors import SpecError
from advisor.specs import StudySpec, load_spec, parse_spec

MINIMAL = {"model": "org/model", "dataset": {"path": "data.jsonl"}}


def test_alpha_defaults_to_rank_and_scaling_follows_the_method() -> None:
    lora = parse_spec(MINIMAL | {"rank": 16})
    rslora = parse_spec(MINIMAL | {"rank": 16, "method": "rslora"})
    assert (lora.alpha, lora.scaling, lora.lora_scale) == (16.0, "alpha_over_r", 1.0)
    assert (rslora.alpha, rslora.scaling, rslora.lora_scale) == (16.0, "alpha_over_sqrt_r", 4.0)


def test_method_names_are_case_insensitive() -> None:
    assert parse_spec(MINIMAL | {"method": "DoRA"}).method == "dora"


def test_spec_round_trips_through_json_unchanged() -> None:
    spec = parse_spec(MINIMAL | {"method": "lora_plus", "batch_sizes": [64, 8, 8], "lr_range": [1e-5, 1e-3]})
    again = StudySpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert again.batch_sizes == [8, 64]  # sorted, deduplicated


def test_spec_loads_from_yaml_and_json_files(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(MINIMAL))
    (tmp_path / "spec.json").write_text(json.dumps(MINIMAL))
    assert load_spec(tmp_path / "spec.yaml") == load_spec(tmp_path / "spec.json")


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ({"method": "lorax"}, "method", "choose one of"),
        ({"rank": 0}, "rank", "positive integer"),
        ({"rank": -4}, "rank", "positive integer"),
        ({"alpha": 0}, "alpha", "positive number"),
        ({"alpha": -1.0}, "alpha", "positive number"),
        ({"lerning_rate": 1e-4}, "lerning_rate", "unknown field"),
        ({"dataset": {"path": " "}}, "dataset.path", "empty"),
        ({"dataset": {"path": "d.jsonl", "format": "dialogue"}}, "dataset.format", "chat"),
        ({"batch_sizes": [16, 0]}, "batch_sizes", "positive integers"),
        ({"lr_range": [1e-2, 1e-4]}, "lr_range", "low < high"),
        ({"lr_pick": "bold"}, "lr_pick", "median"),
        ({"method": "rslora", "scaling": "alpha_over_r"}, "scaling", "alpha_over_sqrt_r"),
        ({"budget": {"proxy_seconds": None}}, "budget", "unbounded"),
        ({"training": {"epochs": 0}}, "training.epochs", "greater than 0"),
        # Past what any fine-tune uses and what a database integer holds: refused here, not by the store.
        ({"rank": 10**30}, "rank", "at most 65536"),
        ({"batch_sizes": [16, 2**40]}, "batch_sizes", "up to 1048576"),
        ({"training": {"seed": -1}}, "training.seed", "greater than or equal to 0"),
        ({"budget": {"proxy_examples": 10**20}}, "budget.proxy_examples", "less than or equal to"),
        # Python's JSON and YAML parsers read NaN and Infinity; no field means them.
        ({"budget": {"proxy_seconds": float("nan")}}, "budget.proxy_seconds", "finite number"),
        ({"training": {"epochs": float("inf")}}, "training.epochs", "finite number"),
    ],
)
def test_bad_fields_are_named_in_the_error(override: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(MINIMAL | override)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(MINIMAL | {"rank": -1, "method": "nope"})
    assert {p["field"] for p in caught.value.problems()} == {"rank", "method"}


def test_missing_required_fields_are_named() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"dataset": {"path": "x.jsonl"}})
    assert caught.value.field == "model"


def test_a_spec_file_that_is_not_there_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("content", "says"),
    [(bytes(range(256)), "UnicodeDecodeError"), (b"a: " + b"[" * 3000 + b"]" * 3000, "RecursionError")],
)
def test_a_spec_file_that_cannot_be_read_is_a_spec_error(tmp_path: Path, content: bytes, says: str) -> None:
    """A binary file passed by mistake, or nesting past Python's recursion limit: named, never a traceback."""
    (tmp_path / "spec.yaml").write_bytes(content)
    with pytest.raises(SpecError, match=f"cannot read spec.yaml: {says}"):
        load_spec(tmp_path / "spec.yaml")
