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

A `CheckpointShelf` keeps a study's paused runs in host memory up to a byte cap (a share of the memory the
machine or its container has available), and past it, where the study allows, in a temporary folder on disk:
LoRA at rank 64 on a 1B model pauses at ~0.5 GB a run, full fine-tuning of a 135M model at 1.6 GB, so a
rung 0 of 36 configs holds 17–58 GB. Only checkpoints of runs that may still be promoted are worth their
bytes: when the shelf is full, a run with a lower loss at its pause takes the place of the highest, so room
for the third that rung 1 promotes is enough, and a run kept nowhere restarts as before. Disk is worth it
only when writing and reading a checkpoint costs less than retraining the examples it saves (`spill_seconds`).
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch
from torch import nn

# What a study may hold in paused runs in host memory: a quarter of the memory available when it starts (the
# rest is the training's own, and the service may run other studies beside it), or 2 GiB where that cannot be
# read. LoRA on a 135M model needs ~10–60 MB a run (parameters and Adam's two moments), so a rung 0 of 36
# configs fits in either; full fine-tuning of that model (1.6 GB a run) needs disk.
SHELF_MEMORY_SHARE = 0.25
SHELF_CAPACITY_BYTES = 2 * 1024**3
# Past memory, paused runs may go to a temporary folder (under TMPDIR), up to this share of its free space.
SPILL_DISK_SHARE = 0.5
# The write and read speed of that folder are measured on a file this large (or the checkpoint's size if
# smaller), written through to the disk (fsync), so that the page cache does not flatter it.
SPILL_PROBE_BYTES = 64 * 1024**2
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


def available_memory_bytes() -> int | None:
    """Bytes of memory this process may still use: Linux's MemAvailable, lowered to what the container's
    cgroup limit leaves (a container sees the host's /proc/meminfo); None off Linux."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit, usage = Path(limit_file).read_text().strip(), Path(usage_file).read_text().strip()
            available = min(available, max(int(limit) - int(usage), 0))
        except (OSError, ValueError):  # no such cgroup, or "max": no limit
            continue
    return available


def shelf_memory_bytes() -> int:
    """What a study's paused runs may hold in host memory (`SHELF_MEMORY_SHARE`)."""
    available = available_memory_bytes()
    return int(SHELF_MEMORY_SHARE * available) if available is not None else SHELF_CAPACITY_BYTES


def spill_disk_bytes(parent: Path | None = None) -> int:
    """What paused runs may hold on disk under `parent` (TMPDIR by default): `SPILL_DISK_SHARE` of its free
    space."""
    return int(SPILL_DISK_SHARE * shutil.disk_usage(parent or tempfile.gettempdir()).free)


@dataclass(frozen=True)
class SpillSpeed:
    """Seconds per byte to write a checkpoint to disk (through to it) and to read it back."""

    write: float
    read: float

    def per_promoted_run(self, nbytes: int, promoted_share: float) -> float:
        """Disk time per promoted run, as this speed predicts it: its read, and the writes of every paused
        run (1 / `promoted_share` of them per promoted one, the rest never read back)."""
        return nbytes * (self.write / promoted_share + self.read)


