"""The proxy training loop, end to end on CPU with a tiny Llama."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from advisor.records import RunStatus
from advisor.specs import parse_spec
from proxy_runs.engine import (
    RunBudget,
    RunProgress,
    lr_multiplier,
    pick_device,
    planned_steps,
    setup_proxy,
    train_proxy,
)
from proxy_runs.meta import device_name
from tests.conftest import make_spec


def test_lora_fine_tuning_lowers_the_eval_loss(pretrained_llama: Path, instruction_jsonl: Path) -> None:
    """A base pretrained on plain text, adapted to instructions: the held-out loss falls by over 1 nat."""
    spec = parse_spec(
        make_spec(pretrained_llama, instruction_jsonl, rank=8, training={"max_seq_len": 64, "epochs": 2})
    )
    record = train_proxy(spec, batch_size=8, learning_rate=1e-2)
    evals = [point["eval_loss"] for point in record.metrics["evals"]]
    assert record.status == RunStatus.SUCCESS
    assert evals[-1] < evals[0] - 1.0, f"eval loss should fall clearly: {evals}"
    assert record.eval_loss == evals[-1] and record.best_eval_loss == min(evals)


def test_the_record_carries_config_metrics_fingerprint_and_meta(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl))
    record = train_proxy(spec, batch_size=8, learning_rate=1e-3, budget=RunBudget(max_steps=4))
    assert record.config.batch_size == 8 and record.config.learning_rate == 1e-3
    assert [s["step"] for s in record.metrics["steps"]] == [1, 2, 3, 4]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "examples_seen"} <= set(record.metrics["steps"][0])
    assert record.examples_seen == 32 and record.tokens_seen > 0
    assert record.dataset_fingerprint["n_train"] > 0
    assert record.meta["versions"]["torch"].startswith("2.")
    used = device_name(pick_device())  # this CPU, or the GPU's name where there is one
    assert record.meta["device"].startswith(used) and record.meta["model_source"] == str(tiny_llama)
    assert record.spec["model"] == str(tiny_llama)
    record.model_validate_json(record.model_dump_json())  # JSON-safe: no NaN anywhere


def test_same_seed_same_run(tiny_llama: Path, instruction_jsonl: Path) -> None:
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl))
    losses = [
        [
            s["loss"]
            for s in train_proxy(
                spec, batch_size=4, learning_rate=1e-3, budget=RunBudget(max_steps=3), eval_at_start=False
            ).metrics["steps"]
        ]
        for _ in range(2)
    ]
    assert losses[0] == losses[1]


def test_micro_batching_does_not_change_the_effective_batch(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    """8 = 8 × 1 and 8 = 2 × 4 accumulation give the same token-weighted loss and update."""

    def losses(micro: int) -> list[float]:
        spec = parse_spec(
            make_spec(tiny_llama, instruction_jsonl, training={"max_seq_len": 64, "micro_batch_size": micro})
        )
        record = train_proxy(
            spec, batch_size=8, learning_rate=1e-2, budget=RunBudget(max_steps=3), eval_at_start=False
        )
        assert record.config.accumulation_steps == 8 // micro
        return [s["loss"] for s in record.metrics["steps"]]

    assert losses(2) == pytest.approx(losses(8), rel=1e-5)


def test_a_too_high_learning_rate_is_reported_as_diverged(tiny_llama: Path, instruction_jsonl: Path) -> None:
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, method="full"))
    record = train_proxy(spec, batch_size=8, learning_rate=50.0, budget=RunBudget(max_steps=20))
    assert record.status == RunStatus.DIVERGED
    assert record.steps < 20 and record.metrics["diverged_at"]["step"] >= 1
    assert record.eval_loss is None, "a diverged run has no eval loss, not a NaN"
    record.model_validate_json(record.model_dump_json())


def test_a_stop_hook_prunes_the_run(tiny_llama: Path, instruction_jsonl: Path) -> None:
    seen: list[RunProgress] = []

    def stop_after_three(progress: RunProgress) -> bool:
        seen.append(progress)
        return progress.step >= 3

    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl))
    record = train_proxy(spec, batch_size=4, learning_rate=1e-3, should_stop=stop_after_three, eval_every=1)
    assert record.status == RunStatus.PRUNED and record.steps == 3
    assert [p.examples_seen for p in seen] == [4, 8, 12]
    assert all(p.eval_loss is not None for p in seen)


@pytest.mark.parametrize(
    ("budget", "steps"),
    [(RunBudget(max_steps=5), 5), (RunBudget(max_examples=20), 5), (RunBudget(max_examples=21), 6)],
)
def test_budgets_in_steps_or_examples(
    budget: RunBudget, steps: int, tiny_llama: Path, instruction_jsonl: Path
) -> None:
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl))
    record = train_proxy(spec, batch_size=4, learning_rate=1e-3, budget=budget, eval_at_start=False)
    assert record.steps == steps and record.config.planned_steps == steps


def test_a_time_budget_stops_the_run_with_a_final_eval(tiny_llama: Path, instruction_jsonl: Path) -> None:
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, training={"max_seq_len": 64, "epochs": 50}))
    record = train_proxy(
        spec, batch_size=4, learning_rate=1e-3, budget=RunBudget(max_seconds=1.0), eval_at_start=False
    )
    assert record.status == RunStatus.SUCCESS
    assert 0 < record.steps < record.config.planned_steps
    assert record.metrics["evals"][-1]["step"] == record.steps


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_effective_batch(
    tiny_llama: Path,
    instruction_jsonl: Path,
) -> None:
    """A model that cannot take more than 2 examples at once, as on a GPU with little free memory."""
    spec = parse_spec(
        make_spec(tiny_llama, instruction_jsonl, training={"max_seq_len": 64, "micro_batch_size": 8})
    )
    setup = setup_proxy(spec)

    def refuse_large_batches(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if module.training and kwargs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    setup.model.register_forward_pre_hook(refuse_large_batches, with_kwargs=True)
    record = train_proxy(
        spec,
        batch_size=8,
        learning_rate=1e-3,
        budget=RunBudget(max_steps=2),
        setup=setup,
        eval_at_start=False,
    )
    assert record.status == RunStatus.SUCCESS and record.steps == 2 and record.examples_seen == 16
    assert [(e["micro_batch_before"], e["micro_batch_after"]) for e in record.metrics["oom_events"]] == [
        (8, 4),
        (4, 2),
    ]
    assert (record.config.micro_batch_size, record.config.accumulation_steps) == (2, 4)


def test_an_unexpected_error_is_a_failed_run_with_its_cause(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl))
    setup = setup_proxy(spec)

    def broken(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if module.training:
            raise ValueError("a corrupt shard")

    setup.model.register_forward_pre_hook(broken, with_kwargs=True)
    record = train_proxy(spec, batch_size=4, learning_rate=1e-3, budget=RunBudget(max_steps=2), setup=setup)
    assert record.status == RunStatus.FAILED and "a corrupt shard" in (record.error or "")


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_zero() -> None:
    factors = [lr_multiplier(step, total=10, warmup=2, shape="cosine") for step in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(factors[2:]))
    assert lr_multiplier(10, total=10, warmup=2, shape="cosine") == pytest.approx(0.0)


def test_planned_steps_follow_epochs_and_are_cut_by_the_budget(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, training={"epochs": 2}))
    assert planned_steps(100, spec, 16, RunBudget()) == 13
    assert planned_steps(100, spec, 16, RunBudget(max_steps=5)) == 5


def test_max_steps_at_the_real_batch_sets_the_planned_steps_and_a_budget_still_cuts_them(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    training = {"max_steps": 50, "batch_size": 16, "epochs": 2}  # 800 examples, whatever the data's size
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, training=training))
    assert planned_steps(100, spec, 8, RunBudget()) == 100
    assert planned_steps(100_000, spec, 32, RunBudget()) == 25
    assert planned_steps(100, spec, 8, RunBudget(max_examples=80)) == 10


def test_warmup_steps_set_the_share_of_the_proxy_spent_warming_up(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    """5 warm-up steps of a real run of 20 are a quarter of it: 2 of a proxy's 8 steps."""
    training = {"max_steps": 20, "batch_size": 8, "warmup_steps": 5, "lr_scheduler": "constant"}
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, training=training))
    record = train_proxy(
        spec, batch_size=4, learning_rate=1e-3, budget=RunBudget(max_steps=8), eval_at_start=False
    )
    assert (record.config.planned_steps, record.config.warmup_steps) == (8, 2)
    assert [step["lr"] for step in record.metrics["steps"][:3]] == pytest.approx([5e-4, 1e-3, 1e-3])
