"""Pausing a proxy run at a rung and resuming it later, exactly as if it had never stopped.

Successive halving runs every config to rung 0 and promotes the best third to rung 1, 3× as far. Every rung
follows the top rung's LR schedule, so a run promoted to rung r + 1 is the same run as before, only longer:
restarting it from scratch (what the engine did until 2026-12-04) retrains the first rung_r examples for
nothing. With η = 3 that repeat is a third of every promoted run, about a fifth of a whole study.

A `RunCheckpoint` holds what the training loop's next step depends on: the trainable parameters, the
optimizer's moments, the schedule's position, the loop's own counters, the micro-batch size and the torch
random state (dropout). The frozen base model is not in it: `setup_proxy` rebuilds it from the spec, the same
on every call (PiSSA and OLoRA rewrite the base deterministically from it). Resumed on the same machine, a
run's losses are bitwise those of the uninterrupted run (`tests/test_resume.py` checks every method).

A `CheckpointShelf` keeps a study's paused runs in host memory, up to a byte cap: only checkpoints of runs
that may still be promoted are worth their bytes, and a run whose checkpoint did not fit restarts as before.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# What a study may hold in paused runs: LoRA on a 135M model needs ~10–60 MB a run (parameters and Adam's two
# moments), so a rung 0 of 36 configs fits; full fine-tuning of that model (1.6 GB a run) mostly restarts.
SHELF_CAPACITY_BYTES = 2 * 1024**3
# Bytes a paused run holds per trainable parameter: the fp32 value and AdamW's two fp32 moments.
CHECKPOINT_BYTES_PER_PARAMETER = 3 * 4


@dataclass(frozen=True)
class RunCheckpoint:
    """A run paused after optimizer step `loop.step`; `train_proxy(resume=...)` goes on from it."""

    batch_size: int
    learning_rate: float
    seed: int
    planned_steps: int  # the schedule it follows; a resumed run must plan the same
    examples_seen: int
    seconds: float  # training time before the pause: the resumed curve's clock goes on from it
    parameters: dict[str, torch.Tensor]  # trainable parameters by name, on the CPU
    optimizer: dict[str, Any]  # optimizer.state_dict(), its tensors on the CPU
    schedule: dict[str, Any]  # the LR scheduler's state_dict()
    loop: Any  # the engine's loop state (counters, curves, divergence window), a private copy
    micro_batch: int  # after any out-of-memory halving
    cpu_rng: torch.Tensor
    cuda_rng: torch.Tensor | None

    @functools.cached_property  # the shelf sums it on every put: walk the tensors once
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in _tensors(self.parameters)) + sum(
            t.numel() * t.element_size() for t in _tensors(self.optimizer)
        )


def capture(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    loop: Any,
    config: tuple[int, float, int, int],
    micro_batch: int,
    seconds: float,
    device: torch.device,
) -> RunCheckpoint:
    """A copy on the CPU of everything the next optimizer step depends on; `config` is (batch size, LR, seed,
    planned steps)."""
    batch_size, learning_rate, seed, planned_steps = config
    parameters = {
        name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad
    }
    return RunCheckpoint(
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        planned_steps=planned_steps,
        examples_seen=loop.examples_seen,
        seconds=seconds,
        parameters=parameters,
        optimizer=_cpu_copy(optimizer.state_dict()),
        schedule=copy.deepcopy(schedule.state_dict()),
        loop=copy.deepcopy(loop),
        micro_batch=micro_batch,
        cpu_rng=torch.get_rng_state(),
        cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    )


def check_resumable(checkpoint: RunCheckpoint, config: tuple[int, float, int, int]) -> None:
    """A checkpoint resumes only the run it paused: same batch size, LR, seed and schedule."""
    paused = (checkpoint.batch_size, checkpoint.learning_rate, checkpoint.seed, checkpoint.planned_steps)
    if paused != config:
        raise ValueError(
            f"checkpoint of (batch size, LR, seed, planned steps) {paused} cannot resume a run of {config}"
        )


def restore(
    checkpoint: RunCheckpoint,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
) -> Any:
    """Put the checkpoint into a freshly set-up model, optimizer and schedule; returns the loop state.

    Tensors are copied in, never shared: the optimizer updates its moments in place, and a checkpoint may be
    resumed more than once (a test does)."""
    named = dict(model.named_parameters())
    missing = sorted(set(checkpoint.parameters) - set(named))
    if missing:
        raise ValueError(f"checkpoint parameters not in the model: {missing[:3]}")
    with torch.no_grad():
        for name, value in checkpoint.parameters.items():
            named[name].copy_(value)
    optimizer.load_state_dict(_cpu_copy(checkpoint.optimizer))
    schedule.load_state_dict(copy.deepcopy(checkpoint.schedule))
    torch.set_rng_state(checkpoint.cpu_rng)
    if checkpoint.cuda_rng is not None and device.type == "cuda":
        torch.cuda.set_rng_state(checkpoint.cuda_rng, device)
    return copy.deepcopy(checkpoint.loop)


def checkpoint_bytes(trainable_parameters: int) -> int:
    """Bytes a paused run holds for this many trainable parameters (`CHECKPOINT_BYTES_PER_PARAMETER`)."""
    return trainable_parameters * CHECKPOINT_BYTES_PER_PARAMETER


class CheckpointShelf:
    """A study's paused runs by key, within `capacity_bytes`; a run resumes by taking its checkpoint off."""

    def __init__(self, capacity_bytes: int = SHELF_CAPACITY_BYTES) -> None:
        self.capacity_bytes = capacity_bytes
        self._held: dict[Hashable, RunCheckpoint] = {}

    @property
    def held_bytes(self) -> int:
        return sum(c.nbytes for c in self._held.values())

    def __len__(self) -> int:
        return len(self._held)

    def put(self, key: Hashable, checkpoint: RunCheckpoint) -> bool:
        """Keep `checkpoint` under `key` if it fits; False when it does not (that run will restart)."""
        self._held.pop(key, None)
        if self.held_bytes + checkpoint.nbytes > self.capacity_bytes:
            return False
        self._held[key] = checkpoint
        return True

    def paused_at(self, key: Hashable) -> int:
        """Examples the run under `key` had seen when it paused; 0 without a checkpoint (it would restart)."""
        checkpoint = self._held.get(key)
        return checkpoint.examples_seen if checkpoint is not None else 0

    def take(self, key: Hashable) -> RunCheckpoint | None:
        """The checkpoint under `key`, removed from the shelf (a run resumes once); None without one."""
        return self._held.pop(key, None)

    def keep_only(self, keys: set[Hashable]) -> None:
        """Drop every checkpoint not under `keys`: runs that were not promoted will never resume."""
        self._held = {k: c for k, c in self._held.items() if k in keys}


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for value in obj.values() for t in _tensors(value)]
    if isinstance(obj, list | tuple):
        return [t for value in obj for t in _tensors(value)]
    return []


def _cpu_copy(obj: Any) -> Any:
    """A deep copy with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: _cpu_copy(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_cpu_copy(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(_cpu_copy(value) for value in obj)
    return copy.deepcopy(obj)