def measure_spill_speed(folder: Path | None = None, nbytes: int = SPILL_PROBE_BYTES) -> SpillSpeed:
    """Write and read back `nbytes` (at most SPILL_PROBE_BYTES) of float32 under `folder`, the way a paused
    run would go there, and time both."""
    size = max(min(nbytes, SPILL_PROBE_BYTES) // 4, 1)
    probe = torch.ones(size, dtype=torch.float32)
    with tempfile.TemporaryDirectory(prefix="advisor-spill-probe-", dir=folder) as tmp:
        path = Path(tmp) / "probe.pt"
        started = time.perf_counter()
        with path.open("wb") as handle:
            torch.save(probe, handle)
            handle.flush()
            os.fsync(handle.fileno())
        written = time.perf_counter()
        torch.load(path, weights_only=True)
        read = time.perf_counter()
    return SpillSpeed(write=(written - started) / (4 * size), read=(read - written) / (4 * size))


# The probe flatters large checkpoints: SmolLM2-135M's full fine-tuning state (1.6 GB in ~600 tensors)
# took 2.8 s/GB to write where the 64 MiB probe took 1.7 (bench/paused_runs.py), so disk time counts double.
SPILL_TIME_MARGIN = 2.0


def spill_seconds(checkpoint_nbytes: int, speed: SpillSpeed, promoted_share: float) -> float:
    """Disk time a promoted run is charged (SPILL_TIME_MARGIN × the speed test's prediction): paused runs
    are worth putting on disk when this is less than retraining the rung they paused at."""
    return SPILL_TIME_MARGIN * speed.per_promoted_run(checkpoint_nbytes, promoted_share)


@dataclass(frozen=True)
class _Spilled:
    path: Path
    nbytes: int
    examples_seen: int
    loss: float


def pause_loss(checkpoint: RunCheckpoint) -> float:
    """The eval loss the run had when it paused (its rung's; infinite without one): what promotion ranks."""
    evals = getattr(checkpoint.loop, "evals", None)
    return float(evals[-1].eval_loss) if evals else float("inf")


class CheckpointShelf:
    """A study's paused runs by key, within `capacity_bytes` of memory and `spill_bytes` more on disk; a run
    resumes by taking its checkpoint off. Close it (or use it in a `with`) to delete what went to disk.

    Disk means a temporary folder (under `spill_parent`, by default TMPDIR), made on the first spill and only
    readable by this user: the shelf loads back in full (pickled loop state and all) only files it wrote."""

    def __init__(
        self,
        capacity_bytes: int = SHELF_CAPACITY_BYTES,
        *,
        spill_bytes: int = 0,
        spill_parent: Path | None = None,
    ) -> None:
        self.capacity_bytes = capacity_bytes
        self.spill_bytes = spill_bytes
        self.spill_parent = spill_parent
        self._held: dict[Hashable, RunCheckpoint] = {}
        self._spilled: dict[Hashable, _Spilled] = {}
        self._spill_folder: tempfile.TemporaryDirectory[str] | None = None
        self.files_written = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Forget every paused run and delete the disk folder."""
        self._held.clear()
        self._spilled.clear()
        if self._spill_folder is not None:
            self._spill_folder.cleanup()
            self._spill_folder = None

    @property
    def held_bytes(self) -> int:
        return sum(c.nbytes for c in self._held.values())

    @property
    def spilled_bytes(self) -> int:
        return sum(s.nbytes for s in self._spilled.values())

    def __len__(self) -> int:
        return len(self._held) + len(self._spilled)

    def put(self, key: Hashable, checkpoint: RunCheckpoint) -> bool:
        """Keep `checkpoint` under `key` in memory if it fits, else on disk if that fits. When neither does,
        it takes the place of the held run with the highest loss at its pause, if that is higher than its
        own: halving promotes the best third of a rung, so the shelf needs room for those only (and the
        leader's LR neighbours), not for every run of rung 0. False when it is kept nowhere (that run will
        restart)."""
        self._drop(key)
        if checkpoint.nbytes > max(self.capacity_bytes, self.spill_bytes):
            return False  # no eviction makes room for it
        while not self._fits(checkpoint.nbytes):
            worst = max((*self._held, *self._spilled), key=self._loss_at_pause, default=None)
            if worst is None or self._loss_at_pause(worst) <= pause_loss(checkpoint):
                return False
            self._drop(worst)
        return self._keep(key, checkpoint)

    def _fits(self, nbytes: int) -> bool:
        in_memory = self.held_bytes + nbytes <= self.capacity_bytes
        return in_memory or self.spilled_bytes + nbytes <= self.spill_bytes

    def _loss_at_pause(self, key: Hashable) -> float:
        held = self._held.get(key)
        return pause_loss(held) if held is not None else self._spilled[key].loss

    def _keep(self, key: Hashable, checkpoint: RunCheckpoint) -> bool:
        """Put a checkpoint that `_fits` in memory, else on disk."""
        if self.held_bytes + checkpoint.nbytes <= self.capacity_bytes:
            self._held[key] = checkpoint
            return True
        if self._spill_folder is None:
            self._spill_folder = tempfile.TemporaryDirectory(
                prefix="advisor-paused-runs-", dir=self.spill_parent
            )
        self.files_written += 1
        path = Path(self._spill_folder.name) / f"paused-{self.files_written}.pt"
        torch.save(checkpoint, path)
        loss = pause_loss(checkpoint)
        self._spilled[key] = _Spilled(path, checkpoint.nbytes, checkpoint.examples_seen, loss)
        return True

    def paused_at(self, key: Hashable) -> int:
        """Examples the run under `key` had seen when it paused; 0 without a checkpoint (it would restart)."""
        if key in self._held:
            return self._held[key].examples_seen
        spilled = self._spilled.get(key)
        return spilled.examples_seen if spilled is not None else 0

    def take(self, key: Hashable) -> RunCheckpoint | None:
        """The checkpoint under `key`, removed from the shelf (a run resumes once); None without one."""
        if key in self._held:
            return self._held.pop(key)
        spilled = self._spilled.pop(key, None)
        if spilled is None:
            return None
        checkpoint: RunCheckpoint = torch.load(spilled.path, weights_only=False)
        spilled.path.unlink(missing_ok=True)
        return checkpoint

    def keep_only(self, keys: set[Hashable]) -> None:
        """Drop every checkpoint not under `keys`: runs that were not promoted will never resume."""
        for key in [k for k in (*self._held, *self._spilled) if k not in keys]:
            self._drop(key)

    def _drop(self, key: Hashable) -> None:
        self._held.pop(key, None)
        spilled = self._spilled.pop(key, None)
        if spilled is not None:
            spilled.path.unlink(missing_ok=True)


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
