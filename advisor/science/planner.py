"""The study plan: which proxy, which (batch size, LR) grid, which rungs of successive halving — and its cost.

Numbers a plan is made of:
- Batch sizes: the spec's batch_sizes, or when it gives none, powers of two times the real run's devices,
  from the device count (a data-parallel run takes at least one example per device) up to the largest batch
  that leaves the real run MIN_REAL_RUN_STEPS optimizer steps, at most MAX_DERIVED_BATCH_SIZES of them (the
  smallest, or those up to the real run's own batch when it lies higher), the real run's batch always among
  them. When B* lands on the smallest or largest of such derived candidates, the study extends them by a
  power of two past that edge (`batch_past_edge`), within the budget.
- LR grid: 4 points per decade (arXiv 2602.04998's grid), on the lattice 2e-4 × 10^(k/4) so that the
  frameworks' default LoRA LR is a grid point and grids of different studies line up. Centred by a stored
  study's answer or a curvature prior when one is given (LR* ∝ λ_max^(−β), arXiv 2602.04998), else by the
  method's usual LR; ±1 decade wide with such a measured centre, which may take it past lr_range as far as
  edge extensions reach, and ±1.5 decades inside lr_range without one (the centre is less certain).
- Successive halving with η = 3: every config runs to rung 0 (1/η² of the top fidelity); the best third is
  re-run to 3× further, and so on. Runs at every rung follow the LR schedule of the top fidelity, so a run
  stopped at rung r is exactly the first part of the full run, and configs are compared at equal examples
  seen (not equal steps: a batch of 64 takes a quarter of the steps of a batch of 16 for the same data).
- After the top rung ("top extras", each a run of top-rung length): a second seed of the top two configs,
  which measures the seed-to-seed noise that sets ε, the bootstrap's spread and the trend's weight
  (without it the noise is guessed from fit residuals, which can be off by 10× either way), then up to 2
  more LRs at B* when the top rung's optimum sits on the edge of the LRs promoted to it.
- Run length: when the top rung sees less than half of the real run, LR* has to move to the real run's
  length along LR* ∝ N^γ (arXiv 2602.04998's prior γ = −0.25; on short runs it can be far steeper). Best, when
  the budget left after the second seeds affords it: "horizon" runs at B*, complete runs at least twice the
  top rung's length (up to the real run's): a pair of LRs half a decade apart, the upper at the prior's
  prediction, and where three such runs fit a third half a decade above the pair when the loss still falls at
  its upper LR; the best run, its better neighbour and the top rung's bowl locate LR* there, interpolating
  towards the real run. Otherwise a trend study: 4 LRs at B* as complete runs on a third of the top rung's
  examples (extrapolating away from the real run, so it is worth less). Either measurement and the prior
  combine in `fits.loglog_line`.
- A tight budget gives way in this order: the top fidelity shortens (down to 9 steps of the largest batch),
  the LR grid narrows (to MIN_LRS points), then the largest batch sizes go (to MIN_BATCH_SIZES): a whole
  step of the largest batch sets rung 0's length, so one large candidate can price a small dataset's whole
  halving out of the budget, and a halving cut short answers from single-seed runs at a shallow rung.
- Sibling proxy: the proxy's study gets 1 − CONFIRM_SHARE of the budget; the rest pays for 3 runs on the
  target at B* (and one past an edge) to the length of the longest rung it affords, which measure how LR*
  moves from the proxy to the target (`advisor.science.transfer`). Examples on either model count alike:
  a target example costs more seconds, so under a seconds budget the clock stops those runs early.
- Cost: a promoted config resumes where its run paused at the rung below (`proxy_runs.resume`), so rung r
  costs configs_r × (examples_r − examples_{r−1}), when the study can hold the checkpoints of the runs rung 1
  promotes (`pausable_runs`, `paused_runs_needed`; the shelf keeps the lowest losses, in memory and then on
  disk); otherwise it restarts from scratch and rung r costs configs_r × examples_r. The study's
  total is the rungs, the top extras, the trend or horizon runs and the target's confirmation runs.
"""

