"""Pausing a run at a rung and resuming it: the resumed run is the uninterrupted run, and only the examples
after the pause cost anything."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from advisor.records import EvalPoint, RunRecord, RunStatus
from advisor.science.planner import paused_runs_needed, plan_study
from advisor.science.study_plan import Rung, StudyPlan, halving_cost
from advisor.specs import StudySpec, parse_spec
from advisor.study.halving import run_to_rung, shelf_key
from advisor.study.run import plan_with_paused_runs
from advisor.study.runner import ShelfRoom
from proxy_runs.data import PreparedData
from proxy_runs.engine import RunBudget, setup_proxy, train_proxy
from proxy_runs.methods import METHOD_REGISTRY
from proxy_runs.resume import (
    SHELF_MEMORY_SHARE,
    CheckpointShelf,
    RunCheckpoint,
    available_memory_bytes,
    shelf_memory_bytes,
)
from proxy_runs.runner import TorchRunner, prepared_data
from tests.conftest import make_spec

STEPS = 8  # the run's plan
PAUSE = 4  # the step it pauses after


def _run(
    spec: StudySpec, data: PreparedData, *, pause: bool = False, resume: RunCheckpoint | None = None
) -> tuple[RunRecord, list[RunCheckpoint]]:
    paused: list[RunCheckpoint] = []
    record = train_proxy(
        spec,
        batch_size=4,
        learning_rate=3e-3,
        budget=RunBudget(max_steps=STEPS),
        setup=setup_proxy(spec, data=data),
        eval_every=2,
        eval_at_start=False,
        max_eval_examples=8,
        should_stop=(lambda p: p.step >= PAUSE) if pause else None,
        on_pause=paused.append,
        resume=resume,
    )
    return record, paused


def _curve(record: RunRecord) -> tuple[list[float], list[float]]:
    return [s["loss"] for s in record.metrics["steps"]], [e["eval_loss"] for e in record.metrics["evals"]]


@pytest.mark.parametrize("method", sorted(METHOD_REGISTRY))
def test_a_resumed_run_is_bitwise_the_run_that_never_stopped(
    method: str, tiny_llama: Path, instruction_jsonl: Path
) -> None:
    """Every method, with dropout on where the method has it: the optimizer's moments, the schedule, the
    method's own per-step work (BaLoRA, RefLoRA) and the random state all carry over."""
    options = {"dropout": 0.1} if method not in ("full", "prompt_tuning") else {}
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, method=method, method_options=options))
    data = prepared_data(spec)
    straight, _ = _run(spec, data)
    first, paused = _run(spec, data, pause=True)
    assert first.status == RunStatus.PRUNED and first.steps == PAUSE and len(paused) == 1
    resumed, _ = _run(spec, data, resume=paused[0])

    assert resumed.status == RunStatus.SUCCESS and resumed.steps == STEPS
    assert _curve(resumed) == _curve(straight)  # exact, not approximately
    assert resumed.eval_loss == straight.eval_loss
    assert resumed.examples_seen == straight.examples_seen == 4 * STEPS
    assert resumed.examples_trained == 4 * (STEPS - PAUSE)
    assert resumed.meta["resumed_from"]["examples_seen"] == 4 * PAUSE


def test_a_checkpoint_resumes_only_the_run_it_paused(tiny_llama: Path, instruction_jsonl: Path) -> None:
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl))
    data = prepared_data(spec)
    _, paused = _run(spec, data, pause=True)
    with pytest.raises(ValueError, match="cannot resume"):
        train_proxy(
            spec,
            batch_size=4,
            learning_rate=1e-2,  # another LR
            budget=RunBudget(max_steps=STEPS),
            setup=setup_proxy(spec, data=data),
            resume=paused[0],
        )


def test_a_checkpoint_holds_the_trainable_state_only(tiny_llama: Path, instruction_jsonl: Path) -> None:
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl))
    data = prepared_data(spec)
    record, paused = _run(spec, data, pause=True)
    checkpoint = paused[0]
    assert checkpoint.examples_seen == 4 * PAUSE and checkpoint.loop.step == PAUSE
    assert sum(t.numel() for t in checkpoint.parameters.values()) == record.trainable_params
    assert all(t.device.type == "cpu" for t in checkpoint.parameters.values())
    # parameters, and AdamW's two moments of each (plus a step counter per parameter)
    assert 3 * 4 * record.trainable_params <= checkpoint.nbytes < 3 * 4 * record.trainable_params + 4096


