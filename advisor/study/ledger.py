"""The study's ledger: every run so far, what they cost, and what the budget still affords."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from advisor.records import RunRecord
from advisor.study.runner import Progress


@dataclass
class Ledger:
    """Every run so far and the progress callback: one place that counts."""

    plan_runs: int
    progress: Progress | None
    deadline: float = math.inf  # time.perf_counter() after which the grid is no longer extended
    runs: list[RunRecord] = field(default_factory=list)

    budget_examples: float = math.inf
    # The seconds budget is planned as examples from a calibration at the largest batch; small batches and
    # evaluations cost more per example, so the clock is also checked: past it, no new run starts.
    hard_deadline: float = math.inf
    # Kept back from the proxy's runs for a sibling study's runs on the target, until those start.
    reserved_examples: float = 0.0
    reserved_seconds: float = 0.0

    @property
    def examples(self) -> int:
        return sum(r.examples_trained for r in self.runs)

    @property
    def spendable_examples(self) -> float:
        """The examples budget less what is kept back for the target's runs."""
        return self.budget_examples - self.reserved_examples

    def affords(self, examples: int) -> bool:
        return self.examples + examples <= self.spendable_examples and self.in_time()

    def in_time(self) -> bool:
        return time.perf_counter() < self.hard_deadline - self.reserved_seconds

    def past_extension_deadline(self) -> bool:
        """Whether the grid may no longer be extended (extensions spent the share of the budget they may)."""
        return time.perf_counter() > self.deadline

    def release_reserve(self) -> None:
        self.reserved_examples = self.reserved_seconds = 0.0

    def examples_left(self, batch_size: int) -> float:
        """Training examples the budget still affords at `batch_size`: the examples budget left, and for a
        seconds budget the time left at the throughput this study's runs at that batch size measured
        (a small batch trains fewer examples per second than the calibration's largest batch)."""
        left = self.spendable_examples - self.examples
        timed = [r for r in self.runs if r.config.batch_size == batch_size and r.examples_trained > 0]
        if math.isinf(self.hard_deadline) or not timed:
            return left
        per_example = sum(r.seconds for r in timed) / sum(r.examples_trained for r in timed)
        seconds_left = max(0.0, self.hard_deadline - time.perf_counter())
        return min(left, seconds_left / max(per_example, 1e-9))

    def add(self, record: RunRecord, message: str, role: str) -> None:
        """Count a run. Its `role` (HALVING_ROLE or one of advisor.records.EXTRA_RUN_ROLES) is stored with
        it, so the dashboard can tell a pruned halving run from a trend or horizon run meant to be short or
        long."""
        record.meta["role"] = role
        self.runs.append(record)
        if self.progress:
            self.progress(len(self.runs), max(self.plan_runs, len(self.runs)), message)