from __future__ import annotations

import math

from advisor.errors import SpecError
from advisor.science.lr_grid import (
    CurvaturePrior,
    first_lr_grid,
)
from advisor.science.study_plan import (
    CONFIRM_EXTENSIONS,
    DEFAULT_SECONDS_PER_EXAMPLE,
    ETA,
    HORIZON_RUNS,
    BatchCandidates,
    Rung,
    StudyPlan,
    halving_cost,
)
from advisor.specs import StudySpec, TrainingSpec

MIN_TOP_CONFIGS = 3  # the top rung keeps ≥ 3 configs: the winner and its LR neighbours, for a local fit
MIN_LRS = 5  # a tight budget narrows the LR grid to no fewer points than this (±half a decade)
MIN_BATCH_SIZES = 2  # ... and then drops the largest batch sizes, keeping at least this many to compare
TOP_EXTRAS = 4  # runs of top-rung length reserved for an edge at the top rung and second-seed replicates
TREND_LRS = 4  # LRs at B* in the trend study: LR*(top) and 1 step below, 2 above (LR* falls with N)
TREND_MIN_STEPS = 6  # a trend run needs this many optimizer steps at B* to say anything about LR*
# A derived batch candidate leaves the real run at least this many optimizer steps. A halving that reaches the
# real run's length starts every config at 1/η² of it (rung 0, `rung_schedule`), and there the largest batch
# should still take TREND_MIN_STEPS steps, the fewest at which this planner lets a run speak about LR*:
# 9 × 6 = 54. On 2,000 examples for one epoch that allows B = 32 (62 steps), not 64 (31).
MIN_REAL_RUN_STEPS = ETA**2 * TREND_MIN_STEPS
# At most this many derived candidates: a factor of 32 from the smallest to the largest. With a default grid's
# 13 LRs that is 78 rung-0 configs, half again the old fixed default's [8, 16, 32, 64]; a tight budget drops
# the largest first (down to MIN_BATCH_SIZES), and an edge extends the grid a power of two past either end.
MAX_DERIVED_BATCH_SIZES = 6
# ... and one more half a decade above the pair, run only when the loss still falls at the pair's upper LR:
# two points on one side of the bowl bound the vertex from below only (SmolLM2's pair, 0.00112 → 3.277 and
# 0.00356 → 3.186 on 264 examples, where the full runs' optimum is 0.0063). Planned when the budget affords
# three runs of HORIZON_MIN_RATIO × the top rung (unspent when the pair's lower LR does better), else the
# pair runs alone.
HORIZON_BRACKET_RUNS = 1
HORIZON_MIN_RATIO = 2  # horizon runs only pay off at least 2× the top rung's length (else the trend study)
# How far past the budget a plan looks for a reading of LR* near the real run's length, to tell the user
# what more budget would buy.
HORIZON_BUDGET_REACH = 8
PROXY_RANK = 8  # arXiv 2602.09492: B* is roughly rank-invariant, so a sibling proxy trains at a low rank
# A sibling-proxy study keeps this share of its budget for short runs on the target that measure the model
# ratio of LR* (CONFIRM_RUNS LRs, and CONFIRM_EXTENSIONS more past an edge), each as long as the longest of
# the proxy's rungs that this share affords: the longer, the less their loss is noise.
CONFIRM_SHARE = 0.25
CONFIRM_RUNS = 3


# 1. The candidate batch sizes -------------------------------------------------------------------------------


