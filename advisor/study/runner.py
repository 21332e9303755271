"""What a study needs from whatever trains its proxy runs: the `ProxyRunner` protocol and its values.

The study (this package) decides which runs to train, how long, and what their losses mean; a runner trains
them. `proxy_runs.runner.TorchRunner` trains real models with torch; `advisor.study.synthetic.SyntheticRunner`
answers from a closed-form loss surface in microseconds, so the study's logic is tested without torch. Nothing
in this package imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from advisor.records import RunRecord
from advisor.specs import StudySpec

Progress = Callable[[int, int, str], None]  # (runs done, runs planned, what just happened)
Config = tuple[int, float]  # (batch size, learning rate)
ShelfKey = tuple[Config, int]  # a paused run: its config and seed
RunnerFactory = Callable[[], "ProxyRunner"]  # a fresh runner per study (`proxy_runs.torch_runner` in service)


@dataclass(frozen=True)
class DataSummary:
    """What a study reads of its prepared data: the split sizes and the dataset's fingerprint."""

    train_examples: int
    eval_examples: int
    fingerprint: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Calibration:
    """A short run at the largest batch that prices the plan in real seconds.

    `overhead_seconds` is what every run pays besides its training steps (model setup, one evaluation);
    `checkpoint_bytes` what one paused run of this spec holds; `base_eval_loss` the held-out loss before any
    training (the base model's, for adapters that start as the identity), None where it was not measured.
    """

    seconds_per_example: float
    overhead_seconds: float
    record: RunRecord
    checkpoint_bytes: int
    base_eval_loss: float | None = None


@dataclass(frozen=True)
class Schedule:
    """The schedule a run follows: the LR schedule of a run of `examples` examples, evaluated every
    `eval_examples` (rungs are multiples of it, so every rung is measured at exactly its examples)."""

    examples: int
    eval_examples: int


@dataclass(frozen=True)
class RunRequest:
    """One run a study asks for: `config` of `spec` on `schedule`, stopped at `stop_at` examples seen."""

    spec: StudySpec
    config: Config
    schedule: Schedule
    stop_at: int


@dataclass(frozen=True)
class Probe:
    """λ_max at initialisation (median over representative modules), or None with the reason in `evidence`;
    `report` is the full per-module report to store, when there is one."""

    lambda_max: float | None
    evidence: dict[str, Any]
    report: dict[str, Any] | None = None


@dataclass(frozen=True)
class ShelfRoom:
    """Bytes a study's paused runs may hold in memory and on disk."""

    memory_bytes: int
    disk_bytes: int = 0

    def runs(self, checkpoint_nbytes: int) -> int:
        """How many paused runs of `checkpoint_nbytes` each fit."""
        per_run = max(checkpoint_nbytes, 1)
        return self.memory_bytes // per_run + self.disk_bytes // per_run


class PausedRuns(Protocol):
    """The paused runs a study holds between rungs, by `ShelfKey`."""

    def paused_at(self, key: Hashable) -> int:
        """Examples the run of `key` had seen when it paused; 0 when it is not held."""
        ...

    def keep_only(self, keys: set[Hashable]) -> None:
        """Drop every paused run but those of `keys` (the promoted ones)."""
        ...


class ProxyRunner(Protocol):
    """Trains and probes a study's proxy runs. Every method is deterministic in its arguments: a run's seed
    and data order depend only on its spec and config.

    `batched` runners train several runs at once (`run_many`): the study then hands them every run of a rung
    that the budget affords at once, chosen by the examples each is planned to cost, so that the study's runs
    and pick do not depend on how many train side by side. Others get one run at a time, each chosen by what
    the runs before it actually cost.
    """

    batched: bool

    def prepare(self, spec: StudySpec) -> DataSummary:
        """Load and split the spec's dataset for the spec's model (once; later calls reuse it)."""
        ...

    def calibrate(self, spec: StudySpec, batch_size: int) -> Calibration:
        """Time 2 optimizer steps at `batch_size`."""
        ...

    def run(
        self,
        spec: StudySpec,
        config: Config,
        schedule: Schedule,
        stop_at: int,
        paused: PausedRuns | None = None,
    ) -> RunRecord:
        """Train `config` on `schedule` and stop once `stop_at` examples are seen. With `paused`, the run goes
        on from its paused state there if it has one, and a run stopped short of the schedule pauses there."""
        ...

    def run_many(self, requests: Sequence[RunRequest], paused: PausedRuns | None = None) -> list[RunRecord]:
        """Every request's record, in the requests' order (trained at once where the runner can)."""
        ...

    def probe(self, spec: StudySpec) -> Probe:
        """λ_max of the spec's adapter at initialisation, cheaply; never raises for a failed probe."""
        ...

    def shelf_room(self) -> ShelfRoom:
        """What this machine offers paused runs."""
        ...

    def spill_seconds(self, checkpoint_bytes: int, promoted_share: float) -> float:
        """Disk time a promoted run is charged when paused runs go to disk (measured on this machine)."""
        ...

    def paused_runs(self, room: ShelfRoom) -> AbstractContextManager[PausedRuns]:
        """A place for paused runs within `room`, emptied when the context closes."""
        ...
