"""`SyntheticRunner`: proxy runs answered from a closed-form loss surface, without torch, in microseconds.

The study's logic (halving, extensions, fits, run-length trends, transfer) runs on it unchanged, so tests of
that logic, of the job queue and of the dashboard see real studies in milliseconds. Its records say
`"source": "synthetic"` in their meta and `device: "none"`.

The surface, for a run at batch B and learning rate η after N examples seen:

    loss = floor + width · (log10 η − log10 η*(B, N))² + batch_cost / √B + slow / N

or, with `best_batch` set, batch_cost · |log2(B / best_batch)| in place of batch_cost / √B (a loss lowest at
one batch size, rising by batch_cost per doubling away from it),

with η*(B, N) = lr_at_batch_8 · (B / 8)^κ · (N / 1000)^γ: Adam's square-root rule (κ = 0.5) and a slowly
falling optimum with run length (γ = −0.1). Runs past `diverge_factor` × η* diverge at once. A deterministic
seed noise (`noise`, relative) makes second seeds differ as real ones do.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from advisor.records import RunConfig, RunRecord, RunStatus
from advisor.specs import StudySpec
from advisor.study.halving import shelf_key
from advisor.study.runner import (
    Calibration,
    Config,
    DataSummary,
    PausedRuns,
    Probe,
    RunRequest,
    Schedule,
    ShelfRoom,
)

SYNTHETIC_PARAMETERS = 10_000  # trainable parameters the synthetic adapter claims (prices paused runs)


@dataclass(frozen=True)
class Surface:
    """The closed-form loss surface (module docstring); every field in the formula's units."""

    lr_at_batch_8: float = 2e-4
    kappa: float = 0.5
    length_exponent: float = -0.1
    floor: float = 1.0
    width: float = 0.25
    batch_cost: float = 0.5
    slow: float = 20.0
    diverge_factor: float = 10.0
    noise: float = 0.0  # relative seed-to-seed noise
    best_batch: int | None = None
    lambda_max: float = 40.0  # λ_max the probe reports (for LoRA; methods scale it by `method_lambda`)
    method_lambda: dict[str, float] = field(default_factory=lambda: {"pissa": 4.0, "olora": 3.0})

    def optimum(self, batch_size: int, examples: int) -> float:
        return (
            self.lr_at_batch_8
            * (batch_size / 8) ** self.kappa
            * (max(examples, 1) / 1000) ** self.length_exponent
        )

    def batch_term(self, batch_size: int) -> float:
        if self.best_batch is None:
            return self.batch_cost / math.sqrt(batch_size)
        return self.batch_cost * abs(math.log2(batch_size / self.best_batch))

    def diverges(self, batch_size: int, lr: float, examples: int) -> bool:
        return lr > self.diverge_factor * self.optimum(batch_size, examples)

    def loss(self, batch_size: int, lr: float, examples: int, seed: int = 0) -> float:
        distance = math.log10(lr / self.optimum(batch_size, examples))
        clean = (
            self.floor + self.width * distance**2 + self.batch_term(batch_size) + self.slow / max(examples, 1)
        )
        return clean * (1.0 + self.noise * _unit_noise(batch_size, lr, seed))


