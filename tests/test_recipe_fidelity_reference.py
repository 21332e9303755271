"""The reference fine-tune of `bench/recipe_fidelity.py` (`bench/reference_loop.py`) trains the way the config
says: it reads each tool's keys by the tool's rules, adapts the layers the config targets, packs only when
told, takes the loss on the response only, clips at the config's max_grad_norm and nowhere else, and keeps a
warm-up written in steps at its share of the run at another batch. The benchmark's ground truth is only as
good as this loop, and the loop never goes through `proxy_runs`, so it is checked here on its own (a few
steps on a tiny model; the benchmark itself is not run).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench import reference_loop as fidelity
from proxy_runs import synthetic


@pytest.fixture(scope="module")
def records() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """24 training and 8 held-out instruction records."""
    return synthetic.instruction_records(24, seed=3), synthetic.instruction_records(8, seed=4)


@pytest.fixture
def axolotl(tiny_llama: Path, tmp_path: Path, records: Any) -> Any:
    """The benchmark's Axolotl task (all linear layers, packing, no clipping, 10% warm-up), on 24 records."""
    return fidelity.read_recipe(fidelity.write_axolotl_task(tiny_llama, tmp_path, *records))


@pytest.fixture
def trl(tiny_llama: Path, tmp_path: Path, records: Any) -> Any:
    """The benchmark's TRL task (seven named modules, packing, clipping at 0.3, 10 warm-up steps)."""
    return fidelity.read_recipe(fidelity.write_trl_task(tiny_llama, tmp_path, *records))


def tokenizer(recipe: Any) -> Any:
    return fidelity.load_base(recipe)[1]


def adapted_layers(recipe: Any) -> set[str]:
    """The short names of the modules that carry a LoRA adapter."""
    model = fidelity.adapted_model(recipe, seed=0)
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}


def test_each_tool_s_keys_are_read_by_the_tool_s_rules(axolotl: Any, trl: Any) -> None:
    # Axolotl: max_grad_norm 0 turns clipping off in the Trainer; lora_target_linear means every linear layer.
    assert (axolotl.max_grad_norm, axolotl.target_modules, axolotl.packing) == (None, "all-linear", True)
    assert (axolotl.warmup_ratio, axolotl.warmup_steps, axolotl.val_set_size) == (0.1, None, 0.1)
    assert (axolotl.micro_batch, axolotl.accumulation, axolotl.epochs) == (4, 4, 2)
    assert axolotl.scheduler == "cosine"
    # TRL: a warm-up in steps replaces warmup_ratio; β1 keeps the Trainer's 0.9 when only β2 is given.
    assert (trl.max_grad_norm, trl.warmup_steps, trl.warmup_ratio) == (0.3, 10, None)
    assert (trl.betas, trl.weight_decay, trl.batch_size, trl.scheduler) == ((0.9, 0.95), 0.01, 8, "linear")


def test_target_modules_set_the_adapted_layers(axolotl: Any, trl: Any) -> None:
    every_linear = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert adapted_layers(axolotl) == every_linear  # all-linear: PEFT leaves the output head out
    assert adapted_layers(replace(trl, target_modules=["q_proj", "v_proj"])) == {"q_proj", "v_proj"}


def test_packing_joins_whole_examples_and_restarts_positions(axolotl: Any) -> None:
    tok = tokenizer(axolotl)
    packed = fidelity.training_rows(axolotl, tok)
    single = fidelity.training_rows(replace(axolotl, packing=False), tok)
    # 24 records less Axolotl's 10% held out (3): one row each unpacked; 2–3 per 128-token row packed.
    assert len(single) == 21
    assert len(packed) < len(single) / 2
    assert all(len(row.input_ids) <= axolotl.max_seq_len for row in packed)
    assert sum(len(r.input_ids) for r in packed) == sum(len(r.input_ids) for r in single)
    # Each example in a packed row starts again at position 0.
    assert sum(row.position_ids.count(0) for row in packed) == len(single)


def test_the_loss_is_taken_on_the_response_and_its_eos_only(trl: Any) -> None:
    tok = tokenizer(trl)
    record = {"prompt": "Add the two numbers.\n3 + 4\n", "completion": "7"}
    row = fidelity.encode(trl, tok, record)
    prompt_length = len(tok(record["prompt"], add_special_tokens=False)["input_ids"])
    assert row.labels[:prompt_length] == [fidelity.IGNORE_INDEX] * prompt_length
    assert row.labels[prompt_length:] == row.input_ids[prompt_length:]
    assert row.labels[-1] == tok.eos_token_id


def test_clipping_changes_the_run_only_where_a_gradient_reaches_the_limit(axolotl: Any) -> None:
    short = replace(axolotl, epochs=1, packing=False)  # 21 rows at batch 8: 3 optimizer steps
    tok = tokenizer(short)
    train, held_out = fidelity.training_rows(short, tok), fidelity.held_out_rows(short, tok)

    def loss(max_grad_norm: float | None) -> float:
        recipe = replace(short, max_grad_norm=max_grad_norm)
        return fidelity.reference_finetune(recipe, 8, 3e-2, 0, train, held_out).eval_loss

    unclipped = loss(None)
    assert loss(1e9) == unclipped  # a limit no gradient reaches is no clipping
    assert loss(1e-4) != pytest.approx(unclipped, rel=1e-6)  # a limit every gradient reaches changes the run


def test_a_run_takes_the_trainer_s_steps_and_counts_its_tokens(axolotl: Any) -> None:
    short = replace(axolotl, epochs=2, packing=False)
    tok = tokenizer(short)
    train, held_out = fidelity.training_rows(short, tok), fidelity.held_out_rows(short, tok)
    run = fidelity.reference_finetune(short, 8, 1e-3, 0, train, held_out)
    # 21 rows in micro-batches of 4: 6 per epoch, 2 accumulated per step at B = 8: 3 steps per epoch.
    assert run.steps == 6
    assert run.tokens == 2 * sum(len(row.input_ids) for row in train)
    assert run.eval_loss is not None


def test_a_warm_up_in_steps_keeps_its_share_of_the_run_at_another_batch(trl: Any, axolotl: Any) -> None:
    # TRL's 10 steps were written for its batch of 8: 5 at batch 16, 40 at batch 2.
    assert [fidelity.warmup_steps(trl, b, total_steps=100) for b in (16, 8, 2)] == [5, 10, 40]
    # Axolotl's ratio is of the run's own steps, rounded down.
    assert fidelity.warmup_steps(axolotl, 4, total_steps=95) == 9