def batch_candidates(spec: StudySpec, n_train: int) -> BatchCandidates:
    """The spec's batch_sizes as given, or, when it gives none, candidates derived from the real run on a
    training split of `n_train` examples (see the module's docstring). An explicit list already holds the
    real run's batch (`StudySpec`); a derived one gets it here."""
    if spec.batch_sizes is not None:
        return BatchCandidates(list(spec.batch_sizes))
    training = spec.training
    smallest, planned = training.devices, training.batch_size
    largest = max(smallest, min(n_train, training.real_run_examples(n_train) // MIN_REAL_RUN_STEPS))
    ladder = batch_ladder(smallest, largest)
    window = _lowest_window(ladder, planned)
    sizes = sorted({*window, planned}) if planned is not None else window
    rule = _rule_text(ladder, window, largest, planned)
    return BatchCandidates(sizes, _run_text(training, n_train), smallest, largest, rule)


def _rule_text(ladder: list[int], window: list[int], largest: int, planned: int | None) -> str:
    """How the derived candidates follow from the run, in words."""
    rule = (
        f"powers of two times the device count, from {ladder[0]} while the real run keeps "
        f"{MIN_REAL_RUN_STEPS} optimizer steps (B ≤ {largest})"
    )
    if ladder[-1] > largest:
        rule += f", and {ladder[-1]} past that, so that {MIN_BATCH_SIZES} batch sizes are compared"
    if len(window) < len(ladder) and window[-1] == planned:
        return rule + f", the {len(window)} up to the real run's B = {planned}"
    if len(window) < len(ladder):
        rule += f", the {len(window)} smallest"
    return rule + (f", with the real run's B = {planned}" if planned is not None else "")


def batch_ladder(smallest: int, largest: int) -> list[int]:
    """smallest × 2^k up to `largest`; at least MIN_BATCH_SIZES of them even past it, so that a study on data
    too short for two batches of MIN_REAL_RUN_STEPS steps still compares two."""
    ladder = [smallest]
    while ladder[-1] * 2 <= largest or len(ladder) < MIN_BATCH_SIZES:
        ladder.append(ladder[-1] * 2)
    return ladder


def _lowest_window(ladder: list[int], planned: int | None) -> list[int]:
    """The MAX_DERIVED_BATCH_SIZES smallest of `ladder`, or the ones up to the real run's batch `planned` when
    that lies higher. Small batches first, as the planner drops the largest first under a tight budget: at
    equal examples seen, a batch below the critical batch size loses nothing to a larger one (it takes more
    steps on the same data), while one above it does, so LoRA's B* lies at the small end more often than not
    (B = 2 on an outside task of 2,000 examples, where the old default's smallest, 8, was 0.95% worse)."""
    reaching = sum(1 for batch in ladder if planned is not None and batch <= planned)
    end = min(len(ladder), max(MAX_DERIVED_BATCH_SIZES, reaching))
    return ladder[max(0, end - MAX_DERIVED_BATCH_SIZES) : end]


def _run_text(training: TrainingSpec, n_train: int) -> str:
    """The real run in words: "2,000 examples × 3 epochs on 1 device", "500 steps of B = 16 on 2 devices"."""
    devices = _devices_text(training.devices)
    if training.max_steps is not None:
        return f"{training.max_steps:,} steps of B = {training.batch_size} on {devices}"
    epochs = f"{training.epochs:g} epoch{'' if training.epochs == 1 else 's'}"
    return f"{n_train:,} examples × {epochs} on {devices}"


def _devices_text(devices: int) -> str:
    return f"{devices} device{'s' if devices > 1 else ''}"


def batch_edge_limit(plan: StudyPlan, side: str) -> str | None:
    """Why the plan's batch sizes cannot grow by a power of two past their smallest (`side` "low") or largest
    ("high"); None when they can. Only derived candidates grow: a spec's own batch_sizes are the user's
    choice, which memory or throughput may have made, and B* on its edge is reported instead."""
    origin = plan.batch_origin
    if origin is None or not origin.derived:
        return "the candidates are the spec's batch_sizes"
    if side == "low":
        edge, devices = min(plan.batch_sizes), _devices_text(origin.smallest)
        if edge <= origin.smallest:
            return f"B = {edge} is already one example per device on the real run's {devices}"
        if edge % (2 * origin.smallest):
            return f"half of B = {edge} does not split evenly over the real run's {devices}"
        beyond = edge // 2
    else:
        beyond = 2 * max(plan.batch_sizes)
        if beyond > origin.largest:
            return f"B = {beyond} would leave the real run fewer than {MIN_REAL_RUN_STEPS} optimizer steps"
        if beyond in plan.dropped_batch_sizes:
            return f"the budget left B = {beyond} out of the plan"
    if plan.rungs[0].examples % beyond:  # every rung is a multiple of rung 0: whole steps at all of them
        return (
            f"the first rung's {plan.rungs[0].examples} examples are no whole number of steps of B = {beyond}"
        )
    return None


def batch_past_edge(plan: StudyPlan, side: str) -> int | None:
    """The batch one power of two past the plan's smallest (`side` "low") or largest ("high") batch size, when
    `batch_edge_limit` allows it; else None."""
    if batch_edge_limit(plan, side) is not None:
        return None
    return min(plan.batch_sizes) // 2 if side == "low" else 2 * max(plan.batch_sizes)


def batch_grid_reasoning(plan: StudyPlan, batch_size: int, edge_side: str | None) -> list[str]:
    """What an answer at B* = `batch_size` says about the batch grid: where derived candidates came from,
    which batches an edge added, and why the grid stopped when B* still sits on its `edge_side`."""
    origin = plan.batch_origin
    if origin is None or not origin.derived:
        return []  # the spec's own list: the surface's sentence on a batch edge says what to add
    sentences = [f"The candidate batch sizes were {origin.describe()}."]
    if plan.extended_batch_sizes:
        sentences.append(
            f"B* sat on an edge of the batch sizes at the first rung, so the study extended them to "
            f"{plan.extended_batch_sizes}."
        )
    if edge_side is not None:
        which = "smallest" if edge_side == "low" else "largest"
        limit = batch_edge_limit(plan, edge_side) or (
            "the study extends them only at the first rung and within the budget, and did not reach further"
        )
        sentences.append(f"B* = {batch_size} still sits on the {which} batch size compared: {limit}.")
    return sentences


# 2. The LR grid ---------------------------------------------------------------------------------------------


# 3. Successive halving and the budget -----------------------------------------------------------------------


def rung_schedule(
    n_configs: int, top_examples: int, *, eta: int = ETA, levels: int = 3, granularity: int = 1
) -> list[Rung]:
    """`levels` rungs, each η× the examples of the one before and all multiples of rung 0, which is a multiple
    of `granularity` (the largest batch): every batch size then reaches every rung exactly on an optimizer
    step, and evaluations every rung-0 examples land on every rung. Fewer levels when the data is short."""
    while levels > 1 and top_examples // eta ** (levels - 1) < granularity:
        levels -= 1
    first = max(granularity, top_examples // eta ** (levels - 1) // granularity * granularity)
    rungs = []
    for level in range(levels):
        configs = max(min(MIN_TOP_CONFIGS, n_configs), math.ceil(n_configs / eta**level))
        rungs.append(Rung(first * eta**level, min(configs, n_configs)))
    return rungs


def paused_runs_needed(n_configs: int) -> int:
    """Paused runs a halving of `n_configs` must hold for every promotion to resume: the configs rung 1 keeps
    and the leader's 2 LR neighbours (promoted whatever their rank). The shelf keeps the paused runs with the
    lowest loss (`proxy_runs.resume`), so it needs room for those, not for all of rung 0."""
    return min(n_configs, max(MIN_TOP_CONFIGS, math.ceil(n_configs / ETA)) + 2)


def _fit_budget(
    n_configs: int, full_examples: int, budget_examples: float, granularity: int, resumes: bool
) -> list[Rung]:
    """The longest rung schedule whose cost fits the budget (shrinking the top fidelity until it does)."""
    top = full_examples
    while True:
        rungs = rung_schedule(n_configs, top, granularity=granularity)
        cost = halving_cost(rungs, resumes=resumes)
        if cost <= budget_examples or top <= granularity * ETA**2:
            return rungs
        top = max(granularity * ETA**2, int(top / 1.5))


def plan_study(
    spec: StudySpec,
    *,
    n_train: int,
    seconds_per_example: float = DEFAULT_SECONDS_PER_EXAMPLE,
    run_overhead_seconds: float = 0.0,
    budget_seconds: float | None = None,
    prior: CurvaturePrior | None = None,
    lr_centre: float | None = None,
    size_trend: bool | None = None,
    spent_examples: int = 0,
    target_cost_ratio: float = 1.0,
    pausable_runs: int = 0,
) -> StudyPlan:
    """Plan a study that fits the budget; `n_train` is the proxy's training split size.

    `pausable_runs`: how many paused runs the study can hold (`proxy_runs.resume`); when the ones rung 1
    promotes fit (`paused_runs_needed`), promoted configs resume instead of restarting, and the halving costs
    less.

    A tight budget first shortens the top fidelity (down to 9 steps of the largest batch), then narrows
    the LR grid around its centre (down to MIN_LRS points): fewer, better-measured configs beat many
    configs each seen for a step or two. If even that does not fit, the largest batch sizes go (down to
    MIN_BATCH_SIZES), rather than a halving cut short below its top rung.
    """
    lrs = first_lr_grid(spec, prior, lr_centre)
    candidates = batch_candidates(spec, n_train)
    batches = [b for b in candidates.sizes if b <= n_train] or [min(candidates.sizes)]
    costs = (seconds_per_example, run_overhead_seconds)
    budget_examples = _budget_examples(spec, budget_seconds, costs, len(batches) * len(lrs), spent_examples)
    full = spec.training.real_run_examples(n_train)
    resumes = pausable_runs >= paused_runs_needed(len(batches) * len(lrs))
    # A sibling proxy leaves CONFIRM_SHARE of the budget to the target's runs.
    proxy_budget = budget_examples * (1 - CONFIRM_SHARE) if spec.proxy_model else budget_examples
    plan = _narrowest_plan(spec, batches, lrs, full, proxy_budget, (size_trend, resumes), costs)
    dropped: list[int] = []
    while plan.estimated_examples > proxy_budget and len(batches) > MIN_BATCH_SIZES:
        dropped, batches = [batches[-1], *dropped], batches[:-1]
        plan = _narrowest_plan(spec, batches, lrs, full, proxy_budget, (size_trend, resumes), costs)
    if dropped:
        plan.dropped_batch_sizes = dropped
        plan.notes.append(
            f"the budget cannot run the smallest plan with batch sizes {dropped} (a whole step of the "
            f"largest sets the first rung's length; B = {dropped[-1]} takes {full // dropped[-1]} steps in "
            "the real run), so they are left out"
        )
    seconds = budget_seconds if budget_seconds is not None else spec.budget.proxy_seconds
    examples = spec.budget.proxy_examples - spent_examples if spec.budget.proxy_examples else None
    refuse_unaffordable(plan, examples_left=examples, seconds_left=seconds)
    _add_confirmation(plan, budget_examples, target_cost_ratio if budget_seconds is not None else 1.0)
    _explain(plan, prior, full)
    if not _reads_lr_star_near_real_run(plan):
        _note_horizon_budget(spec, plan, proxy_budget, (size_trend, resumes), costs)
    if plan.estimated_examples > budget_examples:
        plan.notes.append(
            f"even the smallest plan exceeds the budget of {budget_examples:.0f} examples, so the halving "
            "will stop at the rung the budget reaches and answer from there"
        )
    plan.budget_examples = budget_examples
    plan.batch_origin = candidates
    return plan


def cheapest_first_rung(batch_sizes: list[int], n_lrs: int) -> int:
    """Examples of the cheapest first rung a plan over these candidates can have, whatever the training split:
    the planner keeps at least the MIN_BATCH_SIZES smallest batches and MIN_LRS LRs (fewer only when the grid
    has fewer), and rung 0 takes one whole step of the largest batch it keeps, for every config."""
    kept = sorted(batch_sizes)[:MIN_BATCH_SIZES]
    return min(n_lrs, MIN_LRS) * len(kept) * max(kept)


def refuse_unaffordable(plan: StudyPlan, *, examples_left: float | None, seconds_left: float | None) -> None:
    """SpecError (on batch_sizes) when the budget cannot pay for the plan's first rung.

    The planner tolerates a plan over its budget only as far as the halving can be cut short: later rungs
    stop where the budget runs out, but rung 0 runs every config whole under an examples budget, and under a
    seconds budget the clock stops rung 0 only after its first run. `batch_sizes: [1048576]` on an examples
    budget of 600 used to be planned (and run) at 5 × 1,048,576 examples, 8,700× its budget."""
    first, largest = plan.rungs[0], max(plan.batch_sizes)
    first_rung_examples = first.configs * first.examples
    if examples_left is not None and first_rung_examples > examples_left:
        raise SpecError(
            "batch_sizes",
            f"the cheapest plan, {first.configs} configs × one step of B = {largest} at the first rung, "
            f"needs {first_rung_examples} examples; the budget leaves {max(examples_left, 0):.0f}",
            value=plan.batch_sizes,
            fix="use smaller batch sizes, or raise budget.proxy_examples by at least "
            f"{first_rung_examples - examples_left:.0f}",
        )
    first_run_seconds = first.examples * plan.seconds_per_example + plan.run_overhead_seconds
    if seconds_left is not None and first_run_seconds > seconds_left:
        raise SpecError(
            "batch_sizes",
            f"one run to the first rung (one step of B = {largest}) takes ~{first_run_seconds:.0f} s at "
            f"{plan.seconds_per_example:.2g} s per example; the budget leaves {seconds_left:.0f} s",
            value=plan.batch_sizes,
            fix="use smaller batch sizes, or a larger budget.proxy_seconds",
        )


def _reads_lr_star_near_real_run(plan: StudyPlan) -> bool:
    """Whether the study measures LR* near the real run's length (horizon runs, or a top rung at half the run
    or more) rather than moving it there by the prior γ."""
    return plan.horizon_runs > 0 or plan.top_examples >= 0.5 * plan.full_examples


def _note_horizon_budget(
    spec: StudySpec,
    plan: StudyPlan,
    budget_examples: float,
    choices: tuple[bool | None, bool],
    costs: tuple[float, float],
) -> None:
    """Say what more budget would buy when no horizon runs fit: LR* then moves to the real run's length by
    the prior γ (with the trend study's shorter runs, if it ran), the largest error left on short budgets
    (bench/RESULTS.md: the halving's own rungs cannot tell where LR* goes)."""
    fitting = _horizon_budget(spec, plan, budget_examples, choices, costs)
    if fitting is None:
        return
    # A sibling study gives CONFIRM_SHARE of any budget to the target, so the user adds more than the proxy.
    more = (fitting - budget_examples) / (1 - CONFIRM_SHARE if spec.proxy_model else 1.0)
    moved_by = "the trend study's shorter runs and a prior γ" if plan.trend_runs else "a prior γ alone"
    plan.notes.append(
        f"LR* moves to the real run's length by {moved_by}; about {more:.0f} more training examples of "
        f"budget (~{more * costs[0]:.0f} s here) would let the study measure LR* near that length"
    )


def _horizon_budget(
    spec: StudySpec,
    plan: StudyPlan,
    budget_examples: float,
    choices: tuple[bool | None, bool],
    costs: tuple[float, float],
) -> float | None:
    """The smallest proxy budget (in examples, to within 2%) whose plan over `plan`'s batch sizes and LRs
    reads LR* near the real run's length: horizon runs, or a top rung at half the run or more. None if not
    even HORIZON_BUDGET_REACH × `budget_examples` does. More budget lengthens the halving as well as adding
    extras, so the search is numeric rather than a formula."""

    def fits(budget: float) -> bool:
        candidate = _plan_for(
            spec, plan.batch_sizes, plan.learning_rates, plan.full_examples, budget, choices, costs
        )
        return _reads_lr_star_near_real_run(candidate) and candidate.estimated_examples <= budget

    if fits(budget_examples):
        return None  # the study's own plan differs (narrowed, or with target runs): nothing to add
    low, high = budget_examples, budget_examples * 2
    while not fits(high):
        if high >= HORIZON_BUDGET_REACH * budget_examples:
            return None
        low, high = high, high * 2
    while high > low * 1.02:
        middle = (low + high) / 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


def _narrowest_plan(
    spec: StudySpec,
    batches: list[int],
    lrs: list[float],
    full: int,
    budget_examples: float,
    choices: tuple[bool | None, bool],
    costs: tuple[float, float],
) -> StudyPlan:
    """The plan for these batch sizes, its LR grid narrowed (to no fewer than MIN_LRS) until it fits."""
    plan = _plan_for(spec, batches, lrs, full, budget_examples, choices, costs)
    while plan.estimated_examples > budget_examples and len(plan.learning_rates) - 2 >= MIN_LRS:
        plan = _plan_for(spec, batches, plan.learning_rates[1:-1], full, budget_examples, choices, costs)
        plan.notes.append(f"the budget narrowed the LR grid to {len(plan.learning_rates)} points")
    return plan


def _plan_for(
    spec: StudySpec,
    batches: list[int],
    lrs: list[float],
    full: int,
    budget_examples: float,
    choices: tuple[bool | None, bool],
    costs: tuple[float, float],
) -> StudyPlan:
    """The plan for one grid: the longest rungs that leave room for the top extras and, when the top rung
    falls short of the real run, for horizon runs or the dataset-size trend study. `choices` is (whether to
    measure the dataset-size trend, None: when the top rung is short; whether promotions resume)."""
    size_trend, resumes = choices
    n_configs = len(batches) * len(lrs)
    share = 1.0
    while True:
        rungs = _fit_budget(n_configs, full, share * budget_examples, max(batches), resumes)
        plan = StudyPlan(
            spec.proxy_model or spec.model,
            spec.proxy_model is None,
            spec.rank if spec.proxy_model is None else min(spec.rank, PROXY_RANK),
            batches,
            list(lrs),
            rungs,
            [rungs[-1].examples],
            [spec.training.seed],
            full_examples=full,
            seconds_per_example=costs[0],
            run_overhead_seconds=costs[1],
            resumes_promotions=resumes,
        )
        trend = size_trend if size_trend is not None else rungs[-1].examples < 0.5 * full
        _add_extras(plan, budget_examples, trend)
        # Enough: the trend when the real run is out of reach, and second seeds of the top two configs.
        settled = plan.top_extras >= 2 and (plan.trend_runs > 0 or plan.horizon_runs > 0 or not trend)
        if settled or share < 0.3:
            return plan
        share *= 0.85  # shorten the halving a little to make room for what follows it


def _trend_possible(plan: StudyPlan) -> bool:
    return plan.top_examples // 3 >= TREND_MIN_STEPS * min(plan.batch_sizes)


def horizon_length(plan: StudyPlan, spare_examples: float) -> tuple[int, int] | None:
    """(length, runs) of the horizon runs that fit in `spare_examples`: the pair and the bracketing run
    above it when all three reach HORIZON_MIN_RATIO × the top rung, else the pair alone; each run as long
    as fits, capped at the real run's length and a whole number of the largest batch. None when not even
    the pair reaches HORIZON_MIN_RATIO × the top rung."""
    granularity = max(plan.batch_sizes)
    for runs in (HORIZON_RUNS + HORIZON_BRACKET_RUNS, HORIZON_RUNS):
        length = min(plan.full_examples, int(spare_examples // runs) // granularity * granularity)
        if length >= HORIZON_MIN_RATIO * plan.top_examples:
            return length, runs
    return None


def _add_extras(plan: StudyPlan, budget_examples: float, trend: bool) -> None:
    """In order of what they are worth: second seeds of the top two configs (without a measured noise level
    neither ε, nor the bootstrap, nor the run-length trend's weight mean much), then when the top rung is
    short of the real run the horizon runs (or, if they do not fit, the trend study), then up to 2 edge
    runs at the top."""
    spare = budget_examples - plan.estimated_examples
    replicates = int(min(2, max(spare, 0) // plan.top_examples))
    spare -= replicates * plan.top_examples
    small = plan.top_examples // 3
    horizon = horizon_length(plan, spare) if trend else None
    if horizon is not None:
        length, runs = horizon
        plan.dataset_sizes = [plan.top_examples, length]
        plan.horizon_runs = runs
        spare -= runs * length
        bracket = (
            " (the third above the first two, if the loss still falls there)" if runs > HORIZON_RUNS else ""
        )
        plan.notes.append(
            f"the budget reaches {plan.top_examples} of the real run's {plan.full_examples} examples, so "
            f"{runs} runs of {length} examples at B*{bracket} measure where LR* has moved at that length"
        )
    elif trend and _trend_possible(plan) and spare >= TREND_LRS * small:
        plan.dataset_sizes = [small, plan.top_examples]
        plan.trend_runs = TREND_LRS
        spare -= TREND_LRS * small
        plan.notes.append(
            f"the budget reaches {plan.top_examples} of the real run's {plan.full_examples} examples, so "
            f"{TREND_LRS} runs of {small} examples at B* measure how LR* moves with dataset size"
        )
    plan.top_extras = replicates + int(min(TOP_EXTRAS - replicates, max(spare, 0) // plan.top_examples))


def _budget_examples(
    spec: StudySpec,
    budget_seconds: float | None,
    costs: tuple[float, float],
    n_configs: int,
    spent_examples: int,
) -> float:
    """The budget in examples: the tighter of the spec's example bound (less what the calibration already
    spent) and its (or the override's) seconds, which the caller gives net of the time already spent."""
    seconds_per_example, run_overhead_seconds = costs
    seconds = budget_seconds if budget_seconds is not None else spec.budget.proxy_seconds
    by_time = math.inf
    if seconds is not None:
        overhead = (
            run_overhead_seconds * n_configs * 1.5
        )  # rung 0 runs every config, later rungs half as many
        by_time = max(0.0, seconds - overhead) / seconds_per_example
    by_examples = spec.budget.proxy_examples - spent_examples if spec.budget.proxy_examples else math.inf
    return min(by_time, by_examples)


def _add_confirmation(plan: StudyPlan, budget_examples: float, cost_ratio: float) -> None:
    """A sibling proxy's LR moves to the target by the model ratio that CONFIRM_RUNS target runs measure, as
    long as the longest rung whose runs (and an extension) the budget left affords, a target example
    costing `cost_ratio` proxy examples; else by curvature."""
    if plan.proxy_is_target:
        return
    plan.target_cost_ratio = cost_ratio
    spare = (budget_examples - plan.estimated_examples) / cost_ratio
    affordable = [r.examples for r in plan.rungs if (CONFIRM_RUNS + CONFIRM_EXTENSIONS) * r.examples <= spare]
    if not affordable and CONFIRM_RUNS * plan.rungs[0].examples <= spare:
        affordable = [plan.rungs[0].examples]  # no room past an edge
    if affordable:
        plan.confirm_lrs, plan.confirm_examples = CONFIRM_RUNS, max(affordable)
    else:
        plan.notes.append(
            "the budget leaves no room for runs on the target, so the LR moves by the curvature ratio alone"
        )


def _explain(plan: StudyPlan, prior: CurvaturePrior | None, full: int) -> None:
    if prior is not None:
        plan.notes.append(
            f"LR grid centred at {prior.lr_centre():.2g} by the curvature prior "
            f"(λ_max {prior.lambda_max:.3g}, β {prior.beta:g}, from {prior.source})"
        )
    if plan.top_examples < full and not plan.trend_runs and not plan.horizon_runs:
        plan.notes.append(
            f"the top rung sees {plan.rungs[-1].examples} of the {full} examples of the real run"
        )
