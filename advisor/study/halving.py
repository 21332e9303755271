"""Successive halving over (batch size, LR): every config to rung 0, the grid extended where its optimum sits
on an edge, the best third re-run further, then second seeds and an edge step at the top rung.

Runs follow the schedule of the top fidelity and stop at their rung, so configs are compared at equal
examples seen; diverged runs stop at once.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from advisor.records import HALVING_ROLE, RunRecord, RunStatus
from advisor.science.fits import CurveFit, Observation, SurfaceFit, fit_surface
from advisor.science.lr_grid import extend_lr_grid, extension_bounds, lattice_index, lattice_lr
from advisor.science.planner import batch_past_edge
from advisor.science.recommendation import NoRecommendation
from advisor.science.study_plan import StudyPlan
from advisor.specs import StudySpec
from advisor.study.ledger import Ledger
from advisor.study.runner import (
    Config,
    PausedRuns,
    ProxyRunner,
    RunRequest,
    Schedule,
    ShelfKey,
    ShelfRoom,
)

MAX_EXTENSIONS = 2  # grid extensions at rung 0 before the study accepts an edge
# LRs a batch added past an edge starts with, on the lattice around LR*(B*): a bowl needs 3, and under Adam's
# square-root rule a doubling of B moves LR* by ×√2 (0.15 decades, less than a lattice step), so ±2 steps
# leave it room either side; an LR edge at the new batch extends its LRs as at any other.
BATCH_EXTENSION_LRS = 5


@dataclass(frozen=True)
class Halving:
    """What successive halving measured: observations per rung (examples seen → one per config that reached
    it), and the plan as the grid's extensions left it."""

    by_rung: dict[int, list[Observation]]
    plan: StudyPlan


# 1. One run, stopped at a rung ------------------------------------------------------------------------------


def run_to_rung(
    runner: ProxyRunner,
    spec: StudySpec,
    config: Config,
    *,
    top_examples: int,
    stop_at: int,
    eval_examples: int,
    paused: PausedRuns | None = None,
) -> RunRecord:
    """Train `config` on the schedule of `top_examples` and stop once `stop_at` examples are seen.

    Evaluations every `eval_examples` line up with every rung (rungs are multiples of it), so the loss at a
    rung is measured at exactly that many examples for every batch size. With `paused`, a run goes on from
    where its run at a lower rung of the same schedule and seed paused.
    """
    return runner.run(spec, config, Schedule(top_examples, eval_examples), stop_at, paused)


def shelf_key(spec: StudySpec, config: Config) -> ShelfKey:
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


# 2. Promotion and extensions --------------------------------------------------------------------------------


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


def extensions(fit: SurfaceFit | NoRecommendation, spec: StudySpec, plan: StudyPlan) -> list[Config]:
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


def grown(plan: StudyPlan, configs: list[Config]) -> StudyPlan:
    """The plan with extended configs in it, so that promotion sees the LR neighbours they add and the fits
    the batch sizes (B* is on the batch edge only at the smallest or largest of those)."""
    added = {batch for batch, _ in configs} - set(plan.batch_sizes)
    return dataclasses.replace(
        plan,
        learning_rates=sorted(set(plan.learning_rates) | {lr for _, lr in configs}),
        batch_sizes=sorted({*plan.batch_sizes, *added}),
        extended_batch_sizes=sorted({*plan.extended_batch_sizes, *added}),
    )


def beyond_edge(spec: StudySpec, curve: CurveFit) -> list[float]:
    """One lattice LR past the edge a curve's optimum sits on; [] when there is none or it is beyond the
    reach of extensions (`extension_bounds`), as rung-0 extensions are."""
    if curve.edge is None:
        return []
    tried = [lr for lr, _ in curve.tested]
    return extend_lr_grid(tried, curve.edge, steps=1, bounds=extension_bounds(spec))


