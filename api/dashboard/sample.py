"""Sample studies for the dashboard's tests and for a look at the pages without running a study.

`seed(db)` stores studies the way the worker does (runs, probes, a recommendation, the final state):
successive halving over a (batch size × LR) grid on a closed-form loss surface whose optimum LR grows
like √B, one study with curvature probes, one whose runs all diverged, and one still running.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from advisor.records import RunConfig, RunRecord, RunStatus
from advisor.science.loss_forecast import forecast_loss, loss_measurement
from advisor.science.recommendation import (
    Band,
    BandPair,
    Confidence,
    Cost,
    LrRule,
    NoRecommendation,
    Recommendation,
    confidence_label,
)
from advisor.specs import parse_spec
from advisor.storage import repository as repo
from advisor.storage.db import Database
from advisor.storage.models import Study, StudyState, utcnow

ETA = 3  # successive halving keeps the best third at each rung


@dataclasses.dataclass(frozen=True)
class SampleStudy:
    model: str
    method: str
    rank: int
    examples: int  # training examples (the trends page's dataset size)
    batch_sizes: tuple[int, ...] = (8, 16, 32)
    lr_range: tuple[float, float] = (1e-5, 1e-2)
    lr_points: int = 4
    lr_scale: float = 1.0  # multiplies the optimum LR (methods and ranks move it)
    probes: bool = False


SAMPLES = (
    SampleStudy("tiny-llama", "lora", 8, 1000, probes=True),
    SampleStudy("tiny-llama", "dora", 8, 1000, lr_scale=0.5, probes=True),
    SampleStudy("tiny-llama", "lora", 16, 4000, lr_scale=0.7),
    SampleStudy("tiny-qwen", "lora", 8, 1000, lr_scale=1.5),
    SampleStudy("tiny-llama", "lora", 8, 1000, lr_range=(2e-2, 1e-1), lr_points=3),  # every run diverges
)


def optimum(sample: SampleStudy, batch_size: int) -> float:
    return 2e-4 * sample.lr_scale * math.sqrt(batch_size / 8)


def loss_at(sample: SampleStudy, batch_size: int, lr: float, examples: int) -> float:
    distance = math.log10(lr / optimum(sample, batch_size))
    return 1.0 + 0.25 * distance**2 + 0.5 / math.sqrt(batch_size) + 20.0 / examples


def run_record(
    sample: SampleStudy, batch_size: int, lr: float, examples: int, *, pruned: bool, resumed_from: int = 0
) -> RunRecord:
    """A run of `examples`; `resumed_from` > 0: a promoted config that went on from its run paused there."""
    diverged = math.log10(lr / optimum(sample, batch_size)) > 1.0  # 10× past the optimum blows up
    steps = examples // batch_size
    evals = [
        {
            "step": s,
            "examples_seen": s * batch_size,
            "eval_loss": loss_at(sample, batch_size, lr, s * batch_size),
        }
        for s in (steps // 3, 2 * steps // 3, steps)
        if s > 0
    ]
    status = RunStatus.DIVERGED if diverged else RunStatus.PRUNED if pruned else RunStatus.SUCCESS
    return RunRecord(
        status=status,
        error="loss became non-finite at step 3" if diverged else None,
        config=RunConfig(
            method=sample.method,
            rank=sample.rank,
            alpha=float(sample.rank),
            batch_size=batch_size,
            learning_rate=lr,
            micro_batch_size=batch_size,
            accumulation_steps=1,
            planned_steps=steps,
            warmup_steps=0,
            max_seq_len=128,
            seed=0,
            device="cpu",
            precision="fp32",
        ),
        spec={},
        eval_loss=None if diverged else evals[-1]["eval_loss"],
        best_eval_loss=None if diverged else min(e["eval_loss"] for e in evals),
        steps=3 if diverged else steps,
        examples_seen=3 * batch_size if diverged else examples,
        seconds=0.1,
        metrics={"steps": [], "evals": [] if diverged else evals, "oom_events": []},
        dataset_fingerprint={"n_train": sample.examples},
        meta={"resumed_from": {"examples_seen": resumed_from}} if resumed_from else {},
    )


def successive_halving(sample: SampleStudy) -> list[RunRecord]:
    low, high = (math.log10(x) for x in sample.lr_range)
    count = sample.lr_points
    configs = [
        (b, 10 ** (low + (high - low) * i / (count - 1))) for b in sample.batch_sizes for i in range(count)
    ]
    runs: list[RunRecord] = []
    examples, paused_at = 96 * max(sample.batch_sizes) // 8, 0
    while configs:
        keep = max(len(configs) // ETA, 3) if len(configs) > 3 else 0
        ranked = sorted(configs, key=lambda c: _final_loss(sample, c, examples))
        survivors = [c for c in ranked[:keep] if math.isfinite(_final_loss(sample, c, examples))]
        runs += [
            run_record(
                sample, b, lr, examples, pruned=(b, lr) not in survivors and keep > 0, resumed_from=paused_at
            )
            for b, lr in configs
        ]
        configs, examples, paused_at = survivors, examples * ETA, examples
    return runs


def _final_loss(sample: SampleStudy, config: tuple[int, float], examples: int) -> float:
    batch, lr = config
    diverged = math.log10(lr / optimum(sample, batch)) > 1.0
    return math.inf if diverged else loss_at(sample, batch, lr, examples)


def recommendation(sample: SampleStudy, runs: list[RunRecord]) -> Recommendation | NoRecommendation:
    finished = [r for r in runs if r.status == RunStatus.SUCCESS and r.eval_loss is not None]
    if not finished:
        return NoRecommendation(
            reason=f"all {len(runs)} runs diverged: the loss became non-finite at every LR tried",
            kind="all_diverged",
            fix=f"lower lr_range (it starts at {sample.lr_range[0]:g}); try [1e-6, 1e-2]",
        )
    best = min(finished, key=lambda r: r.eval_loss or math.inf)
    batch, lr = best.config.batch_size, best.config.learning_rate
    pairs = [
        BandPair(
            batch_size=b,
            learning_rate=optimum(sample, b),
            lr_low=optimum(sample, b) / 10**0.25,
            lr_high=optimum(sample, b) * 10**0.25,
            loss=loss_at(sample, b, optimum(sample, b), best.examples_seen),
        )
        for b in sample.batch_sizes
    ]
    # The top rung is the sample's whole run, so the forecast only adds the loss's noise (1%) as an interval.
    forecast = forecast_loss(
        loss_measurement(best.examples_seen, best.eval_loss or math.nan, 0.01 * (best.eval_loss or 0.0)),
        [],
        best.examples_seen,
    )
    return Recommendation(
        batch_size=batch,
        learning_rate=lr,
        method=sample.method,
        band=Band(
            batch_sizes=list(sample.batch_sizes),
            lr_low=lr / 10**0.25,
            lr_high=lr * 10**0.25,
            epsilon=0.01,
            pairs=pairs,
        ),
        confidence=Confidence(score=0.72, label=confidence_label(0.72)),
        predicted_eval_loss=forecast.loss,
        predicted_eval_loss_interval=(forecast.low, forecast.high),
        lr_rule=LrRule(
            kappa=0.5, reference_batch=batch, reference_lr=lr, formula=f"LR(B) = {lr:.3g} × (B/{batch})^0.5"
        ),
        cost=Cost(
            proxy_seconds=sum(r.seconds for r in runs),
            examples_seen=sum(r.examples_seen for r in runs),
            runs=len(runs),
        ),
        evidence=_evidence(sample, runs),
        reasoning=[
            f"{len(runs)} proxy runs over {len(sample.batch_sizes)} batch sizes; the best third went on.",
            f"The lowest eval loss at the top rung was batch {batch} at LR {lr:.3g}.",
            "The optimal LR grew like √B across batch sizes (κ = 0.5), the square-root rule for Adam.",
        ],
    )


def _evidence(sample: SampleStudy, runs: list[RunRecord]) -> dict[str, Any]:
    evidence: dict[str, Any] = {"runs": {"runs": len(runs)}, "fits": []}
    if sample.probes:
        evidence["probes"] = {
            "proxy": {"model": f"{sample.model}-proxy", "median_lambda_max": 40.0 / sample.lr_scale},
            "target": {"model": sample.model, "median_lambda_max": 55.0 / sample.lr_scale},
        }
    return evidence


def probe_report(sample: SampleStudy) -> dict[str, Any]:
    """A ProbeReport-shaped payload: λ_max per module at initialisation."""
    modules = [
        (f"layers.{i}.self_attn.{p}", (30.0 + 10 * i + (5 if p == "v_proj" else 0)) / sample.lr_scale)
        for i in range(2)
        for p in ("q_proj", "v_proj")
    ]
    return {
        "kind": "hessian_top_eigenvalue",
        "model": sample.model,
        "method": sample.method,
        "rank": sample.rank,
        "estimator": "lanczos",
        "modules": [
            {
                "name": n,
                "n_params": 512,
                "eigenvalue": v,
                "iterations": 20,
                "residual": 1e-3,
                "converged": True,
                "seconds": 0.1,
            }
            for n, v in modules
        ],
        "median_eigenvalue": sorted(v for _, v in modules)[len(modules) // 2],
        "max_eigenvalue": max(v for _, v in modules),
    }


def spec_for(sample: SampleStudy) -> Any:
    return parse_spec(
        {
            "model": sample.model,
            "dataset": {"path": "train.jsonl", "max_examples": sample.examples},
            "method": sample.method,
            "rank": sample.rank,
            "batch_sizes": list(sample.batch_sizes),
            "lr_range": list(sample.lr_range),
            "budget": {"proxy_seconds": 60},
        }
    )


def store(db: Database, sample: SampleStudy) -> int:
    """One finished study, stored as `advisor.jobs.queue.complete` stores a worker's result."""
    runs = successive_halving(sample)
    answer = recommendation(sample, runs)
    available = isinstance(answer, Recommendation)
    with db.transaction() as session:
        study = _new_study(session, sample)
        repo.add_runs(session, study_id=study.id, attempt=1, runs=runs)
        if sample.probes:
            repo.add_probes(session, study_id=study.id, probes=[probe_report(sample)])
        repo.add_recommendation(
            session,
            study=study,
            model=sample.model,
            available=available,
            batch_size=answer.batch_size if isinstance(answer, Recommendation) else None,
            learning_rate=answer.learning_rate if isinstance(answer, Recommendation) else None,
            dataset_examples=sample.examples,
            payload=answer.model_dump(mode="json"),
        )
        study.state, study.progress, study.finished_at = StudyState.SUCCEEDED, 1.0, utcnow()
        study.message = f"{len(runs)} proxy runs on attempt 1"
        return study.id


def store_running(db: Database, sample: SampleStudy, *, progress: float) -> int:
    with db.transaction() as session:
        study = _new_study(session, sample)
        study.state, study.progress, study.message = (
            StudyState.RUNNING,
            progress,
            "run 5/12: batch 16, lr 1e-4",
        )
        return study.id


def _new_study(session: Any, sample: SampleStudy) -> Study:
    return repo.create_study(
        session,
        spec=spec_for(sample),
        function="synthetic",
        max_attempts=1,
        token_id=None,
        dataset_fingerprint=None,
        idempotency=None,
    )


def seed(db: Database) -> dict[str, int]:
    """Every sample study; returns their ids by role: `lora`, `dora`, ..., `diverged`, `running`."""
    ids = {
        name: store(db, sample)
        for name, sample in zip(("lora", "dora", "rank16", "qwen", "diverged"), SAMPLES, strict=True)
    }
    ids["running"] = store_running(db, SAMPLES[0], progress=0.4)
    return ids
