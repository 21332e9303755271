"""`TorchRunner`: the study's proxy runs trained for real (advisor.study.runner.ProxyRunner), with torch.

A study asks for runs by spec and config; this keeps each dataset tokenized once per study, builds a fresh
adapter for every run, and holds paused runs on a `CheckpointShelf` between rungs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from advisor.errors import AdvisorError
from advisor.records import RunRecord
from advisor.science.knowledge import KnowledgeStore
from advisor.specs import StudySpec
from advisor.study import StudyResult
from advisor.study import run_study as run_study_with
from advisor.study.halving import shelf_key
from advisor.study.runner import (
    Calibration,
    Config,
    DataSummary,
    PausedRuns,
    Probe,
    Progress,
    RunRequest,
    Schedule,
    ShelfRoom,
)
from proxy_runs.data import PreparedData, prepare_data
from proxy_runs.engine import RunBudget, setup_proxy, train_proxy, untrained_eval_loss
from proxy_runs.models import load_model_and_tokenizer
from proxy_runs.resume import (
    CheckpointShelf,
    checkpoint_bytes,
    measure_spill_speed,
    shelf_memory_bytes,
    spill_disk_bytes,
    spill_seconds,
)
from proxy_runs.shared_shelf import FolderShelf

MAX_EVAL_EXAMPLES = 128  # held-out examples per evaluation: enough to rank configs, cheap on CPU
# A probe inside a study: 16 samples and a loose tolerance rank methods and models by λ_max cheaply.
STUDY_PROBE_SAMPLES = 16
STUDY_PROBE_TOL = 1e-2
STUDY_PROBE_MAX_ITER = 30


def prepared_data(spec: StudySpec) -> PreparedData:
    """The spec's dataset tokenized for the spec's model (its tokenizer decides the token counts)."""
    loaded = load_model_and_tokenizer(spec.model, spec.revision)
    return prepare_data(
        spec.dataset,
        loaded.tokenizer,
        is_seq2seq=loaded.is_seq2seq,
        max_seq_len=spec.training.max_seq_len,
        packing=spec.training.packing,
    )


def data_key(spec: StudySpec) -> tuple[Any, ...]:
    """What the prepared data depends on: the model's tokenizer, the dataset, the sequence length, packing."""
    return (
        spec.model,
        spec.revision,
        spec.dataset.model_dump_json(),
        spec.training.max_seq_len,
        spec.training.packing,
    )


def summary_of(data: PreparedData) -> DataSummary:
    return DataSummary(len(data.train), len(data.eval), dict(data.fingerprint))


