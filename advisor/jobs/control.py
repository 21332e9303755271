"""What a running job function sees of the queue: a progress sink and a stop signal.

The worker's heartbeat thread sets the signals; the job function calls `progress()` (or `check()`)
between units of work, which raises when it should stop, so a canceled or superseded job ends promptly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from advisor.errors import AdvisorError
from advisor.study.runner import ProxyRunner, RunnerFactory

if TYPE_CHECKING:  # the science imports scipy; a job that never warm-starts should not pay for it
    from advisor.science.knowledge import KnowledgeStore


class JobCanceled(AdvisorError):
    """The user canceled the study; the job stops and records no results."""


class LeaseLost(AdvisorError):
    """Another attempt owns the job now (this worker's lease expired); stop without writing anything."""


class PermanentJobError(AdvisorError):
    """A failure retrying cannot fix (bad spec, missing component): the job fails on this attempt."""


@runtime_checkable
class StopsMidRung(Protocol):
    """A runner whose runs train elsewhere (`proxy_runs.ray_runner.RayRunner`) and that can stop them
    mid-rung: it calls `check` while they are in flight and, when `check` raises, cancels them and lets it
    through. Other runners stop between runs, at the study's next progress report."""

    def stop_when(self, check: Callable[[], None]) -> None: ...


class JobControl:
    def __init__(self, *, store: KnowledgeStore | None = None, runner: RunnerFactory | None = None) -> None:
        self.canceled = threading.Event()
        self.lost = threading.Event()
        self.fraction: float | None = None
        self.message: str | None = None
        self.store = store  # stored studies and outcomes for a study's warm start, when the worker has them
        self.runner = runner  # what trains a study's proxy runs; the worker's entry point chose it

    def watched(self, runner: ProxyRunner) -> ProxyRunner:
        """`runner`, set to stop its runs in flight when this job is canceled or loses its lease, where it can
        (`StopsMidRung`); other runners stop between runs, at the study's next progress report."""
        if isinstance(runner, StopsMidRung):
            runner.stop_when(self.check)
        return runner

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost("lease lost to a newer attempt")
        if self.canceled.is_set():
            raise JobCanceled("canceled by request")

    def progress(self, fraction: float | None = None, message: str | None = None) -> None:
        if fraction is not None:
            self.fraction = float(fraction)
        if message is not None:
            self.message = message
        self.check()

    def study_progress(self, done: int, total: int, message: str) -> None:
        """advisor.study.run_study's hook: `done` of `total` planned runs. Extensions can run past the
        plan, and the warm start reports with total 0 (a message, no fraction), so the fraction is clipped."""
        fraction = min(max(done / total, 0.0), 1.0) if total > 0 else None
        self.progress(fraction, message)

    def callback(self, *args: Any, **kwargs: Any) -> None:
        """A progress hook for callers that report a fraction: a leading number in [0, 1] is the fraction
        done; an object with `fraction`, or `done`/`total`, works too. Studies use `study_progress`."""
        event = args[0] if args else kwargs.get("fraction", kwargs.get("progress"))
        fraction: float | None = None
        if isinstance(event, int | float):
            fraction = float(event)
        elif event is not None and getattr(event, "fraction", None) is not None:
            fraction = float(event.fraction)
        elif event is not None and getattr(event, "total", None):
            fraction = float(getattr(event, "done", 0)) / float(event.total)
        message = kwargs.get("message") or (str(args[1]) if len(args) > 1 else None)
        self.progress(fraction, message)