def affordable_runs(
    runner: ProxyRunner,
    ledger: Ledger,
    jobs: Sequence[tuple[RunRequest, int]],
    paused: PausedRuns | None = None,
) -> Iterator[tuple[RunRequest, RunRecord]]:
    """The runs of `jobs` (a request and the examples it costs) the budget affords, best first: a cut budget
    drops the last. Each is yielded for the caller to count before the next is chosen. One at a time, each is
    chosen by what the runs before it actually cost (a diverged run costs less than planned); a batched
    runner trains them at once, chosen by their planned cost, so what runs never depends on how many at once.
    """
    if not runner.batched:
        for request, cost in jobs:
            if ledger.affords(cost):
                yield (
                    request,
                    runner.run(request.spec, request.config, request.schedule, request.stop_at, paused),
                )
        return
    chosen, planned = [], 0
    for request, cost in jobs:
        if ledger.affords(planned + cost):
            chosen.append(request)
            planned += cost
    yield from zip(chosen, runner.run_many(chosen, paused), strict=True)


# 3. The halving --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rungs:
    """What every run of one halving shares: where it runs, what it measures into, what it counts on."""

    runner: ProxyRunner
    top: int  # the top rung's examples: the schedule every run follows
    by_rung: dict[int, list[Observation]]
    ledger: Ledger
    paused: PausedRuns | None = None

    def run(
        self, spec: StudySpec, config: Config, stop_at: int, eval_examples: int, role: str = HALVING_ROLE
    ) -> None:
        """One run; its loss counts at the rung it was run to (earlier rungs count their own runs)."""
        record = run_to_rung(
            self.runner,
            spec,
            config,
            top_examples=self.top,
            stop_at=stop_at,
            eval_examples=eval_examples,
            paused=self.paused,
        )
        self.record(record, config, stop_at, role)

    def run_affordable(
        self,
        jobs: list[tuple[StudySpec, Config, int]],
        stop_at: int,
        eval_examples: int,
        role: str = HALVING_ROLE,
    ) -> None:
        """The runs of `jobs` (spec, config, examples it costs) the budget affords (`affordable_runs`)."""
        schedule = Schedule(self.top, eval_examples)
        requests = [(RunRequest(spec, config, schedule, stop_at), cost) for spec, config, cost in jobs]
        for request, record in affordable_runs(self.runner, self.ledger, requests, self.paused):
            self.record(record, request.config, stop_at, role)

    def run_batch(
        self, jobs: list[tuple[StudySpec, Config]], stop_at: int, eval_examples: int, role: str = HALVING_ROLE
    ) -> None:
        """`jobs` trained at once (`ProxyRunner.run_many`), counted in their order."""
        schedule = Schedule(self.top, eval_examples)
        requests = [RunRequest(spec, config, schedule, stop_at) for spec, config in jobs]
        for (_, config), record in zip(jobs, self.runner.run_many(requests, self.paused), strict=True):
            self.record(record, config, stop_at, role)

    def record(self, record: RunRecord, config: Config, stop_at: int, role: str) -> None:
        self.by_rung[stop_at].append(observation(record, stop_at, self.top))
        self.ledger.add(
            record,
            f"B={config[0]} LR={config[1]:.3g} to {stop_at} examples: {record.status}"
            + (f", loss {record.eval_loss:.4f}" if record.eval_loss is not None else ""),
            role,
        )


def successive_halving(
    runner: ProxyRunner,
    spec: StudySpec,
    plan: StudyPlan,
    ledger: Ledger,
    room: ShelfRoom | None = None,
) -> Halving:
    """Every rung's observations, and the plan as extensions grew it. When the plan counted on paused runs,
    a promoted config goes on from its run at the rung below, held within `room` (the runner's default room
    when not given)."""
    if not plan.resumes_promotions:
        return _halve(runner, spec, plan, ledger, None)
    with runner.paused_runs(room or runner.shelf_room()) as paused:
        return _halve(runner, spec, plan, ledger, paused)