class TorchRunner:
    """Trains, probes and pauses proxy runs with torch, on CUDA when there is one."""

    batched = False  # one run at a time, in this process (proxy_runs.parallel trains several at once)

    def __init__(self) -> None:
        self._data: dict[tuple[Any, ...], PreparedData] = {}

    def data(self, spec: StudySpec) -> PreparedData:
        """The spec's prepared data, tokenized on first use."""
        key = data_key(spec)
        if key not in self._data:
            self._data[key] = prepared_data(spec)
        return self._data[key]

    def prepare(self, spec: StudySpec) -> DataSummary:
        return summary_of(self.data(spec))

    def calibrate(self, spec: StudySpec, batch_size: int) -> Calibration:
        """(seconds per training example, overhead seconds per run) from 2 steps at `batch_size`; the
        overhead is model setup plus one evaluation: what every run pays besides its training steps."""
        started = time.perf_counter()
        setup = setup_proxy(spec, data=self.data(spec))
        measured = time.perf_counter()
        base_eval_loss = untrained_eval_loss(setup, spec, max_eval_examples=MAX_EVAL_EXAMPLES)
        started += time.perf_counter() - measured  # once per study, not per run: not part of the overhead
        record = train_proxy(
            spec,
            batch_size=batch_size,
            learning_rate=1e-4,
            budget=RunBudget(max_steps=2),
            setup=setup,
            max_eval_examples=MAX_EVAL_EXAMPLES,
            eval_every=2,
            eval_at_start=False,
        )
        total = time.perf_counter() - started
        steps = record.metrics.get("steps", [])
        train_seconds = (
            steps[-1]["seconds"] if steps else total
        )  # the steps only: taken before the evaluation
        per_example = max(train_seconds, 1e-3) / max(record.examples_seen, 1)
        return Calibration(
            per_example,
            max(0.0, total - train_seconds),
            record,
            checkpoint_bytes(record.trainable_params),
            base_eval_loss,
        )

    def run(
        self,
        spec: StudySpec,
        config: Config,
        schedule: Schedule,
        stop_at: int,
        paused: PausedRuns | None = None,
    ) -> RunRecord:
        """Train `config` on the schedule of `schedule.examples`, stopped once `stop_at` examples are seen.

        No evaluation before training: the untrained loss is the same for every config, and on a short rung
        an evaluation of MAX_EVAL_EXAMPLES costs about as much as the training (a forward pass is a third of
        a training step's work)."""
        batch, lr = config
        shelf = paused if isinstance(paused, CheckpointShelf | FolderShelf) else None
        key = shelf_key(spec, config)
        return train_proxy(
            spec,
            batch_size=batch,
            learning_rate=lr,
            budget=RunBudget(max_examples=schedule.examples),
            setup=setup_proxy(spec, data=self.data(spec)),  # fresh adapter: train_proxy trains in place
            eval_every=max(1, schedule.eval_examples // batch),
            max_eval_examples=MAX_EVAL_EXAMPLES,
            eval_at_start=False,
            should_stop=None if stop_at >= schedule.examples else lambda p: p.examples_seen >= stop_at,
            on_pause=(lambda checkpoint: shelf.put(key, checkpoint)) if shelf is not None else None,
            resume=shelf.take(key) if shelf is not None else None,
        )

    def run_many(self, requests: Sequence[RunRequest], paused: PausedRuns | None = None) -> list[RunRecord]:
        return [self.run(r.spec, r.config, r.schedule, r.stop_at, paused) for r in requests]

    def probe(self, spec: StudySpec) -> Probe:
        """Median λ_max over representative modules at initialisation, cheaply; (None, why) when the probes
        are not installed or fail: the study then goes on without curvature."""
        try:
            from proxy_runs.probes import probe_spec
        except ImportError:
            return Probe(None, {"skipped": "curvature probes unavailable"})
        try:
            setup = setup_proxy(spec, data=self.data(spec))
            report = probe_spec(
                spec,
                setup=setup,
                samples=STUDY_PROBE_SAMPLES,
                tol=STUDY_PROBE_TOL,
                max_iter=STUDY_PROBE_MAX_ITER,
            )
        except AdvisorError as exc:
            return Probe(None, {"skipped": f"probe failed: {exc}"})
        evidence = {
            "model": spec.model,
            "median_lambda_max": report.median_eigenvalue,
            "max_lambda_max": report.max_eigenvalue,
            "modules": len(report.modules),
            "seconds": report.seconds,
        }
        stored = {"kind": "hessian_top_eigenvalue", **report.model_dump(mode="json")}
        return Probe(report.median_eigenvalue, evidence, stored)

    def shelf_room(self) -> ShelfRoom:
        return ShelfRoom(shelf_memory_bytes(), spill_disk_bytes())

    def spill_seconds(self, checkpoint_bytes: int, promoted_share: float) -> float:
        speed = measure_spill_speed(nbytes=checkpoint_bytes)
        return spill_seconds(checkpoint_bytes, speed, promoted_share)

    def paused_runs(self, room: ShelfRoom) -> AbstractContextManager[PausedRuns]:
        return CheckpointShelf(room.memory_bytes, spill_bytes=room.disk_bytes)


def run_study(
    spec: StudySpec,
    *,
    budget_override: float | None = None,
    progress: Progress | None = None,
    store: KnowledgeStore | None = None,
    derive_methods: tuple[str, ...] | list[str] = (),
) -> StudyResult:
    """A whole study on this machine with torch (`advisor.study.run_study` with a fresh `TorchRunner`)."""
    return run_study_with(
        spec,
        TorchRunner(),
        budget_override=budget_override,
        progress=progress,
        store=store,
        derive_methods=derive_methods,
    )
