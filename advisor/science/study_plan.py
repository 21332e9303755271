"""A study's plan as a value: the batch sizes and LRs it compares, its rungs of successive halving, the runs
at other lengths and on the target it adds, and what all of that costs (`advisor.science.planner` makes
it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from advisor.specs import MAX_BATCH_SIZE

ETA = 3  # successive halving keeps the best 1/η at each rung
HORIZON_RUNS = 2  # LRs at B* trained at the horizon: two points and the top rung's bowl width fix a vertex
# LR steps past an edge the target's confirmation runs may add (`advisor.science.planner`'s CONFIRM_RUNS).
CONFIRM_EXTENSIONS = 1
DEFAULT_SECONDS_PER_EXAMPLE = 0.02  # before calibration; the study measures the real throughput


@dataclass(frozen=True)
class BatchCandidates:
    """The effective batches a study starts from; for derived ones, what they were derived from and how far an
    edge may extend them (`batch_edge_limit`)."""

    sizes: list[int]
    derived_from: str | None = None  # e.g. "2,000 examples × 3 epochs on 1 device"; None: the spec's list
    smallest: int = 1  # the real run's devices: a data-parallel run takes at least one example per device
    largest: int = MAX_BATCH_SIZE  # the largest batch that leaves the real run MIN_REAL_RUN_STEPS steps
    rule: str = ""  # how `sizes` follow from the bounds, in words

    @property
    def derived(self) -> bool:
        return self.derived_from is not None

    def describe(self) -> str:
        """Which batches, and for derived ones why these."""
        if self.derived_from is None:
            return f"{self.sizes} (the spec's batch_sizes)"
        return f"{self.sizes}, derived from {self.derived_from}: {self.rule}"

    def evidence(self) -> dict[str, object]:
        return {
            "sizes": self.sizes,
            "derived_from": self.derived_from,
            "smallest": self.smallest,
            "largest": self.largest,
            "rule": self.rule,
        }


@dataclass(frozen=True)
class Rung:
    examples: int  # examples seen by each config at this rung (equal for every batch size)
    configs: int  # how many configs reach it


@dataclass
class StudyPlan:
    proxy_model: str
    proxy_is_target: bool
    proxy_rank: int
    batch_sizes: list[int]
    learning_rates: list[float]
    rungs: list[Rung]
    # Run lengths at which LR* is measured at B*: [top rung], [trend size, top rung] or [top rung, horizon].
    dataset_sizes: list[int]
    seeds: list[int]
    # Examples the real run sees (epochs × training split, or max_steps × its batch), where trends aim.
    full_examples: int = 0
    confirm_lrs: int = 0  # short runs of this many LRs on the target, when the budget allows
    confirm_examples: int = 0  # ... each to this rung's length, on the rungs' schedule
    # Seconds per training example on the target over the proxy's: what a target example costs in proxy
    # examples under a seconds budget (1 under an examples budget, where examples count alike).
    target_cost_ratio: float = 1.0
    top_extras: int = 0  # runs of top-rung length after halving: an edge at the top, second seeds
    trend_runs: int = 0  # complete runs on dataset_sizes[0] examples at B*, for the dataset-size trend
    # Complete runs on dataset_sizes[-1] examples at B*, towards the real run's length: the pair, and with
    # HORIZON_BRACKET_RUNS more a run reserved above it (estimates count it; a study may leave it unspent).
    horizon_runs: int = 0
    seconds_per_example: float = DEFAULT_SECONDS_PER_EXAMPLE
    run_overhead_seconds: float = 0.0  # model setup and evaluations, per run
    eta: int = ETA
    budget_examples: float = math.inf  # the study's hard cap, in training examples over all its runs
    dropped_batch_sizes: list[int] = field(default_factory=list)  # candidates the budget could not afford
    batch_origin: BatchCandidates | None = None  # where the candidates came from (None: given as is)
    extended_batch_sizes: list[int] = field(default_factory=list)  # added past an edge B* landed on
    resumes_promotions: bool = False  # promoted configs go on from their paused runs instead of restarting
    notes: list[str] = field(default_factory=list)

    @property
    def configs(self) -> list[tuple[int, float]]:
        return [(b, lr) for b in self.batch_sizes for lr in self.learning_rates]

    @property
    def top_examples(self) -> int:
        return self.rungs[-1].examples

    @property
    def trend_examples(self) -> int | None:
        """Examples of each trend run (a complete run on a subset); None without a trend study."""
        return self.dataset_sizes[0] if self.dataset_sizes[0] < self.top_examples else None

    @property
    def horizon_examples(self) -> int | None:
        """Examples of each horizon run (longer than the top rung); None without horizon runs."""
        return self.dataset_sizes[-1] if self.dataset_sizes[-1] > self.top_examples else None

    @property
    def estimated_runs(self) -> int:
        halving = sum(r.configs for r in self.rungs)
        return halving + self.top_extras + self.trend_runs + self.horizon_runs + self.confirm_lrs

    @property
    def estimated_examples(self) -> int:
        halving = halving_cost(self.rungs, resumes=self.resumes_promotions)
        extras = (
            self.top_extras * self.top_examples
            + self.trend_runs * (self.trend_examples or 0)
            + self.horizon_runs * (self.horizon_examples or 0)
        )
        return halving + extras + self.confirm_lrs * self.confirm_examples

    @property
    def estimated_seconds(self) -> float:
        dearer_target = self.confirm_lrs * self.confirm_examples * (self.target_cost_ratio - 1)
        return (
            self.estimated_examples + dearer_target
        ) * self.seconds_per_example + self.estimated_runs * self.run_overhead_seconds

    @property
    def target_reserve_examples(self) -> float:
        """What the proxy's runs leave for the target's (an edge's run included), in examples as the budget
        counts them."""
        runs = self.confirm_lrs + CONFIRM_EXTENSIONS if self.confirm_lrs else 0
        return runs * self.confirm_examples * self.target_cost_ratio

    @property
    def target_reserve_seconds(self) -> float:
        return self.target_reserve_examples * self.seconds_per_example

    @property
    def grid_examples(self) -> int:
        """What the full grid of full-length runs would cost: the yardstick for the study's savings."""
        return len(self.configs) * (self.full_examples or self.rungs[-1].examples)

    def dropped_batch_note(self, batch_size: int) -> str | None:
        """What an answer at the largest batch size the budget kept must add: larger ones were not tried."""
        if not self.dropped_batch_sizes or batch_size != max(self.batch_sizes):
            return None
        return (
            f"B* = {batch_size} is the largest batch size the budget allowed: {self.dropped_batch_sizes} "
            "were left out; raise the budget to test them."
        )

    def _batches_text(self) -> str:
        """How the batch sizes came about, when not as the spec listed them."""
        derived_from = self.batch_origin.derived_from if self.batch_origin else None
        parts = [f"derived from {derived_from}"] if derived_from else []
        if self.extended_batch_sizes:
            parts.append(f"extended past an edge to {self.extended_batch_sizes}")
        return f" ({'; '.join(parts)})" if parts else ""

    def _extras_text(self) -> str:
        parts = [f"{self.top_extras} top-rung runs (edge, second seed)"] if self.top_extras else []
        if self.trend_runs:
            parts.append(f"a dataset-size trend of {self.trend_runs} runs × {self.trend_examples} examples")
        if self.horizon_runs:
            most = "up to " if self.horizon_runs > HORIZON_RUNS else ""
            parts.append(f"{most}{self.horizon_runs} horizon runs × {self.horizon_examples} examples at B*")
        if self.confirm_lrs:
            parts.append(f"{self.confirm_lrs} target runs × {self.confirm_examples} examples at B*")
        return f", then {' and '.join(parts)}" if parts else ""

    def describe(self) -> str:
        """The plan and its cost, said up front."""
        proxy = "the target model itself" if self.proxy_is_target else f"proxy {self.proxy_model}"
        lrs = f"{self.learning_rates[0]:.2g} … {self.learning_rates[-1]:.2g}"
        rungs = ", ".join(f"{r.configs}×{r.examples}" for r in self.rungs)
        return (
            f"Study on {proxy} (rank {self.proxy_rank}): "
            f"batch sizes {self.batch_sizes}{self._batches_text()}, "
            f"{len(self.learning_rates)} LRs {lrs} (4 per decade); successive halving η={self.eta} over "
            f"rungs configs×examples [{rungs}]"
            + (", promoted configs resuming their runs" if self.resumes_promotions else "")
            + f"{self._extras_text()}. Estimated cost: "
            f"{self.estimated_runs} runs, {self.estimated_examples} examples, "
            f"~{self.estimated_seconds:.0f} s "
            f"({self.estimated_examples / max(self.grid_examples, 1):.0%} of the full grid)."
            + "".join(f" Note: {note}." for note in self.notes)
        )


def halving_cost(rungs: list[Rung], *, resumes: bool) -> int:
    """Training examples of the whole halving: each rung's configs to its length, or only from the rung below
    when promoted configs resume their paused runs."""
    starts = [0, *(r.examples for r in rungs[:-1])] if resumes else [0] * len(rungs)
    return sum(r.configs * (r.examples - start) for r, start in zip(rungs, starts, strict=True))