def _unit_noise(batch_size: int, lr: float, seed: int) -> float:
    """A fixed draw in [−1, 1] per (batch, LR, seed): the same run always gets the same noise."""
    digest = hashlib.sha256(f"{batch_size}:{lr:.12g}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**63 - 1.0


class _Shelf:
    """Paused synthetic runs: only where each paused (the surface needs no state to go on)."""

    def __init__(self) -> None:
        self.paused: dict[Hashable, int] = {}

    def paused_at(self, key: Hashable) -> int:
        return self.paused.get(key, 0)

    def keep_only(self, keys: set[Hashable]) -> None:
        self.paused = {k: v for k, v in self.paused.items() if k in keys}


@dataclass
class SyntheticRunner:
    """A `ProxyRunner` on `surface`. `train_examples`/`eval_examples` are the dataset it pretends to have;
    `seconds_per_run` sleeps that long per run (to test timing, leases and cancellation); `on_run` is called
    before every run (tests count runs or raise from it)."""

    surface: Surface = field(default_factory=Surface)
    train_examples: int = 2_000
    eval_examples: int = 200
    seconds_per_run: float = 0.0
    on_run: Callable[[StudySpec, Config], None] | None = None
    runs: int = 0  # runs trained so far
    batched: bool = False  # True: the study hands it a rung's runs at once, as to a parallel runner

    def prepare(self, spec: StudySpec) -> DataSummary:
        content = hashlib.sha256(spec.dataset.model_dump_json().encode()).hexdigest()
        fingerprint = {"content_sha256": content, "n_train": self.train_examples}
        return DataSummary(self.train_examples, self.eval_examples, fingerprint)

    def calibrate(self, spec: StudySpec, batch_size: int) -> Calibration:
        if self.on_run is not None:
            self.on_run(spec, (batch_size, 1e-4))
        record = self._record(spec, (batch_size, 1e-4), 2 * batch_size, 2 * batch_size)
        return Calibration(1e-4, 0.0, record, 12 * SYNTHETIC_PARAMETERS)

    def run(
        self,
        spec: StudySpec,
        config: Config,
        schedule: Schedule,
        stop_at: int,
        paused: PausedRuns | None = None,
    ) -> RunRecord:
        if self.on_run is not None:
            self.on_run(spec, config)
        if self.seconds_per_run:
            time.sleep(self.seconds_per_run)
        self.runs += 1
        key = shelf_key(spec, config)
        shelf = paused if isinstance(paused, _Shelf) else None
        resumed = shelf.paused.pop(key, 0) if shelf is not None else 0
        end = min(stop_at, schedule.examples)
        stopped = end < schedule.examples
        record = self._record(spec, config, end, schedule.eval_examples, resumed=resumed, stopped=stopped)
        if shelf is not None and stopped and record.status != RunStatus.DIVERGED:
            shelf.paused[key] = end
        return record

    def run_many(self, requests: Sequence[RunRequest], paused: PausedRuns | None = None) -> list[RunRecord]:
        return [self.run(r.spec, r.config, r.schedule, r.stop_at, paused) for r in requests]

    def probe(self, spec: StudySpec) -> Probe:
        value = self.surface.lambda_max * self.surface.method_lambda.get(spec.method, 1.0)
        evidence = {"model": spec.model, "median_lambda_max": value, "max_lambda_max": value, "modules": 1}
        report = {
            "kind": "hessian_top_eigenvalue",
            "model": spec.model,
            "method": spec.method,
            "rank": spec.rank,
            "estimator": "closed form",
            "modules": [{"name": "synthetic", "n_params": SYNTHETIC_PARAMETERS, "eigenvalue": value}],
            "median_eigenvalue": value,
            "max_eigenvalue": value,
        }
        return Probe(value, evidence, report)

    def shelf_room(self) -> ShelfRoom:
        return ShelfRoom(memory_bytes=2 * 1024**3)

    def spill_seconds(self, checkpoint_bytes: int, promoted_share: float) -> float:
        return 0.0

    def paused_runs(self, room: ShelfRoom) -> AbstractContextManager[PausedRuns]:
        return _open_shelf()

    def _record(
        self,
        spec: StudySpec,
        config: Config,
        examples: int,
        eval_examples: int,
        *,
        resumed: int = 0,
        stopped: bool = False,
    ) -> RunRecord:
        batch, lr = config
        seed = spec.training.seed
        diverged = self.surface.diverges(batch, lr, examples)
        points = sorted({*range(eval_examples, examples + 1, max(eval_examples, 1)), examples})
        evals = [
            {
                "step": max(1, seen // batch),
                "examples_seen": seen,
                "eval_loss": self.surface.loss(batch, lr, seen, seed),
            }
            for seen in points
            if seen > 0
        ]
        status = RunStatus.DIVERGED if diverged else RunStatus.PRUNED if stopped else RunStatus.SUCCESS
        seen = batch if diverged else examples
        return RunRecord(
            status=status,
            error="the loss became non-finite at step 1" if diverged else None,
            config=RunConfig(
                method=spec.method,
                rank=spec.rank,
                alpha=float(spec.alpha or spec.rank),
                batch_size=batch,
                learning_rate=lr,
                micro_batch_size=batch,
                accumulation_steps=1,
                planned_steps=max(1, examples // batch),
                warmup_steps=0,
                max_seq_len=spec.training.max_seq_len,
                seed=seed,
                device="none",
                precision="fp32",
            ),
            spec=spec.model_dump(mode="json"),
            eval_loss=None if diverged or not evals else evals[-1]["eval_loss"],
            best_eval_loss=None if diverged or not evals else min(e["eval_loss"] for e in evals),
            steps=1 if diverged else max(1, examples // batch),
            examples_seen=seen,
            seconds=self.seconds_per_run,
            trainable_params=SYNTHETIC_PARAMETERS,
            metrics={"steps": [], "evals": [] if diverged else evals, "oom_events": []},
            dataset_fingerprint={"n_train": self.train_examples},
            meta={"source": "synthetic", "pid": os.getpid()}
            | ({"resumed_from": {"examples_seen": resumed}} if resumed else {}),
        )


@contextmanager
def _open_shelf() -> Iterator[PausedRuns]:
    yield _Shelf()