def _halve(
    runner: ProxyRunner, spec: StudySpec, plan: StudyPlan, ledger: Ledger, paused: PausedRuns | None
) -> Halving:
    rungs = plan.rungs
    top, first = rungs[-1].examples, rungs[0].examples
    runs = _Rungs(runner, top, {r.examples: [] for r in rungs}, ledger, paused)
    by_rung = runs.by_rung
    alive, done = list(plan.configs), set()
    for extension in range(MAX_EXTENSIONS + 1):  # rung 0, extended while the optimum sits on a grid edge
        waiting = [c for c in alive if c not in done]
        if runner.batched and waiting and (not by_rung[first] or ledger.in_time()):
            runs.run_batch([(spec, config) for config in waiting], first, first)
            done.update(waiting)
        for config in [c for c in alive if c not in done]:
            if by_rung[first] and not ledger.in_time():
                break  # out of time: fit what rung 0 has measured rather than overrun the budget
            runs.run(spec, config, first, first)
            done.add(config)
        if extension == MAX_EXTENSIONS or ledger.past_extension_deadline():
            break  # out of extensions or budget: accept the edge (it lowers the confidence), never overrun
        # A batch added past an edge must reach rung 0 on whole steps (`batch_edge_limit`).
        alive = extensions(fit_surface(by_rung[first], batch_candidates=plan.batch_sizes), spec, plan)
        if not alive or not ledger.affords(len(alive) * first):
            break
        plan = grown(plan, alive)
    for previous, rung in itertools.pairwise(rungs):
        promoted = promote(by_rung[previous.examples], rung.configs, plan.learning_rates)
        if paused is not None:
            paused.keep_only({shelf_key(spec, config) for config in promoted})
        costs = [
            rung.examples - (paused.paused_at(shelf_key(spec, config)) if paused is not None else 0)
            for config in promoted
        ]
        # Evaluated every rung below: η points per run for its curve, the last at its own rung.
        jobs = [(spec, config, cost) for config, cost in zip(promoted, costs, strict=True)]
        runs.run_affordable(jobs, rung.examples, previous.examples)
    plan = top_extras(runs, spec, plan)
    return Halving(by_rung, plan)


def top_extras(runs: _Rungs, spec: StudySpec, plan: StudyPlan) -> StudyPlan:
    """Up to `plan.top_extras` runs of top-rung length after halving, added to the top rung; the plan with
    the LRs they added.

    First, second seeds of the two best configs: they measure the seed-to-seed noise at the fidelity the
    answer comes from and average it down where it matters. Then one LR step beyond the top rung's
    optimum when it sits on the edge of the LRs promoted there (at most 2 steps: promotions come from a
    shorter rung, whose optimum can be off by a step).
    """
    top, ledger = plan.top_examples, runs.ledger
    top_rung = runs.by_rung[top]
    below = plan.rungs[-2].examples if len(plan.rungs) > 1 else top  # evaluated as the promoted runs are
    extras = dataclasses.replace(runs, by_rung={top: top_rung}, paused=None)
    left = plan.top_extras
    second_seed = spec.with_seed(spec.training.seed + 1)
    best = sorted((o for o in top_rung if not o.diverged), key=lambda o: float(o.loss or 0.0))
    seconds = [(second_seed, (o.batch_size, o.learning_rate), top) for o in best[: min(2, left)]]
    before = len(top_rung)
    extras.run_affordable(seconds, top, below, "second seed")
    left -= len(top_rung) - before
    # Edge runs leave the trend study or horizon runs planned after them their share of the budget.
    reserve = plan.trend_runs * (plan.trend_examples or 0) + plan.horizon_runs * (plan.horizon_examples or 0)
    for _ in range(min(2, left)):
        fit = fit_surface(top_rung, batch_candidates=plan.batch_sizes)
        curve = fit.curves[fit.batch_size] if isinstance(fit, SurfaceFit) else None
        if curve is None or curve.edge is None or not ledger.affords(top + reserve):
            break
        beyond = beyond_edge(spec, curve)
        if not beyond:
            break
        plan = grown(plan, [(curve.batch_size, beyond[0])])
        extras.run(spec, (curve.batch_size, beyond[0]), top, below, "edge")
    return plan
