"""Every registered method honours the same contract, on a causal LM and on a seq2seq (T5) model:
it builds, two CPU optimizer steps give a finite loss, and its spec round-trips through JSON."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from advisor.method_catalog import METHODS
from advisor.records import RunStatus
from advisor.specs import StudySpec, parse_spec
from proxy_runs.engine import RunBudget, setup_proxy, train_proxy
from proxy_runs.methods import METHOD_REGISTRY
from tests.conftest import make_spec

ALL_METHODS = sorted(METHOD_REGISTRY)


def test_registry_and_catalogue_name_the_same_methods() -> None:
    assert set(METHOD_REGISTRY) == set(METHODS)


def _two_steps(spec: StudySpec) -> None:
    record = train_proxy(
        spec,
        batch_size=4,
        learning_rate=1e-3,
        budget=RunBudget(max_steps=2),
        eval_at_start=False,
        max_eval_examples=8,
    )
    assert record.status == RunStatus.SUCCESS, record.error
    assert record.steps == 2
    assert all(math.isfinite(step["loss"]) for step in record.metrics["steps"])
    assert record.eval_loss is not None and math.isfinite(record.eval_loss)
    assert 0 < record.trainable_params <= record.total_params


@pytest.mark.parametrize("method", ALL_METHODS)
def test_method_trains_a_tiny_llama(method: str, tiny_llama: Path, instruction_jsonl: Path) -> None:
    spec = parse_spec(
        make_spec(tiny_llama, instruction_jsonl, method=method, method_options={"reflora_warmup_steps": 1})
    )
    _two_steps(spec)
    assert StudySpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize("method", ALL_METHODS)
def test_method_trains_a_tiny_t5(method: str, tiny_t5: Path, seq2seq_jsonl: Path) -> None:
    dataset = {
        "path": str(seq2seq_jsonl),
        "format": "seq2seq",
        "prompt_field": "source",
        "response_field": "target",
        "input_field": None,
    }
    spec = parse_spec(
        make_spec(
            tiny_t5, seq2seq_jsonl, method=method, dataset=dataset, method_options={"reflora_warmup_steps": 1}
        )
    )
    _two_steps(spec)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_method_optimizer_has_the_real_runs_betas_eps_and_weight_decay(
    method: str, tiny_llama: Path, instruction_jsonl: Path
) -> None:
    """β2 and ε set how fast Adam's step size adapts, which moves the best LR: proxies use the user's."""
    training = {"optimizer": {"betas": [0.8, 0.95], "eps": 1e-6}, "weight_decay": 0.1}
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, method=method, training=training))
    setup = setup_proxy(spec)
    optimizer = setup.method.build_optimizer(setup.model, 1e-3, spec.training)
    groups = optimizer.param_groups
    assert all(tuple(group["betas"]) == (0.8, 0.95) and group["eps"] == 1e-6 for group in groups)
    assert 0.1 in {group["weight_decay"] for group in groups}, "matrices take the weight decay"


def test_adapters_train_only_a_small_fraction_of_the_model(tiny_llama: Path, instruction_jsonl: Path) -> None:
    record = train_proxy(
        parse_spec(make_spec(tiny_llama, instruction_jsonl, rank=2)),
        batch_size=4,
        learning_rate=1e-3,
        budget=RunBudget(max_steps=1),
        eval_at_start=False,
    )
    assert record.trainable_params < 0.1 * record.total_params