def _checkpoint_of(nbytes: int, loss: float | None = None) -> RunCheckpoint:
    values = torch.zeros(nbytes // 4)
    loop = SimpleNamespace(evals=[EvalPoint(step=4, examples_seen=16, eval_loss=loss)] if loss else [])
    return RunCheckpoint(4, 1e-3, 0, 8, 16, 0.0, {"w": values}, {}, {}, loop, 4, torch.get_rng_state(), None)


def test_the_shelf_keeps_paused_runs_within_its_byte_cap_and_drops_the_unpromoted() -> None:
    shelf = CheckpointShelf(capacity_bytes=1000)
    assert shelf.put("a", _checkpoint_of(400)) and shelf.put("b", _checkpoint_of(400))
    assert not shelf.put("c", _checkpoint_of(400))  # would exceed the cap: that run will restart
    assert shelf.paused_at("a") == 16 and shelf.paused_at("c") == 0
    shelf.keep_only({"b"})
    assert len(shelf) == 1 and shelf.take("a") is None
    assert shelf.take("b") is not None and shelf.take("b") is None  # a run resumes once


def test_past_its_memory_cap_the_shelf_puts_paused_runs_on_disk_and_cleans_up(tmp_path: Path) -> None:
    with CheckpointShelf(capacity_bytes=500, spill_bytes=1000, spill_parent=tmp_path) as shelf:
        assert shelf.put("a", _checkpoint_of(400)) and shelf.put("b", _checkpoint_of(400))
        assert shelf.put("c", _checkpoint_of(400)) and not shelf.put("d", _checkpoint_of(400))  # disk full
        (folder,) = tmp_path.iterdir()
        assert (shelf.held_bytes, shelf.spilled_bytes, len(list(folder.iterdir()))) == (400, 800, 2)
        assert shelf.paused_at("b") == 16 and shelf.paused_at("d") == 0
        shelf.keep_only({"a", "b"})  # "c" was not promoted: its file goes
        assert len(list(folder.iterdir())) == 1
        taken = shelf.take("b")
        assert taken is not None and torch.equal(taken.parameters["w"], torch.zeros(100))
        assert shelf.take("b") is None and not list(folder.iterdir())  # a run resumes once
        assert shelf.put("e", _checkpoint_of(400))
    assert not list(tmp_path.iterdir())  # closing the shelf deletes the folder and what was left in it


def test_the_memory_a_shelf_may_use_is_a_quarter_of_what_the_machine_has_available() -> None:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    total = int(meminfo["MemTotal"].split()[0]) * 1024
    available = available_memory_bytes()
    assert available is not None and 0 < available <= total
    assert abs(shelf_memory_bytes() - SHELF_MEMORY_SHARE * available) < 0.05 * available  # it moves a little


def test_a_full_shelf_makes_room_for_a_lower_loss_by_dropping_the_highest(tmp_path: Path) -> None:
    """Halving promotes the lowest losses of a rung: a shelf with room for 2 of rung 0's 4 runs, one in
    memory and one on disk, ends up holding the 2 lowest, whatever order they paused in."""
    with CheckpointShelf(capacity_bytes=400, spill_bytes=400, spill_parent=tmp_path) as shelf:
        for key, loss in (("a", 3.0), ("b", 2.0), ("c", 1.0), ("d", 2.5)):
            shelf.put(key, _checkpoint_of(400, loss))
        assert {k for k in "abcd" if shelf.paused_at(k)} == {"b", "c"}
        assert not shelf.put("e", _checkpoint_of(400, 4.0))  # higher than both: it will restart
        assert not shelf.put("f", _checkpoint_of(1200, 0.5))  # larger than memory or disk: nothing dropped
        assert len(shelf) == 2


def test_a_plan_needs_room_for_the_runs_rung_1_promotes_not_for_all_of_rung_0() -> None:
    assert paused_runs_needed(32) == 11 + 2  # rung 1 keeps a third, and the leader's 2 LR neighbours
    assert paused_runs_needed(4) == 4  # never more than the configs there are


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_a_promoted_config_goes_on_from_its_paused_run(
    where: str, tiny_llama: Path, instruction_jsonl: Path, tmp_path: Path
) -> None:
    """run_to_rung with a shelf: rung 1 is the same run as without one, for a third of its examples, whether
    its checkpoint waited in memory or on disk."""
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl))
    runner = TorchRunner()
    capacity = (10**9, 0) if where == "memory" else (0, 10**9)
    shelf = CheckpointShelf(capacity[0], spill_bytes=capacity[1], spill_parent=tmp_path)
    config = (4, 3e-3)
    first = run_to_rung(runner, spec, config, top_examples=72, stop_at=8, eval_examples=8, paused=shelf)
    assert first.status == RunStatus.PRUNED and shelf.paused_at(shelf_key(spec, config)) == 8
    resumed = run_to_rung(runner, spec, config, top_examples=72, stop_at=24, eval_examples=8, paused=shelf)
    restarted = run_to_rung(runner, spec, config, top_examples=72, stop_at=24, eval_examples=8)
    assert _curve(resumed) == _curve(restarted)
    assert (resumed.examples_trained, restarted.examples_trained) == (16, 24)
    assert len(shelf) == 1  # rung 1's own pause, ready for rung 2
    assert shelf.files_written == (2 if where == "disk" else 0)
    shelf.close()


