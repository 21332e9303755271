"""A recipe is what a stored study's answer depends on beyond model, method and rank; lookups prefer the
study whose recipe matches the plan and that measured the most, and name every field that differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from advisor.recipes import Recipe, mismatches, recipe_key, recipe_of
from advisor.science.recommendation import Band, Confidence, Cost, Recommendation, kappa_rule
from advisor.specs import parse_spec
from advisor.storage import knowledge
from advisor.storage.db import Database, default_sqlite_url
from api import testing


def spec(**changes: Any) -> dict[str, Any]:
    training = changes.pop("training", {})
    return {
        "model": "tiny-llama",
        "dataset": {"path": "train.jsonl"},
        "rank": 8,
        "training": {"max_seq_len": 256, **training},
        **changes,
    }


def test_a_recipe_holds_what_moves_the_best_lr_and_nothing_about_the_search() -> None:
    base = parse_spec(spec())
    searched_differently = parse_spec(spec(batch_sizes=[2, 4], lr_range=[1e-5, 1e-1]))
    assert recipe_of(base) == recipe_of(searched_differently)
    assert recipe_of(base).target_modules is None and recipe_of(base).max_grad_norm == 1.0
    all_linear = parse_spec(spec(target_modules="all-linear"))
    assert recipe_key(base) != recipe_key(all_linear)
    assert recipe_key(base) == recipe_key(parse_spec(spec()))


@pytest.mark.parametrize(
    ("training", "field"),
    [
        ({"packing": True}, "packing"),
        ({"max_grad_norm": None}, "max_grad_norm"),
        ({"max_grad_norm": 0.3}, "max_grad_norm"),
        ({"lr_scheduler": "linear"}, "lr_scheduler"),
        ({"warmup_ratio": 0.1}, "warmup"),
        ({"max_seq_len": 1024}, "max_seq_len"),
        ({"epochs": 3}, "training_length"),
        ({"optimizer": {"betas": [0.9, 0.95]}}, "optimizer.betas"),
    ],
)
def test_each_lr_moving_field_beyond_its_tolerance_is_a_named_mismatch(
    training: dict[str, Any], field: str
) -> None:
    planned, study = recipe_of(parse_spec(spec(training=training))), recipe_of(parse_spec(spec()))
    (found,) = mismatches(planned, study)
    assert found.field == field
    assert found.message.startswith(f"{field}: the config plans ")


def test_small_differences_are_the_same_recipe() -> None:
    study = recipe_of(parse_spec(spec()))
    close = recipe_of(
        parse_spec(spec(training={"warmup_ratio": 0.04, "max_grad_norm": 1.2, "max_seq_len": 300}))
    )
    assert mismatches(close, study) == []
    assert mismatches(close, study, planned_examples=900, study_examples=810) == []  # rows vs train split
    (size,) = mismatches(close, study, planned_examples=5000, study_examples=810)
    assert (size.field, size.planned, size.study) == ("dataset_size", 5000, 810)


def test_target_modules_compare_as_sets_and_all_linear_is_its_own_choice() -> None:
    qv = recipe_of(parse_spec(spec(target_modules=["v_proj", "q_proj"])))
    assert mismatches(qv, recipe_of(parse_spec(spec(target_modules=["q_proj", "v_proj"])))) == []
    (found,) = mismatches(qv, recipe_of(parse_spec(spec(target_modules="all-linear"))))
    assert found.message == "target_modules: the config plans [q_proj, v_proj], the study trained all-linear"


# lookups ------------------------------------------------------------------------------------------------


def _answer(lr: float, examples_seen: int) -> dict[str, Any]:
    return Recommendation(
        batch_size=16,
        learning_rate=lr,
        method="lora",
        band=Band(batch_sizes=[16], lr_low=lr / 2, lr_high=lr * 2, epsilon=0.01),
        confidence=Confidence(score=0.8, label="high"),
        predicted_eval_loss=1.0,
        lr_rule=kappa_rule(0.5, 16, lr, measured=True),
        cost=Cost(proxy_seconds=examples_seen / 100, examples_seen=examples_seen, runs=10),
    ).model_dump(mode="json")


def store(db: Database, study_spec: dict[str, Any], lr: float, examples_seen: int) -> int:
    answer = Recommendation.model_validate(_answer(lr, examples_seen))
    return testing.store_finished_study(db, parse_spec(study_spec), answer, dataset_examples=900)


def lookup(
    db: Database, recipe: Recipe | None = None, study_id: int | None = None, **context: Any
) -> dict[str, Any]:
    asked = {"model": "tiny-llama", "method": "lora", "rank": 8, "alpha": None, **context}
    with db.transaction(write=False) as session:
        return knowledge.lookup(
            session,
            **asked,
            dataset_fingerprint=None,
            dataset_examples=None,
            recipe=recipe,
            study_id=study_id,
        )


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return testing.migrated(default_sqlite_url(tmp_path))


def test_the_study_with_more_evidence_answers_not_the_newest(db: Database) -> None:
    thorough = store(db, spec(), 3e-4, examples_seen=40_000)  # a 15-minute study
    store(db, spec(), 9e-4, examples_seen=600)  # a 30-second one, stored later
    answer = lookup(db)
    assert answer["source_study_id"] == thorough and answer["learning_rate"] == pytest.approx(3e-4)
    assert answer["study"]["budget"]["examples_seen"] == 40_000 and answer["mismatches"] == []


def test_a_matching_recipe_beats_more_evidence_and_the_verdict_names_the_study(db: Database) -> None:
    store(db, spec(), 3e-4, examples_seen=40_000)
    packed = store(db, spec(training={"packing": True}), 6e-4, examples_seen=600)
    planned = recipe_of(parse_spec(spec(training={"packing": True})))
    answer = lookup(db, planned)
    assert answer["source_study_id"] == packed and answer["mismatches"] == []
    assert answer["study"]["recipe"]["packing"] is True
    assert answer["study"]["confidence_label"] == "high"


def test_when_no_study_matches_the_closest_answers_and_every_difference_is_listed(db: Database) -> None:
    store(db, spec(), 3e-4, examples_seen=40_000)
    planned = recipe_of(parse_spec(spec(target_modules="all-linear", training={"max_grad_norm": None})))
    answer = lookup(db, planned)
    assert [m["field"] for m in answer["mismatches"]] == ["target_modules", "max_grad_norm"]


def test_a_pinned_study_answers_even_for_another_rank_and_says_so(db: Database) -> None:
    other_rank = store(db, spec(rank=16), 2e-4, examples_seen=1_000)
    store(db, spec(), 3e-4, examples_seen=40_000)
    answer, missing = lookup(db, study_id=other_rank), lookup(db, study_id=999)
    assert answer["source_study_id"] == other_rank
    assert [(m["field"], m["planned"], m["study"]) for m in answer["mismatches"]] == [("rank", 8, 16)]
    assert missing["status"] == "none" and "study 999 has no recommendation" in missing["detail"]
