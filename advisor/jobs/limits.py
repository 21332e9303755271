"""What a study may cost and how many a token and the queue may hold, checked before a study is queued.

The planner needs the training split's size, which only the worker knows (it tokenizes the data), so the
cost is checked here on what the spec alone says: its budget, its candidate batch sizes and the cheapest plan
they allow (`planner.cheapest_first_rung`). The worker's planner then refuses a plan its budget cannot pay
for (`planner.refuse_unaffordable`), with the measured throughput.
"""

from __future__ import annotations

import dataclasses

from advisor.errors import AdvisorError, SpecError
from advisor.science.lr_grid import first_lr_grid
from advisor.science.planner import MIN_BATCH_SIZES, MIN_LRS, cheapest_first_rung
from advisor.science.study_plan import DEFAULT_SECONDS_PER_EXAMPLE
from advisor.specs import StudySpec


@dataclasses.dataclass(frozen=True)
class CostLimits:
    """Per-study ceilings on proxy compute (the service's settings name them and say their defaults)."""

    max_proxy_seconds: float
    max_proxy_examples: int


@dataclasses.dataclass(frozen=True)
class Quotas:
    """How many studies one token may have queued or running, and create per rolling day; and how many
    jobs the queue holds for everyone together."""

    max_active_per_token: int
    max_daily_per_token: int
    max_queued_jobs: int


class QuotaExceeded(AdvisorError):
    """A quota is full: `quota` names the setting, `retry_after_seconds` says when to try again."""

    def __init__(self, quota: str, limit: int, message: str, *, retry_after_seconds: int) -> None:
        self.quota, self.limit, self.message = quota, limit, message
        self.retry_after_seconds = max(1, retry_after_seconds)
        super().__init__(f"{quota}: {message}")


def check_study_cost(spec: StudySpec, limits: CostLimits) -> None:
    """SpecError naming the field and the limit when the study's cost cannot fit the per-study limits (or,
    for its batch sizes, its own examples budget); None when it may be queued."""
    _check_budget(spec, limits)
    examples_cap = _examples_cap(spec, limits)
    _check_each_batch(spec, examples_cap)
    _check_cheapest_plan(spec, limits, examples_cap)


def _check_budget(spec: StudySpec, limits: CostLimits) -> None:
    seconds, examples = spec.budget.proxy_seconds, spec.budget.proxy_examples
    if seconds is not None and seconds > limits.max_proxy_seconds:
        raise SpecError(
            "budget.proxy_seconds",
            f"exceeds this service's limit of {limits.max_proxy_seconds:g} s of proxy compute per study",
            value=seconds,
            fix=f"ask for at most {limits.max_proxy_seconds:g} "
            "(the server's LORA_ADVISOR_MAX_STUDY_PROXY_SECONDS)",
        )
    if examples is not None and examples > limits.max_proxy_examples:
        raise SpecError(
            "budget.proxy_examples",
            f"exceeds this service's limit of {limits.max_proxy_examples} proxy examples per study",
            value=examples,
            fix=f"ask for at most {limits.max_proxy_examples} "
            "(the server's LORA_ADVISOR_MAX_STUDY_PROXY_EXAMPLES)",
        )


def _examples_cap(spec: StudySpec, limits: CostLimits) -> tuple[int, str]:
    """The most examples the study may spend, and what sets it (for messages)."""
    own = spec.budget.proxy_examples
    if own is not None and own <= limits.max_proxy_examples:
        return own, f"the study's budget.proxy_examples of {own}"
    limit = limits.max_proxy_examples
    return limit, f"this service's limit of {limit} examples per study"


def _candidates(spec: StudySpec) -> tuple[str, list[int]]:
    """(field, batch sizes) the study will compare, as far as they are known before its data is read: the
    spec's list, or for derived candidates the two smallest (the device count and twice it) and the real
    run's own batch."""
    if spec.batch_sizes is not None:
        return "batch_sizes", list(spec.batch_sizes)
    devices, planned = spec.training.devices, spec.training.batch_size
    derived = {devices, 2 * devices} | ({planned} if planned is not None else set())
    return "training.devices", sorted(derived)


def _check_each_batch(spec: StudySpec, examples_cap: tuple[int, str]) -> None:
    """One optimizer step of a batch larger than the cap would spend more than the whole study may."""
    cap, source = examples_cap
    field, sizes = _candidates(spec)
    too_large = [batch for batch in sizes if batch > cap]
    if not too_large:
        return
    if field != "batch_sizes" and too_large[0] == spec.training.batch_size:
        field = "training.batch_size"
    raise SpecError(
        field,
        f"batch size {too_large[0]} exceeds {source}: one optimizer step of it would spend more",
        value=too_large if field == "batch_sizes" else too_large[0],
        fix=f"use batch sizes of at most {cap}",
    )


def _check_cheapest_plan(spec: StudySpec, limits: CostLimits, examples_cap: tuple[int, str]) -> None:
    """The cheapest plan the planner can make from these candidates must fit the examples cap, and at the
    planner's pre-calibration guess of DEFAULT_SECONDS_PER_EXAMPLE the per-study seconds limit. (Not the
    study's own seconds budget: small models train far faster than the guess; the worker checks that with
    the measured throughput.)"""
    cap, source = examples_cap
    field, sizes = _candidates(spec)
    lrs = min(len(first_lr_grid(spec, None, None)), MIN_LRS)
    cheapest = cheapest_first_rung(sizes, lrs)
    seconds = cheapest * DEFAULT_SECONDS_PER_EXAMPLE
    kept = sorted(sizes)[:MIN_BATCH_SIZES]
    described = (
        f"the cheapest plan for batch sizes {sizes} ({lrs} LRs × batches {kept}, each config one step of "
        f"B = {max(kept)} at the first rung)"
    )
    if cheapest > cap:
        raise SpecError(
            field,
            f"{described} needs {cheapest} examples, more than {source}",
            value=sizes if field == "batch_sizes" else None,
            fix="use smaller batch sizes",
        )
    if seconds > limits.max_proxy_seconds:
        raise SpecError(
            field,
            f"{described} needs {cheapest} examples, ~{seconds:.0f} s at {DEFAULT_SECONDS_PER_EXAMPLE} s per "
            f"example, more than this service's limit of {limits.max_proxy_seconds:g} s per study",
            value=sizes if field == "batch_sizes" else None,
            fix="use smaller batch sizes",
        )