def test_resumed_promotions_cost_each_rung_only_its_new_examples() -> None:
    rungs = [Rung(32, 24), Rung(96, 8), Rung(288, 3)]
    assert halving_cost(rungs, resumes=False) == 24 * 32 + 8 * 96 + 3 * 288
    assert halving_cost(rungs, resumes=True) == 24 * 32 + 8 * (96 - 32) + 3 * (288 - 96)


def _study_of_32_configs(tiny_llama: Path, instruction_jsonl: Path) -> StudySpec:
    """4 batch sizes × 8 LRs on 900 examples, a budget of 10% of that grid in full."""
    return parse_spec(
        make_spec(
            tiny_llama,
            instruction_jsonl,
            batch_sizes=[4, 8, 16, 32],
            lr_range=[3e-3, 3e-1],
            budget={"proxy_seconds": None, "proxy_examples": 2880},
        )
    )


def test_a_plan_that_can_hold_its_paused_runs_buys_more_with_the_same_budget(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    spec = _study_of_32_configs(tiny_llama, instruction_jsonl)
    restarting = plan_study(spec, n_train=900)
    resuming = plan_study(spec, n_train=900, pausable_runs=1000)
    too_few = plan_study(spec, n_train=900, pausable_runs=10)  # not rung 1's 13: restarts, as before
    assert not restarting.resumes_promotions and resuming.resumes_promotions
    assert not too_few.resumes_promotions and too_few.estimated_examples == restarting.estimated_examples
    assert resuming.estimated_examples <= 2880 and "resuming" in resuming.describe()
    assert len(resuming.configs) > len(restarting.configs)  # the LR grid no longer has to narrow


def _plan_with_paused_runs(
    tiny_llama: Path, instruction_jsonl: Path, seconds_per_example: float, disk_bytes: int = 2**40
) -> tuple[StudyPlan, ShelfRoom]:
    spec = _study_of_32_configs(tiny_llama, instruction_jsonl)
    room = ShelfRoom(memory_bytes=3 * 2**20, disk_bytes=disk_bytes)  # memory holds 3 runs of 1 MiB

    def plan_for(pausable: int) -> StudyPlan:
        return plan_study(spec, n_train=900, pausable_runs=pausable)

    return plan_with_paused_runs(TorchRunner(), plan_for, 2**20, seconds_per_example, room)


def test_paused_runs_beyond_memory_go_to_disk_when_retraining_would_take_longer(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    """1 MiB checkpoints written and read in milliseconds, against rung 0 at a second an example."""
    plan, capacity = _plan_with_paused_runs(tiny_llama, instruction_jsonl, seconds_per_example=1.0)
    assert plan.resumes_promotions and capacity.disk_bytes == 2**40
    assert "go to a temporary folder on disk" in plan.describe()


def test_paused_runs_restart_when_disk_would_take_longer_than_retraining(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    """The same checkpoints against rung 0 at a nanosecond an example: restarting is cheaper, and said."""
    plan, capacity = _plan_with_paused_runs(tiny_llama, instruction_jsonl, seconds_per_example=1e-9)
    assert not plan.resumes_promotions and capacity.disk_bytes == 0
    assert "promoted configs restart" in plan.describe()


def test_paused_runs_restart_when_neither_memory_nor_disk_holds_rung_0_and_the_plan_says_so(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    plan, capacity = _plan_with_paused_runs(tiny_llama, instruction_jsonl, 1.0, disk_bytes=4 * 2**20)
    assert not plan.resumes_promotions and capacity.disk_bytes == 0
    assert "on disk: promoted configs restart" in plan.describe()
