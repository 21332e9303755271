"""Run a study: plan → successive halving over (batch size, LR) → fits → transfer → recommendation.

Read top to bottom:
1. Data is prepared once; the warm start answers provisionally from stored studies before any compute.
2. A short calibration run measures throughput, so the plan's cost estimate is in real seconds. For PiSSA
   and OLoRA over a wide LR range, two curvature probes (the method and LoRA at the same rank) centre the
   LR grid by their λ ratio.
3. Successive halving (synchronous, η = 3): every config runs to rung 0; the grid is extended when the
   optimum lands on its edge (LRs; a batch a power of two past B* when the batch sizes were derived from
   the run and B* is the smallest or largest); the best third (plus the leader's LR neighbours, so the top
   rung can fit a bowl) is re-run further. Runs follow the schedule of the top fidelity and stop at their
   rung via `should_stop`, so configs are compared at equal examples seen; diverged runs stop at once. After
   the top rung: a second seed of its two best configs (the noise level), and LR steps beyond a top-rung
   edge.
4. Fits per rung; the recommendation comes from the top rung (B*, LR*, L*), κ from the deepest rung that
   has it, uncertainty from a bootstrap.
5. When the top rung fell short of the real run, LR* moves to the real run's length along LR* ∝ N^γ: 2–3
   horizon runs at B* (complete, at least twice the top rung's length) or else a trend study on a third of
   its examples measure where LR* went, and a Bayesian line through them and arXiv 2602.04998's prior γ
   extends it.
6. A sibling proxy's LR moves to the target by the model ratio of LR* that 3–4 target runs at B* measure
   at one of the proxy's rungs (their LRs placed by the curvature ratio) when the budget allows, else by
   the curvature ratio alone when probes are available.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from advisor.errors import AdvisorError, SpecError
from advisor.method_catalog import METHODS
from advisor.records import CONFIRMATION_ROLE, HALVING_ROLE, RunRecord, RunStatus
from advisor.science.fits import (
    Z90,
    CurveFit,
    LogMeasurement,
    Observation,
    SurfaceFit,
    bootstrap_optimum,
    bowl_coefficient,
    fit_surface,
    interval_sd,
    loglog_line,
    lr_star_sd,
    replicate_noise,
    shrink_kappa,
    vertex_of_pair,
)
from advisor.science.knowledge import (
    SIZE_EXPONENT,
    ExponentPrior,
    KnowledgeStore,
    LrCorrection,
    Priors,
    StudyContext,
    stored_priors,
)
from advisor.science.loss_forecast import LossExponentPrior, forecast_loss, loss_measurement
from advisor.science.planner import (
    CONFIRM_EXTENSIONS,
    HORIZON_RUNS,
    LATTICE_ANCHOR,
    PROXY_RANK,
    TREND_MIN_STEPS,
    CurvaturePrior,
    StudyPlan,
    batch_candidates,
    batch_grid_reasoning,
    batch_past_edge,
    extend_lr_grid,
    extension_bounds,
    horizon_length,
    lattice_index,
    lattice_lr,
    plan_study,
)
from advisor.science.recommendation import Cost, NoRecommendation, Recommendation, confidence_label
from advisor.science.transfer import (
    band_holding_interval,
    build_recommendation,
    confirmation_lrs,
    derive_method,
    measured_model_ratio,
    past_the_edge,
    picked_lr,
    transfer_to_target,
    with_lr_scaled,
)
from advisor.specs import StudySpec
from proxy_runs.data import PreparedData, prepare_data
from proxy_runs.engine import RunBudget, setup_proxy, train_proxy
from proxy_runs.models import load_model_and_tokenizer
from proxy_runs.resume import (
    CheckpointShelf,
    ShelfCapacity,
    checkpoint_bytes,
    measure_spill_speed,
    shelf_memory_bytes,
    spill_disk_bytes,
    spill_seconds,
)

Progress = Callable[[int, int, str], None]  # (runs done, runs planned, what just happened)
Config = tuple[int, float]  # (batch size, learning rate)
MAX_EXTENSIONS = 2  # grid extensions at rung 0 before the study accepts an edge
# LRs a batch added past an edge starts with, on the lattice around LR*(B*): a bowl needs 3, and under Adam's
# square-root rule a doubling of B moves LR* by ×√2 (0.15 decades, less than a lattice step), so ±2 steps
# leave it room either side; an LR edge at the new batch extends its LRs as at any other.
BATCH_EXTENSION_LRS = 5
MAX_EVAL_EXAMPLES = 128  # held-out examples per evaluation: enough to rank configs, cheap on CPU


@dataclass
class StudyResult:
    recommendation: Recommendation | NoRecommendation
    runs: list[RunRecord]
    plan: StudyPlan
    provisional: Recommendation | None = None
    fits: dict[str, Any] = field(default_factory=dict)
    derived: dict[str, Recommendation] = field(default_factory=dict)  # other methods, through λ ratios


@dataclass
class _Ledger:
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


# 1. One run, stopped at a rung ------------------------------------------------------------------------------


def run_to_rung(
    spec: StudySpec,
    data: PreparedData,
    config: Config,
    *,
    top_examples: int,
    stop_at: int,
    eval_examples: int,
    shelf: CheckpointShelf | None = None,
) -> RunRecord:
    """Train `config` on the schedule of `top_examples` and stop once `stop_at` examples are seen.

    With a `shelf`, the run goes on from its checkpoint there if it has one (paused at a lower rung of the
    same schedule and seed), and a run stopped short of `top_examples` leaves its checkpoint there.

    Evaluations every `eval_examples` line up with every rung (rungs are multiples of it), so the loss at a
    rung is measured at exactly that many examples for every batch size. None before training: the
    untrained loss is the same for every config, and on a short rung an evaluation of MAX_EVAL_EXAMPLES
    costs about as much as the training (a forward pass is a third of a training step's work).
    """
    batch, lr = config
    eval_every = max(1, eval_examples // batch)
    setup = setup_proxy(spec, data=data)  # fresh adapter: train_proxy trains the model in place
    key = shelf_key(spec, config)
    return train_proxy(
        spec,
        batch_size=batch,
        learning_rate=lr,
        budget=RunBudget(max_examples=top_examples),
        setup=setup,
        eval_every=eval_every,
        max_eval_examples=MAX_EVAL_EXAMPLES,
        eval_at_start=False,
        should_stop=None if stop_at >= top_examples else lambda p: p.examples_seen >= stop_at,
        on_pause=(lambda checkpoint: shelf.put(key, checkpoint)) if shelf is not None else None,
        resume=shelf.take(key) if shelf is not None else None,
    )


def shelf_key(spec: StudySpec, config: Config) -> tuple[Config, int]:
    """A paused run is the config's run on the spec's seed (every rung follows the top rung's schedule)."""
    return config, spec.training.seed


def loss_at(record: RunRecord, examples: int) -> float | None:
    """The eval loss at the first evaluation at or past `examples`; None when diverged or not reached."""
    if record.status == RunStatus.DIVERGED:
        return None
    reached = [e for e in record.metrics.get("evals", []) if e["examples_seen"] >= examples]
    return float(reached[0]["eval_loss"]) if reached and math.isfinite(reached[0]["eval_loss"]) else None


def observation(record: RunRecord, examples: int, size: int) -> Observation:
    config = record.config
    return Observation(
        config.batch_size, config.learning_rate, loss_at(record, examples), config.seed, examples, size
    )


# 2. Successive halving --------------------------------------------------------------------------------------


def promote(observations: list[Observation], keep: int, grid: list[float]) -> list[Config]:
    """The `keep` best configs and the leader's LR neighbours at its batch size (a bowl needs 3 points),
    ordered leader, neighbours, then the rest by loss — so a budget cut drops the least useful first."""
    finite = sorted((o for o in observations if not o.diverged), key=lambda o: float(o.loss or 0.0))
    if not finite:
        return []
    leader = finite[0]
    index = grid.index(leader.learning_rate) if leader.learning_rate in grid else -1
    tried = {(o.batch_size, o.learning_rate) for o in finite}
    around = [
        (leader.batch_size, grid[i]) for i in (index - 1, index + 1) if index >= 0 and 0 <= i < len(grid)
    ]
    chosen = [(leader.batch_size, leader.learning_rate), *[c for c in around if c in tried]]
    return chosen + [
        (o.batch_size, o.learning_rate)
        for o in finite[:keep]
        if (o.batch_size, o.learning_rate) not in chosen
    ]


def _extensions(fit: SurfaceFit | NoRecommendation, spec: StudySpec, plan: StudyPlan) -> list[Config]:
    """New rung-0 configs where an optimum is on the grid's edge: half a decade more LRs where the LR optimum
    of a batch size in the band is on its edge, and a batch a power of two past B* when B* is the smallest
    or largest batch size (derived candidates only, within their bounds: `batch_past_edge`; a spec's own
    batch_sizes are the user's choice, which memory or throughput may have made, so there the edge is only
    reported)."""
    if isinstance(fit, NoRecommendation):
        return []
    new: list[Config] = []
    for edge in fit.edges:
        if edge.axis == "lr" and edge.batch_size in {e.batch_size for e in fit.band}:
            tried = [lr for lr, _ in fit.curves[edge.batch_size].tested]
            lrs = extend_lr_grid(tried, edge.side, bounds=extension_bounds(spec))
            new += [(edge.batch_size, lr) for lr in lrs]
        if edge.axis == "batch" and (batch := batch_past_edge(plan, edge.side)) is not None:
            new += [(batch, lr) for lr in lrs_around(spec, fit.learning_rate, BATCH_EXTENSION_LRS)]
    return sorted(set(new))


def lrs_around(spec: StudySpec, lr: float, count: int) -> list[float]:
    """`count` lattice LRs centred on the one nearest `lr`, within the reach of extensions."""
    low, high = extension_bounds(spec)
    centre = lattice_index(lr)
    lrs = [lattice_lr(centre + step) for step in range(-(count // 2), count - count // 2)]
    return [x for x in lrs if low <= x <= high]


def _grow(plan: StudyPlan, configs: list[Config]) -> None:
    """Record extended configs in the plan, so that promotion sees the LR neighbours they add and the fits
    the batch sizes (B* is on the batch edge only at the smallest or largest of those)."""
    plan.learning_rates = sorted(set(plan.learning_rates) | {lr for _, lr in configs})
    added = {batch for batch, _ in configs} - set(plan.batch_sizes)
    plan.batch_sizes = sorted({*plan.batch_sizes, *added})
    plan.extended_batch_sizes = sorted({*plan.extended_batch_sizes, *added})


def successive_halving(
    spec: StudySpec,
    data: PreparedData,
    plan: StudyPlan,
    ledger: _Ledger,
    paused_runs: ShelfCapacity | None = None,
) -> dict[int, list[Observation]]:
    """Observations per rung (examples seen → one per config that reached it). When the plan counted on
    paused runs, a promoted config goes on from its run at the rung below, held within `paused_runs`."""
    if not plan.resumes_promotions:
        return _halve(spec, data, plan, ledger, None)
    with (paused_runs or ShelfCapacity()).shelf() as shelf:
        return _halve(spec, data, plan, ledger, shelf)


def _halve(
    spec: StudySpec, data: PreparedData, plan: StudyPlan, ledger: _Ledger, shelf: CheckpointShelf | None
) -> dict[int, list[Observation]]:
    rungs = plan.rungs
    top, first = rungs[-1].examples, rungs[0].examples
    by_rung: dict[int, list[Observation]] = {r.examples: [] for r in rungs}
    alive, done = list(plan.configs), set()
    for extension in range(MAX_EXTENSIONS + 1):  # rung 0, extended while the optimum sits on a grid edge
        for config in [c for c in alive if c not in done]:
            if by_rung[first] and not ledger.in_time():
                break  # out of time: fit what rung 0 has measured rather than overrun the budget
            _run_and_record(spec, data, config, top, first, first, by_rung, ledger, shelf=shelf)
            done.add(config)
        if extension == MAX_EXTENSIONS or time.perf_counter() > ledger.deadline:
            break  # out of extensions or budget: accept the edge (it lowers the confidence), never overrun
        # A batch added past an edge must reach rung 0 on whole steps (`batch_edge_limit`).
        alive = _extensions(fit_surface(by_rung[first], batch_candidates=plan.batch_sizes), spec, plan)
        if not alive or not ledger.affords(len(alive) * first):
            break
        _grow(plan, alive)
    for previous, rung in itertools.pairwise(rungs):
        promoted = promote(by_rung[previous.examples], rung.configs, plan.learning_rates)
        if shelf is not None:
            shelf.keep_only({shelf_key(spec, config) for config in promoted})
        for config in promoted:
            paused_at = shelf.paused_at(shelf_key(spec, config)) if shelf is not None else 0
            if ledger.affords(rung.examples - paused_at):  # best first: a cut budget drops the weakest
                # Evaluated every rung below: η points per run for its curve, the last at its own rung.
                _run_and_record(
                    spec, data, config, top, rung.examples, previous.examples, by_rung, ledger, shelf=shelf
                )
    top_extras(spec, data, plan, by_rung[top], ledger)
    return by_rung


def top_extras(
    spec: StudySpec, data: PreparedData, plan: StudyPlan, top_rung: list[Observation], ledger: _Ledger
) -> None:
    """Up to `plan.top_extras` runs of top-rung length after halving, appended to `top_rung`.

    First, second seeds of the two best configs: they measure the seed-to-seed noise at the fidelity the
    answer comes from and average it down where it matters. Then one LR step beyond the top rung's
    optimum when it sits on the edge of the LRs promoted there (at most 2 steps: promotions come from a
    shorter rung, whose optimum can be off by a step).
    """
    top = plan.top_examples
    below = plan.rungs[-2].examples if len(plan.rungs) > 1 else top  # evaluated as the promoted runs are
    by_rung, left = {top: top_rung}, plan.top_extras
    second_seed = spec.with_seed(spec.training.seed + 1)
    best = sorted((o for o in top_rung if not o.diverged), key=lambda o: float(o.loss or 0.0))
    for obs in best[: min(2, left)]:
        if ledger.affords(top):
            config = (obs.batch_size, obs.learning_rate)
            _run_and_record(second_seed, data, config, top, top, below, by_rung, ledger, "second seed")
            left -= 1
    # Edge runs leave the trend study or horizon runs planned after them their share of the budget.
    reserve = plan.trend_runs * (plan.trend_examples or 0) + plan.horizon_runs * (plan.horizon_examples or 0)
    for _ in range(min(2, left)):
        fit = fit_surface(top_rung, batch_candidates=plan.batch_sizes)
        curve = fit.curves[fit.batch_size] if isinstance(fit, SurfaceFit) else None
        if curve is None or curve.edge is None or not ledger.affords(top + reserve):
            break
        beyond = _beyond_edge(spec, curve)
        if not beyond:
            break
        _grow(plan, [(curve.batch_size, beyond[0])])
        edge = (curve.batch_size, beyond[0])
        _run_and_record(spec, data, edge, top, top, below, by_rung, ledger, "edge")


def _beyond_edge(spec: StudySpec, curve: CurveFit) -> list[float]:
    """One lattice LR past the edge a curve's optimum sits on; [] when there is none or it is beyond the
    reach of extensions (`extension_bounds`), as rung-0 extensions are."""
    if curve.edge is None:
        return []
    tried = [lr for lr, _ in curve.tested]
    return extend_lr_grid(tried, curve.edge, steps=1, bounds=extension_bounds(spec))


def _run_and_record(
    spec: StudySpec,
    data: PreparedData,
    config: Config,
    top: int,
    stop_at: int,
    eval_examples: int,
    by_rung: dict[int, list[Observation]],
    ledger: _Ledger,
    role: str = HALVING_ROLE,
    *,
    shelf: CheckpointShelf | None = None,
) -> None:
    """One run; its loss counts at the rung it was run to (earlier rungs are recorded by their own runs)."""
    record = run_to_rung(
        spec, data, config, top_examples=top, stop_at=stop_at, eval_examples=eval_examples, shelf=shelf
    )
    by_rung[stop_at].append(observation(record, stop_at, top))
    ledger.add(
        record,
        f"B={config[0]} LR={config[1]:.3g} to {stop_at} examples: {record.status}"
        + (f", loss {record.eval_loss:.4f}" if record.eval_loss is not None else ""),
        role,
    )


# 3. From rungs to a recommendation --------------------------------------------------------------------------


def rung_fits(
    by_rung: dict[int, list[Observation]], batch_candidates: Sequence[int]
) -> dict[int, SurfaceFit | NoRecommendation]:
    return {
        examples: fit_surface(obs, batch_candidates=batch_candidates)
        for examples, obs in by_rung.items()
        if obs
    }


# The seed noise a study assumes when none of its runs measured it, relative to the loss: about half of what
# `bench/quality.py` measured at the grid best over 19 seeds (1.2–3.2%, median 1.9%), so that an answer
# from single-seed runs is never said to be known more exactly than a second seed could show.
UNMEASURED_NOISE = 0.01


def _measured_noise(fit: SurfaceFit) -> bool:
    """Whether a fit's noise level is a measurement: an exact fit (3 points, or single seeds on a clean
    bowl) leaves a residual of rounding error, ~1e-16 of the loss."""
    return fit.noise_sd > 1e-6 * abs(fit.loss)


def recommend_from_rungs(
    fits: dict[int, SurfaceFit | NoRecommendation],
    by_rung: dict[int, list[Observation]],
    *,
    spec: StudySpec,
    cost: Cost,
    evidence: dict[str, Any],
) -> Recommendation | NoRecommendation:
    """Top rung for B*, LR*, L*; κ and the noise level from the deepest rung that measured them."""
    usable = [(examples, fit) for examples, fit in sorted(fits.items()) if isinstance(fit, SurfaceFit)]
    if not usable:  # every rung failed to fit: report rung 0's reason (e.g. all diverged)
        first = next(iter(fits.values()), None)
        if isinstance(first, NoRecommendation):
            return first
        return NoRecommendation(reason="no runs finished", kind="no_runs")
    examples, top = usable[-1]
    assumed = ""
    if replicate_noise(by_rung[examples]) is None:
        # No second seed at the top: its 3–4 points leave no residual to speak of, so take the noise of the
        # deepest rung that measured one (shallower rungs are noisier: short runs, far from quadratic).
        top.noise_sd = next((f.noise_sd for _, f in reversed(usable) if _measured_noise(f)), 0.0)
    if not _measured_noise(top):
        # Nothing measured it (no second seeds, every fit exact): zero noise would make every bootstrap
        # resample the same and claim LR* to the digit, so assume UNMEASURED_NOISE of the loss instead.
        top.noise_sd = UNMEASURED_NOISE * abs(top.loss)
        assumed = (
            f"No run measured the seed-to-seed noise, so it is taken as {UNMEASURED_NOISE:.0%} of the loss "
            f"(±{top.noise_sd:.3g}) for the band and the resampling."
        )
    top.epsilon = max(top.epsilon, 2.0 * top.noise_sd)
    measured = next(((e, f) for e, f in reversed(usable) if f.kappa is not None), None)
    top.kappa = shrink_kappa(by_rung[measured[0]], measured[1], noise_sd=top.noise_sd) if measured else None
    summary = bootstrap_optimum(by_rung[examples], top, replicates=100)
    rec = build_recommendation(
        top,
        summary,
        method=spec.method,
        cost=cost,
        lora_plus_ratio=spec.method_options.lora_plus_ratio,
        evidence=evidence,
    )
    if assumed:
        rec.reasoning.append(assumed)
    return rec


def fits_evidence(fits: dict[int, SurfaceFit | NoRecommendation]) -> dict[str, Any]:
    """A compact, JSON-able account of each rung's fit."""
    out: dict[str, Any] = {}
    for examples, fit in sorted(fits.items()):
        if isinstance(fit, NoRecommendation):
            out[str(examples)] = {"no_recommendation": fit.reason}
            continue
        out[str(examples)] = {
            "batch_size": fit.batch_size,
            "learning_rate": fit.learning_rate,
            "loss": fit.loss,
            "epsilon": fit.epsilon,
            "kappa": fit.kappa.kappa if fit.kappa else None,
            "edges": [f"{e.axis}:{e.side}" + (f"@{e.batch_size}" if e.batch_size else "") for e in fit.edges],
            "lr_star_by_batch": {str(b): c.lr_star for b, c in fit.curves.items()},
        }
    return out


def runs_summary(runs: list[RunRecord]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for run in runs:
        statuses[str(run.status)] = statuses.get(str(run.status), 0) + 1
    return {
        "runs": len(runs),
        "by_status": statuses,
        "examples_seen": sum(r.examples_trained for r in runs),
        "resumed": sum(1 for r in runs if r.meta.get("resumed_from")),
        "seconds": round(sum(r.seconds for r in runs), 2),
    }


# 4. The whole study -----------------------------------------------------------------------------------------


def calibrate(spec: StudySpec, data: PreparedData) -> tuple[float, float, RunRecord]:
    """(seconds per training example, overhead seconds per run, the run) from 2 steps at the largest batch.

    The overhead is model setup plus one evaluation: what every run pays besides its training steps.
    """
    batch = min(max(batch_candidates(spec, len(data.train)).sizes), len(data.train))
    started = time.perf_counter()
    record = train_proxy(
        spec,
        batch_size=batch,
        learning_rate=1e-4,
        budget=RunBudget(max_steps=2),
        setup=setup_proxy(spec, data=data),
        max_eval_examples=MAX_EVAL_EXAMPLES,
        eval_every=2,
        eval_at_start=False,
    )
    total = time.perf_counter() - started
    steps = record.metrics.get("steps", [])
    train_seconds = steps[-1]["seconds"] if steps else total  # the steps only: taken before the evaluation
    per_example = max(train_seconds, 1e-3) / max(record.examples_seen, 1)
    record.meta["role"] = "calibration"
    return per_example, max(0.0, total - train_seconds), record


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


def _target_cost_ratio(
    spec: StudySpec, data: PreparedData, proxy_seconds_per_example: float
) -> tuple[float, RunRecord]:
    """(the target's seconds per training example over the proxy's, at least 1; the calibration run on the
    target): what the plan prices the target's runs at."""
    per_example, _, record = calibrate(spec, data)
    return max(1.0, per_example / proxy_seconds_per_example), record


def proxy_spec_for(spec: StudySpec) -> StudySpec:
    """What the proxy trains: the sibling model (if any) at a low rank, α/r kept so that LR scales match."""
    if spec.proxy_model is None:
        return spec
    rank = min(spec.rank, PROXY_RANK)
    alpha = (spec.alpha or spec.rank) / spec.rank * rank
    return spec.model_copy(update={"model": spec.proxy_model, "rank": rank, "alpha": alpha})


def run_study(
    spec: StudySpec,
    *,
    budget_override: float | None = None,
    progress: Progress | None = None,
    store: KnowledgeStore | None = None,
    derive_methods: Sequence[str] = (),
) -> StudyResult:
    """Plan and run a whole study within the budget (seconds; the spec's budget unless overridden).

    `derive_methods` names other methods to answer for from this one study, through the ratio of their
    curvature at initialisation to this method's (arXiv 2602.04998); those answers are marked derived.
    """
    unknown = [m for m in derive_methods if m not in METHODS]
    if unknown:
        raise SpecError(
            "derive_methods", "unknown method", value=unknown, fix=f"choose from {', '.join(METHODS)}"
        )
    started = time.perf_counter()
    proxy = proxy_spec_for(spec)
    data = prepared_data(proxy)
    # A sibling study trains and probes the target too: its data is prepared once, and a bad target fails
    # before any budget is spent.
    target_data = prepared_data(spec) if spec.proxy_model is not None else None
    priors = _warm_start(spec, data, store, progress)
    provisional, beta = priors.provisional, priors.beta
    per_example, overhead, calibration = calibrate(proxy, data)
    budget = budget_override if budget_override is not None else spec.budget.proxy_seconds
    calibrations = [calibration]
    target_cost_ratio = 1.0
    if target_data is not None and budget is not None:  # a seconds budget prices the target's runs
        target_cost_ratio, target_calibration = _target_cost_ratio(spec, target_data, per_example)
        calibrations.append(target_calibration)
    prior, prior_evidence = (
        (None, {}) if provisional else curvature_prior(proxy, data, per_example, budget, beta)
    )
    remaining = None if budget is None else max(budget - (time.perf_counter() - started), 0.0)
    plan, paused_runs = plan_with_paused_runs(
        lambda pausable: plan_study(
            spec,
            n_train=len(data.train),
            seconds_per_example=per_example,
            run_overhead_seconds=overhead,
            budget_seconds=remaining,
            prior=prior,
            lr_centre=provisional.learning_rate if provisional else None,
            spent_examples=sum(c.examples_seen for c in calibrations),
            target_cost_ratio=target_cost_ratio,
            pausable_runs=pausable,
        ),
        checkpoint_bytes(calibration.trainable_params),
        per_example,
    )
    # Extensions may use the budget the plan leaves unspent, up to 70% of it; halving then completes.
    ledger = _Ledger(
        plan.estimated_runs,
        progress,
        deadline=time.perf_counter() + 0.7 * remaining if remaining is not None else math.inf,
        budget_examples=plan.budget_examples,
        hard_deadline=started + budget if budget is not None else math.inf,
        runs=calibrations,  # their examples count towards the study's cost
        reserved_examples=plan.target_reserve_examples,
        reserved_seconds=plan.target_reserve_seconds,
    )
    if progress:
        progress(0, plan.estimated_runs, plan.describe())
    by_rung = successive_halving(proxy, data, plan, ledger, paused_runs)
    fits = rung_fits(by_rung, plan.batch_sizes)
    top = _top_fit(fits)
    trend = trend_study(proxy, data, plan, top, ledger) if top is not None else None
    horizon = horizon_study(proxy, data, plan, top, ledger, priors.size_exponent) if top is not None else None
    result = _finish(spec, plan, ledger, by_rung, fits, (trend, horizon), priors, (data, target_data))
    if prior_evidence and isinstance(result.recommendation, Recommendation):
        result.recommendation.evidence["curvature_prior"] = prior_evidence
    if derive_methods and isinstance(result.recommendation, Recommendation):
        result.derived = derive_other_methods(proxy, data, result.recommendation, derive_methods, beta)
    return result


def plan_with_paused_runs(
    plan_for: Callable[[int], StudyPlan],
    paused_bytes: int,
    seconds_per_example: float,
    room: ShelfCapacity | None = None,
) -> tuple[StudyPlan, ShelfCapacity]:
    """The plan for as many paused runs as the study can hold, and where it holds them; `room` is what this
    machine offers (`shelf_memory_bytes`, `spill_disk_bytes` when not given).

    In memory first. When rung 0's runs do not all fit there, on disk as well, if that pays: every rung-0
    run is written and the promoted third read back, each saving rung 0's training (`spill_seconds`, timed on
    this machine's temporary folder). Otherwise promoted configs restart, and the plan, which then costs
    more examples, says why."""
    room = room or ShelfCapacity(shelf_memory_bytes(), spill_disk_bytes())
    memory = ShelfCapacity(room.memory_bytes)
    plan = plan_for(memory.runs(paused_bytes))
    if plan.resumes_promotions or len(plan.rungs) < 2:
        return plan, memory
    held = f"paused runs of {paused_bytes / 1e9:.2f} GB each exceed the {memory.memory_bytes / 1e9:.1f} GB"
    spilling = plan_for(room.runs(paused_bytes))
    if not spilling.resumes_promotions:
        plan.notes.append(
            f"{held} this study may hold in memory and the {room.disk_bytes / 1e9:.0f} GB on disk: promoted "
            "configs restart"
        )
        return plan, memory
    promoted_share = spilling.rungs[1].configs / spilling.rungs[0].configs
    speed = measure_spill_speed(nbytes=paused_bytes)
    disk_seconds = spill_seconds(paused_bytes, speed, promoted_share)
    retrain_seconds = spilling.rungs[0].examples * seconds_per_example
    timing = f"~{disk_seconds:.1f} s of disk per promoted run (twice a speed test's), retraining rung 0 "
    if disk_seconds >= retrain_seconds:
        plan.notes.append(
            f"{held} this study may hold in memory, and disk is slower than retraining ({timing}"
            f"{retrain_seconds:.1f} s): promoted configs restart"
        )
        return plan, memory
    spilling.notes.append(
        f"{held} this study may hold in memory: the rest go to a temporary folder on disk ({timing}"
        f"{retrain_seconds:.1f} s)"
    )
    return spilling, room


# Probing λ costs about this many training examples' time per probe: ~6 representative modules × ~12
# Lanczos steps × an HVP (≈ 3 training examples' work per sample) × 16 samples.
PROBE_COST_EXAMPLES = 6 * 12 * 3 * 16
PROBE_BUDGET_SHARE = 0.15  # the curvature prior may use at most this share of the study's seconds
# Methods that keep LoRA's (A, B) parametrisation but start elsewhere, whose LR scale arXiv 2602.04998 ties to
# the curvature at initialisation. Not BaLoRA (its scale comes from its training dynamics: λ at init equals
# LoRA's), nor full fine-tuning or prompt tuning (another parametrisation, where Adam's step size and not λ
# sets the scale): those keep the method's usual LR as the centre.
CURVATURE_CENTRED_METHODS = frozenset({"pissa", "olora"})


def curvature_prior(
    proxy: StudySpec, data: PreparedData, seconds_per_example: float, budget: float | None, beta: float
) -> tuple[CurvaturePrior | None, dict[str, Any]]:
    """Centre the LR grid by curvature for PiSSA and OLoRA: LR ≈ 2e-4 × (λ_method / λ_LoRA)^−β, both λ_max
    measured on the proxy at initialisation at the same rank and α (arXiv 2602.04998's λ-ratio rule). Other
    methods, a user's range of at most 3 decades (covered whole), or a probe that would take more than 15%
    of the budget: no prior, and the grid is centred on the method's usual LR.
    """
    low, high = proxy.lr_range
    if proxy.method not in CURVATURE_CENTRED_METHODS or math.log10(high / low) <= 3.0:
        return None, {}
    estimated = 2 * PROBE_COST_EXAMPLES * seconds_per_example
    if budget is not None and estimated > PROBE_BUDGET_SHARE * budget:
        return None, {"skipped": f"two curvature probes (~{estimated:.0f} s) exceed 15% of the budget"}
    lambda_method, method_probe = probe_lambda(proxy, data)
    lambda_lora, lora_probe = probe_lambda(proxy.model_copy(update={"method": "lora"}), data)
    evidence = {"method": method_probe, "lora": lora_probe, "beta": beta}
    if lambda_method is None or lambda_lora is None or lambda_method <= 0 or lambda_lora <= 0:
        return None, evidence | {"skipped": "λ_max could not be measured for both methods"}
    prior = CurvaturePrior(
        lambda_method, lambda_lora, LATTICE_ANCHOR, beta, source=f"λ ratio of {proxy.method} to LoRA"
    )
    return prior, evidence | {"lr_centre": prior.lr_centre(), "ratio": lambda_method / lambda_lora}


def derive_other_methods(
    proxy: StudySpec, data: PreparedData, rec: Recommendation, methods: Sequence[str], beta: float
) -> dict[str, Recommendation]:
    """Each method's answer from this study's, by λ_max(method) / λ_max(this method) on the proxy at
    initialisation; methods whose curvature cannot be measured are left out (and say so in the evidence)."""
    measured, _ = probe_lambda(proxy, data)
    derived: dict[str, Recommendation] = {}
    for method in methods:
        other, _ = probe_lambda(proxy.model_copy(update={"method": method}), data)
        if measured is not None and other is not None and method != proxy.method:
            derived[method] = derive_method(
                rec, method, lambda_measured=measured, lambda_method=other, beta=beta
            )
    return derived


def _warm_start(
    spec: StudySpec, data: PreparedData, store: KnowledgeStore | None, progress: Progress | None
) -> Priors:
    if store is None:
        return Priors()
    context = StudyContext.from_spec(
        spec, n_train=len(data.train), fingerprint=data.fingerprint.get("content_sha256")
    )
    priors = stored_priors(store, context)
    provisional = priors.provisional
    if provisional and progress:
        progress(
            0,
            0,
            f"provisional: batch {provisional.batch_size}, LR {provisional.learning_rate:.3g} "
            f"({provisional.confidence.label} confidence, from stored studies)",
        )
    return priors


def _finish(
    spec: StudySpec,
    plan: StudyPlan,
    ledger: _Ledger,
    by_rung: dict[int, list[Observation]],
    fits: dict[int, SurfaceFit | NoRecommendation],
    length_runs: tuple[TrendResult | None, TrendResult | None],
    priors: Priors,
    data: tuple[PreparedData, PreparedData | None],  # the proxy's; the target's when the proxy is a sibling
) -> StudyResult:
    cost = Cost(
        proxy_seconds=round(sum(r.seconds for r in ledger.runs), 2),
        examples_seen=sum(r.examples_trained for r in ledger.runs),
        runs=len(ledger.runs),
    )
    fits_json = {str(plan.top_examples): fits_evidence(fits)}
    evidence: dict[str, Any] = {
        "runs": runs_summary(ledger.runs),
        "plan": plan.describe(),
        "probes": None,
        "beta": priors.beta,
        "fits": fits_json,
    }
    rec = recommend_from_rungs(fits, by_rung, spec=spec, cost=cost, evidence=evidence)
    if isinstance(rec, Recommendation):
        deepest = _deepest_fit(fits)
        if deepest is not None:  # always, when there is a recommendation: it came from this fit
            answer_rung, top = deepest
            bowl = deepest_bowl(fits, top.batch_size)
            rec = _apply_size_trend(
                rec, plan, top, by_rung[answer_rung], *length_runs, bowl, priors.size_exponent
            )
            rec = _forecast_real_run_loss(rec, plan, deepest, length_runs[1], bowl, priors.loss_exponent)
        rec = _confirm_on_target(spec, plan, rec, data, ledger, priors.beta, fits)
        rec = band_holding_interval(_apply_outcome_correction(rec, priors.lr_correction))
        rec = picked_lr(rec, spec.lr_pick)  # last: the median it may move from has every other move in it
        rec = thin_data_caveat(rec, spec, data[0])
        rec.band.compared_batch_sizes = sorted(
            {r.config.batch_size for r in ledger.runs if r.meta.get("role") == HALVING_ROLE}
        )
        dropped = plan.dropped_batch_note(rec.batch_size)
        if dropped:
            rec.reasoning.append(dropped)
        rec.reasoning.extend(batch_grid_reasoning(plan, rec.batch_size, _batch_edge(fits)))
        rec.evidence["batch_sizes"] = _batch_sizes_evidence(plan)
        rec.reasoning.insert(
            0,
            f"Successive halving ran {cost.runs} proxy runs ({cost.examples_seen} "
            f"examples, {cost.proxy_seconds:.0f} s) comparing configs at equal examples seen.",
        )
    return StudyResult(rec, ledger.runs, plan, priors.provisional, fits_json)


def _batch_edge(fits: dict[int, SurfaceFit | NoRecommendation]) -> str | None:
    """The side of the batch sizes B* sits on in the answer's fit ("low", "high"); None when inside them."""
    deepest = _deepest_fit(fits)
    edges = [e.side for e in deepest[1].edges if e.axis == "batch"] if deepest else []
    return edges[0] if edges else None


def _batch_sizes_evidence(plan: StudyPlan) -> dict[str, Any]:
    """The batch sizes a study compared and why those: the candidates (derived or the spec's), the ones an
    edge added, the ones the budget left out."""
    origin = plan.batch_origin.evidence() if plan.batch_origin else {}
    return origin | {
        "compared": plan.batch_sizes,
        "extended": plan.extended_batch_sizes,
        "dropped": plan.dropped_batch_sizes,
    }


# Below this many held-out examples the mean eval loss ranks configs largely by which examples were held
# out (one example's loss moves the mean by 1/n), which no number of training seeds averages away.
MIN_EVAL_EXAMPLES = 16
THIN_DATA_CONFIDENCE = 0.3  # the most an answer from such data may claim: "low"


def thin_data_caveat(rec: Recommendation, spec: StudySpec, data: PreparedData) -> Recommendation:
    """The answer with its confidence capped at low, and the reason said, when the data cannot carry it: a
    training split smaller than every candidate batch (the real run is a single step), or an eval split too
    small to rank configs. Bowls fit to such data can look clean and read as high confidence."""
    problems = []
    smallest = min(batch_candidates(spec, len(data.train)).sizes)
    if len(data.train) < smallest:
        problems.append(
            f"the training split holds {len(data.train)} examples, fewer than the smallest batch size "
            f"{smallest}, so the real run is a single optimizer step"
        )
    if len(data.eval) < MIN_EVAL_EXAMPLES:
        problems.append(
            f"the eval loss is the mean over {len(data.eval)} held-out examples (at least "
            f"{MIN_EVAL_EXAMPLES} are needed to rank configs by more than which examples were held out)"
        )
    if not problems:
        return rec
    score = min(rec.confidence.score, THIN_DATA_CONFIDENCE)
    confidence = rec.confidence.model_copy(
        update={"score": score, "label": confidence_label(score), "notes": [*rec.confidence.notes, *problems]}
    )
    said = (
        f"Too little data to trust this answer: {'; and '.join(problems)}. "
        "Add examples, or give dataset.eval_path."
    )
    return rec.model_copy(update={"confidence": confidence, "reasoning": [*rec.reasoning, said]})


def _apply_outcome_correction(rec: Recommendation, correction: LrCorrection) -> Recommendation:
    """Full runs reported back in this context found the advisor's LRs off by a factor; this answer was made
    the same way, so it moves by that factor too (the stored outcome is compared with the final answer).
    Unless enough reporters corroborate it, the move stays inside the LR interval this study measured: a
    single reporter, honest or hostile, cannot take an answer beyond what its own runs allow."""
    factor = correction.factor
    interval = rec.confidence.lr_interval
    if not correction.corroborated and interval is not None:
        low, high = interval
        factor = min(max(factor, low / rec.learning_rate), high / rec.learning_rate)
    if not correction.outcomes_used or math.isclose(factor, 1.0):
        return rec
    held = "" if math.isclose(factor, correction.factor) else " (held inside this study's LR interval)"
    return with_lr_scaled(
        rec,
        factor,
        f"Moved by ×{factor:.2f}{held}: {correction.describe()}.",
        evidence_key="outcome_correction",
        evidence=correction.model_dump(),
    )


# 5. Dataset-size trend ------------------------------------------------------------------------------------


HORIZON_SPACING = 2  # lattice steps between the two horizon LRs: half a decade, a clear loss difference
NOISE_FLOOR = 0.0025  # relative: below a quarter percent of the loss, seed noise is not believed to be zero


@dataclass
class TrendResult:
    """Complete runs at B* of another length than the top rung's (a trend study on a third of its examples,
    or horizon runs towards the real run's length), or why there were none."""

    examples: int
    batch_size: int
    fit: SurfaceFit | None = None
    observations: list[Observation] = field(default_factory=list)
    skipped: str | None = None


def trend_study(
    spec: StudySpec, data: PreparedData, plan: StudyPlan, top: SurfaceFit, ledger: _Ledger
) -> TrendResult | None:
    """Complete runs of `plan.trend_examples` examples at B*, at LR*(top) one step below and two above (a
    shorter run wants a higher LR), one step further when the optimum lands on an edge."""
    small, batch = plan.trend_examples, top.batch_size
    if small is None or not plan.trend_runs:
        return None
    if small < TREND_MIN_STEPS * batch:
        reason = f"B* = {batch} takes fewer than {TREND_MIN_STEPS} steps on {small} examples"
        return TrendResult(small, batch, skipped=reason)
    centre = lattice_index(top.learning_rate)
    lrs = [lattice_lr(centre + step) for step in (-1, 0, 1, 2)]
    observations: list[Observation] = []
    for _ in range(2):  # the planned LRs, then one step beyond an edge if the budget allows
        for lr in lrs:
            if ledger.affords(small):
                record = run_to_rung(
                    spec, data, (batch, lr), top_examples=small, stop_at=small, eval_examples=small
                )
                observations.append(observation(record, small, small))
                message = f"size trend B={batch} LR={lr:.3g} on {small} examples: {record.status}"
                ledger.add(record, message, "trend")
        fit = fit_surface(observations, batch_candidates=[batch])
        curve = fit.curves.get(batch) if isinstance(fit, SurfaceFit) else None
        lrs = _beyond_edge(spec, curve) if curve is not None else []
        if not lrs:
            break
    if not isinstance(fit, SurfaceFit):
        return TrendResult(small, batch, skipped=f"no trend run finished ({fit.reason})")
    return TrendResult(small, batch, fit=fit, observations=observations)


def horizon_lrs(
    spec: StudySpec, top_lr: float, top_examples: int, length: int, exponent: float = SIZE_EXPONENT
) -> list[float]:
    """Two lattice LRs half a decade apart, the higher one where the prior γ moves LR*(top) at `length`
    examples, shifted down as a pair when the higher one would leave the reach of extensions.

    The pair sits below the prediction, not around it, because the loss is lopsided about LR*: above it a
    complete run climbs a cliff onto a plateau (the quality benchmark's `repeat` at B = 2: 2.40 at LR 0.02,
    3.07 at 0.0356, 3.13 at 0.0632), where a run says nearly nothing about where the vertex is, while below
    it the loss slopes gently. When short runs read LR* high, as on the tiny tasks, a pair centred on the
    prediction had both runs on the plateau, and the bowl width read the vertex inside it: ×3–15 too high."""
    predicted = top_lr * (length / top_examples) ** exponent
    low = lattice_index(predicted) - HORIZON_SPACING
    floor, ceiling = extension_bounds(spec)
    while low > lattice_index(floor) and lattice_lr(low + HORIZON_SPACING) > ceiling:
        low -= 1
    return [lattice_lr(low), lattice_lr(low + HORIZON_SPACING)]


def horizon_study(
    spec: StudySpec,
    data: PreparedData,
    plan: StudyPlan,
    top: SurfaceFit,
    ledger: _Ledger,
    prior: ExponentPrior | None = None,
) -> TrendResult | None:
    """Complete runs at B*, as long as the budget left affords (≥ 2× the top rung, ≤ the real run): where LR*
    has moved at a length near the real run's is measured, not extrapolated. The pair of `horizon_lrs` first;
    then, where the budget reserved it and the loss still falls at the pair's upper LR, one run a pair's
    spacing above it (`bracketing_lr`), so that the vertex is bracketed rather than bounded from below."""
    if not plan.horizon_runs:
        return None
    planned = horizon_length(plan, ledger.examples_left(top.batch_size))
    if planned is None:
        reason = "the runs before it left too little budget for 2 runs at twice the top rung's length"
        return TrendResult(plan.horizon_examples or 0, top.batch_size, skipped=reason)
    length, runs = planned
    plan.dataset_sizes[-1] = length  # the plan now says what ran
    observations: list[Observation] = []
    exponent = (prior or ExponentPrior()).mean
    batch = top.batch_size

    def run(lr: float) -> None:
        if ledger.affords(length):
            record = run_to_rung(
                spec, data, (batch, lr), top_examples=length, stop_at=length, eval_examples=length
            )
            observations.append(observation(record, length, length))
            ledger.add(
                record, f"horizon B={batch} LR={lr:.3g} on {length} examples: {record.status}", "horizon"
            )

    for lr in horizon_lrs(spec, top.learning_rate, plan.top_examples, length, exponent):
        run(lr)
    above = bracketing_lr(spec, observations) if runs > HORIZON_RUNS else None
    if above is not None:
        run(above)
    return TrendResult(length, top.batch_size, observations=observations)


def bracketing_lr(spec: StudySpec, pair: list[Observation]) -> float | None:
    """The LR a pair's spacing above the horizon pair when both finished and the upper one has the lower loss
    (the vertex may lie beyond it); None when the lower one has (the pair then bounds the vertex from above,
    and `vertex_of_pair` reads it on the gentle side of the bowl), or past the reach of extensions."""
    finite = _finished_runs(pair)
    if len(finite) < HORIZON_RUNS or finite[-1][1] >= finite[-2][1]:
        return None
    above = lattice_lr(lattice_index(finite[-1][0]) + HORIZON_SPACING)
    return above if above <= extension_bounds(spec)[1] else None


Bowl = tuple[float, float]  # (c, L*): loss ≈ L* + c·(log10 lr − log10 LR*)² on one rung, at B*


def deepest_bowl(fits: dict[int, SurfaceFit | NoRecommendation], batch: int) -> Bowl | None:
    """The bowl at `batch` of the deepest rung that shows one: the top rung's optimum can sit on the edge of
    the few LRs promoted to it, where a shallower rung's wider spread of LRs still shows the bowl's width."""
    for _, fit in sorted(fits.items(), reverse=True):
        curve = fit.curves.get(batch) if isinstance(fit, SurfaceFit) else None
        coefficient = bowl_coefficient(curve) if curve is not None else None
        if curve is not None and coefficient is not None:
            return coefficient, curve.loss_star
    return None


def _finished_runs(observations: list[Observation]) -> list[tuple[float, float]]:
    """(LR, loss) of the runs that did not diverge, by LR."""
    return sorted((o.learning_rate, float(o.loss or 0.0)) for o in observations if not o.diverged)


def reading_pair(finite: list[tuple[float, float]]) -> tuple[tuple[float, float], tuple[float, float]]:
    """The two of the horizon runs (sorted by LR, at least 2) that read the vertex: the lowest-loss run and
    its better neighbour. With a bowl either side of its bottom, those two straddle or nearly straddle LR*;
    a third run on a cliff above LR* is then only an upper bound (`vertex_of_pair` keeps the vertex within
    half a spacing of the pair, which is where a bowl through the third would put its farthest)."""
    best = min(range(len(finite)), key=lambda i: finite[i][1])
    neighbours = [i for i in (best - 1, best + 1) if 0 <= i < len(finite)]
    other = min(neighbours, key=lambda i: finite[i][1])
    low, high = sorted((best, other))
    return finite[low], finite[high]


def _horizon_scale(
    top: SurfaceFit, finite: list[tuple[float, float]], bowl: Bowl | None
) -> tuple[float | None, float]:
    """(bowl width c, seed noise) at the horizon runs' loss level: a longer run has a lower loss, and the
    bowl's depth and the seed noise are taken to shrink in proportion."""
    level = statistics.fmean(loss for _, loss in finite)
    noise = max(top.noise_sd, NOISE_FLOOR * top.loss) * level / top.loss
    return (bowl[0] * level / bowl[1] if bowl is not None else None), noise


def _horizon_measurement(top: SurfaceFit, horizon: TrendResult, bowl: Bowl | None) -> LogMeasurement | str:
    """LR* at the horizon from its runs' reading pair and a rung's bowl, scaled to the horizon's loss
    level."""
    finite = _finished_runs(horizon.observations)
    if len(finite) < HORIZON_RUNS:
        diverged = [o.learning_rate for o in horizon.observations if o.diverged]
        if len(finite) == 1 and diverged and min(diverged) > finite[0][0]:
            # The higher LR diverged: LR* is at or below the lower one, known to about one spacing.
            return LogMeasurement(horizon.examples, math.log10(finite[0][0]), HORIZON_SPACING / 4)
        return f"{len(finite)} of the {len(horizon.observations)} horizon runs finished"
    pair = reading_pair(finite)
    bowl_width, noise = _horizon_scale(top, list(pair), bowl)
    if bowl_width is None:
        return "no rung shows a bowl at B* to read the horizon pair by"
    return vertex_of_pair(pair[0], pair[1], bowl_width, noise, horizon.examples)


def _horizon_best_loss(
    top: SurfaceFit, horizon: TrendResult | None, bowl: Bowl | None
) -> LogMeasurement | None:
    """L* at the horizon: the bowl's bottom through the reading pair when there is one, else the lower run's
    loss (an upper bound: LR* may lie between the runs)."""
    if horizon is None or not (finite := _finished_runs(horizon.observations)):
        return None
    best = min(loss for _, loss in finite)
    pair = reading_pair(finite) if len(finite) >= HORIZON_RUNS else None
    bowl_width, noise = _horizon_scale(top, list(pair) if pair else finite, bowl)
    if pair is not None and bowl_width is not None:
        vertex = vertex_of_pair(pair[0], pair[1], bowl_width, noise, horizon.examples).log_value
        bottom = statistics.fmean(loss - bowl_width * (math.log10(lr) - vertex) ** 2 for lr, loss in pair)
        best = min(best, bottom)
    return loss_measurement(horizon.examples, best, noise)


def _forecast_real_run_loss(
    rec: Recommendation,
    plan: StudyPlan,
    answer: tuple[int, SurfaceFit],
    horizon: TrendResult | None,
    bowl: Bowl | None,
    prior: LossExponentPrior | None = None,
) -> Recommendation:
    """The predicted eval loss at the real run's length (`advisor.science.loss_forecast`): L* of the answer's
    rung moved along L* ∝ N^−α (α's prior sharpened by reported outcomes), through L* of the horizon runs
    where they ran (trend runs are shorter than the top rung: the forecast does not read them)."""
    examples, top = answer
    anchor = loss_measurement(examples, top.loss, max(top.noise_sd, NOISE_FLOOR * top.loss))
    at_horizon = _horizon_best_loss(top, horizon, bowl)
    measured = [at_horizon] if at_horizon is not None else []
    forecast = forecast_loss(anchor, measured, max(plan.full_examples, examples), prior)
    rec.evidence["loss_forecast"] = forecast.model_dump()
    rec.reasoning.append(forecast.sentence())
    interval = (forecast.low, forecast.high)
    return rec.model_copy(
        update={"predicted_eval_loss": forecast.loss, "predicted_eval_loss_interval": interval}
    )


def _trend_measurement(top: SurfaceFit, trend: TrendResult) -> LogMeasurement | str:
    """LR* on the trend study's shorter runs, with its bootstrap spread (single seeds: at least as noisy as
    the top rung)."""
    if trend.fit is None:
        return trend.skipped or "no trend run finished"
    trend.fit.noise_sd = max(trend.fit.noise_sd, top.noise_sd)
    spread = lr_star_sd(bootstrap_optimum(trend.observations, trend.fit, replicates=100))
    return LogMeasurement(trend.examples, math.log10(trend.fit.learning_rate), spread)


def _apply_size_trend(
    rec: Recommendation,
    plan: StudyPlan,
    top: SurfaceFit,
    top_observations: list[Observation],
    trend: TrendResult | None,
    horizon: TrendResult | None = None,
    bowl: Bowl | None = None,
    prior: ExponentPrior | None = None,
) -> Recommendation:
    """Move LR* from the top rung's length to the real run's along LR* ∝ N^γ: a straight line in log-log
    through the top rung's LR*, whatever the trend study or the horizon runs measured, and the prior of γ
    (arXiv 2602.04998's −0.25 ± 0.3, or sharpened by stored studies; `fits.loglog_line`); the prior alone when
    nothing else was measured."""
    prior = prior or ExponentPrior()
    reached, full = plan.top_examples, plan.full_examples
    if full <= reached:
        return rec
    evidence: dict[str, Any] = {"from_examples": reached, "to_examples": full}
    measurements: list[LogMeasurement] = []
    if bowl is None:
        bowl = deepest_bowl({reached: top}, top.batch_size)
    for kind, runs in (("trend", trend), ("horizon", horizon)):
        if runs is None:
            continue
        measured = _trend_measurement(top, runs) if kind == "trend" else _horizon_measurement(top, runs, bowl)
        evidence[kind] = {
            "examples": runs.examples,
            "runs": [{"learning_rate": o.learning_rate, "loss": o.loss} for o in runs.observations],
        }
        if isinstance(measured, str):
            evidence[kind]["skipped"] = runs.skipped or measured
            continue
        measurements.append(measured)
        evidence[kind] |= {"lr_star": 10**measured.log_value, "sd_decades": measured.sd}
    anchor_sd = interval_sd(rec.confidence.lr_interval)  # the top rung's bootstrap, as the answer has it
    anchor = LogMeasurement(reached, math.log10(top.learning_rate), anchor_sd)
    path = loglog_line(anchor, measurements, prior.mean, prior.sd)
    at_full, spread = path.at(full)
    exponent, factor = path.exponent, 10 ** (at_full - anchor.log_value)
    if not measurements:
        source = prior.describe()
    else:
        said = "; ".join(
            f"LR* {10**m.log_value:.3g} ± {m.sd:.2f} decades on {m.examples}" for m in measurements
        )
        source = (
            f"a line through the top rung's LR* ({top.learning_rate:.3g} ± {anchor_sd:.2f} decades), {said} "
            f"examples at B* = {top.batch_size}, and {prior.describe()}"
        )
    skipped = [
        f" (the {kind} runs told nothing: {e['skipped']})"
        for kind, e in evidence.items()
        if isinstance(e, dict) and "skipped" in e
    ]
    answer_rung = top_observations[0].examples_seen if top_observations else reached
    cut = (
        f" (the budget stopped the halving at {answer_rung} examples into its {reached}-example schedule, "
        "and the answer comes from there)"
        if answer_rung < reached
        else ""
    )
    sentence = (
        f"The top rung trained on {reached} of the real run's {full} examples{cut}; LR* ∝ N^{exponent:.2f} "
        f"({source}) moves the LR by ×{factor:.2f} to the real run's length (±{spread:.2f} decades)"
        f"{''.join(skipped)}."
    )
    evidence |= {
        "lr_exponent": exponent,
        "exponent_sd": math.sqrt(path.covariance[1][1]),
        "measured": bool(measurements),  # a stored γ sharpens later studies' prior only when measured
        "prior": prior.model_dump(),
        "source": source,
        "factor": factor,
        "sd_decades_at_full": spread,
    }
    interval = (10 ** (at_full - Z90 * spread), 10 ** (at_full + Z90 * spread))
    return with_lr_scaled(
        rec,
        factor,
        sentence,
        evidence_key="size_trend",
        evidence=evidence,
        confidence_factor=_width_factor(rec, 2 * Z90 * spread),
        lr_interval=interval,
    )


def _width_factor(rec: Recommendation, new_width: float) -> float:
    """How the confidence score changes when the 90% interval of LR* goes from the top rung's width to
    `new_width` decades at the real run's length (the score falls linearly to 0 at a decade wide)."""
    if rec.confidence.lr_interval is None:
        return 1.0
    low, high = rec.confidence.lr_interval
    old_width = math.log10(high / low)
    return max(0.0, 1.0 - new_width) / (1.0 - old_width) if old_width < 1.0 else 1.0


def _top_fit(fits: dict[int, SurfaceFit | NoRecommendation]) -> SurfaceFit | None:
    deepest = _deepest_fit(fits)
    return deepest[1] if deepest else None


def _deepest_fit(fits: dict[int, SurfaceFit | NoRecommendation]) -> tuple[int, SurfaceFit] | None:
    """(examples, fit) of the deepest rung with a usable fit: the answer's rung (recommend_from_rungs picks
    the same one). Below the top rung when the budget cut the halving short."""
    usable = [(examples, f) for examples, f in sorted(fits.items()) if isinstance(f, SurfaceFit)]
    return usable[-1] if usable else None


def probe_lambda(spec: StudySpec, data: PreparedData | None = None) -> tuple[float | None, dict[str, Any]]:
    """Median λ_max over representative modules at initialisation, cheaply (16 samples, loose tolerance);
    (None, why) when the probes are not installed or fail: the study then goes on without curvature."""
    try:
        from proxy_runs.probes import probe_spec
    except ImportError:
        return None, {"skipped": "curvature probes unavailable"}
    try:
        setup = setup_proxy(spec, data=data) if data is not None else None
        report = probe_spec(spec, setup=setup, samples=16, tol=1e-2, max_iter=30)
    except AdvisorError as exc:
        return None, {"skipped": f"probe failed: {exc}"}
    return report.median_eigenvalue, {
        "model": spec.model,
        "median_lambda_max": report.median_eigenvalue,
        "max_lambda_max": report.max_eigenvalue,
        "modules": len(report.modules),
        "seconds": report.seconds,
    }


def _confirm_on_target(
    spec: StudySpec,
    plan: StudyPlan,
    rec: Recommendation,
    data: tuple[PreparedData, PreparedData | None],
    ledger: _Ledger,
    beta: float,
    fits: dict[int, SurfaceFit | NoRecommendation],
) -> Recommendation:
    """A sibling proxy's answer on the target: B* as is; the LR by the model ratio that short target runs
    measure at one of the proxy's rungs when the plan affords them, else by the curvature ratio."""
    proxy_data, target_data = data
    if target_data is None:  # the proxy is the target itself
        return rec
    lambda_proxy, proxy_probe = probe_lambda(proxy_spec_for(spec), proxy_data)
    lambda_target, target_probe = probe_lambda(spec, target_data)
    rec.evidence["probes"] = {"proxy": proxy_probe, "target": target_probe}
    measured = lambda_proxy is not None and lambda_target is not None
    lp, lt = 1.0, 1.0  # no curvature measured: the LR carries over unchanged
    if lambda_proxy is not None and lambda_target is not None:
        lp, lt = lambda_proxy, lambda_target
    anchor = _confirmation_anchor(fits, plan.confirm_examples, rec.batch_size) if plan.confirm_lrs else None
    confirmations: list[tuple[float, float | None]] = []
    ratio = None
    if anchor is not None:
        examples, proxy_lr = anchor
        confirmations = _target_runs(
            spec, target_data, plan, ledger, rec.batch_size, examples, (proxy_lr, lp, lt, beta)
        )
        ratio = measured_model_ratio(proxy_lr, rec.batch_size, examples, confirmations)
    moved = transfer_to_target(
        rec, lambda_proxy=lp, lambda_target=lt, beta=beta, confirmations=confirmations, model_ratio=ratio
    )
    if not measured:
        moved.reasoning.append("No curvature probe was available, so the proxy's LR was carried over as is.")
    target_seconds = sum(r.seconds for r in ledger.runs[-len(confirmations) :]) if confirmations else 0.0
    moved.cost = moved.cost.model_copy(update={"target_seconds": round(target_seconds, 2)})
    return moved


def _confirmation_anchor(
    fits: dict[int, SurfaceFit | NoRecommendation], examples: int, batch_size: int
) -> tuple[int, float] | None:
    """(rung length, the proxy's LR*(B*) there): the longest rung up to `examples` whose fit has a curve at
    B*, which the target's runs are measured against at equal examples seen."""
    for length in sorted(fits, reverse=True):
        fit = fits[length]
        if length <= examples and isinstance(fit, SurfaceFit) and batch_size in fit.curves:
            return length, fit.curves[batch_size].lr_star
    return None


def _target_runs(
    spec: StudySpec,
    data: PreparedData,
    plan: StudyPlan,
    ledger: _Ledger,
    batch: int,
    examples: int,
    placement: tuple[float, float, float, float],
) -> list[tuple[float, float | None]]:
    """(lr, loss at `examples`) of the target's runs at B* on the rungs' schedule: `confirmation_lrs` from
    `placement` (the proxy's LR there, λ_proxy, λ_target, β), then one LR past an edge if affordable."""
    results: list[tuple[float, float | None]] = []
    ledger.release_reserve()
    lrs = confirmation_lrs(*placement)
    while lrs:
        lr = lrs.pop(0)
        if not ledger.in_time():
            break  # a seconds budget: target examples cost more than the proxy's the plan was priced at
        record = run_to_rung(
            spec, data, (batch, lr), top_examples=plan.top_examples, stop_at=examples, eval_examples=examples
        )
        ledger.add(
            record,
            f"target run B={batch} LR={lr:.3g} to {examples} examples: {record.status}",
            CONFIRMATION_ROLE,
        )
        results.append((lr, loss_at(record, examples)))
        if not lrs and len(results) < plan.confirm_lrs + CONFIRM_EXTENSIONS and ledger.affords(examples):
            beyond = past_the_edge(results, batch)
            lrs = [beyond] if beyond is not None else []
    return results
