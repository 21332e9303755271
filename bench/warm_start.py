"""Warm-start benchmark (issue 4): how good is the answer the database gives for the next similar question,
at once and after a study that starts from it, and what does a reported full-run outcome add?

Every study here goes the way `advisor recommend` goes: stored in a real SQLite database (migrated by the
project's own code), run under a lease, its recommendation written by the queue; the next question reads
the store through `DatabaseKnowledgeStore`, exactly as the service and the CLI do.

Per task of `bench/quality.py` (same pretrained base, same tasks, same dense-grid ground truth, same regret:
a config's mean loss over 8 fresh seeds against the grid best's over 16):

1. first study: the advisor on choice seed 0, stored (what `quality.py` measures, here for reference);
2. the same question asked again on choice seed 3:
   - instant: the provisional answer from the store, before any compute;
   - warm study: a whole study that starts from the store (its LR grid centred on the instant answer, its
     run-length prior γ sharpened by the first study's measurement), against
   - cold study: the same study on seed 3 with no store;
3. outcome: the user trains the first study's answer and half a decade either side in full and reports the
   three runs (POST /v1/outcomes; here through the repository function that endpoint calls); the instant
   answer to the next question, and a warm study on seed 3 after it, then carry the reported correction
   (the store now also holds the warm study of step 2);
4. a nearby context: a store holding only a study of the task on half its records (another dataset
   fingerprint, maybe another size bucket) answers the full-size question instantly, and a warm study on
   seed 3 starts from it;
5. another rank: a store holding only a study of the task at 4× (or ¼ of) its rank, two rank buckets away,
   answers instantly, its LR moved along arXiv 2602.04998's rank trend (LR* ∝ r^−0.41 at α = r);
6. the CI hook: `advisor check`'s verdict (the lookup and `decide` it runs) on every grid config against
   the stored 1st study, next to that config's regret on the grid's seeds (its mean over 3).

Compute is counted as in `quality.py` (examples seen, a share of the dense grid); instant answers cost none.

    python -m bench.warm_start [--quick] [--json bench/out/warm_start.json] [--cache FOLDER]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from advisor.check import decide
from advisor.cli.recommend import open_database
from advisor.method_catalog import METHODS
from advisor.science.recommendation import Recommendation
from advisor.specs import StudySpec
from advisor.storage import repository as repo
from advisor.storage.db import Database
from bench.common import (  # the quality benchmark's base, tasks, ground truth and regret
    BAD_REGRET,
    FULL,
    GOOD_REGRET,
    QUICK,
    BenchConfig,
    Config,
    Task,
    Truth,
    advisor_spec,
    ground_truth,
    instant_answer,
    loss_forecast_check,
    method_label,
    regret,
    run_suite,
    stored_answer,
    stored_study,
    task_spec,
    truth_loss,
    write_results,
)
from proxy_runs.data import PreparedData
from proxy_runs.runner import run_study

FIRST_SEED, NEXT_SEED = 0, 3  # the stored study's choice seed; the next question's (neither scores)
OUTCOME_SPREAD = 10**0.5  # the user's full runs: the answer's LR and half a decade either side


def report_outcome(
    db: Database, study_id: int, spec: StudySpec, answer: Config, truth: Truth
) -> list[dict[str, Any]]:
    """The user's full runs around the study's answer, reported back as POST /v1/outcomes stores them."""
    batch, lr = answer
    runs = []
    for factor in (1 / OUTCOME_SPREAD, 1.0, OUTCOME_SPREAD):
        loss = truth.trainer.loss(batch, lr * factor, seed=FIRST_SEED)
        runs.append({"batch_size": batch, "learning_rate": lr * factor, "final_eval_loss": loss})
    with db.transaction() as session:
        for run in runs:
            values = {
                "study_id": study_id,
                "model": spec.model,
                "method": spec.method,
                "rank": spec.rank,
                "alpha": spec.alpha,
                "diverged": run["final_eval_loss"] is None,
                **run,
            }
            repo.add_outcome(session, values=values, token_id=None)
    return runs


def check_verdicts(db: Database, spec: StudySpec, truth: Truth) -> dict[str, Any]:
    """`advisor check` on every grid config, against what the store answers for the task's context (the
    lookup and `decide` that POST /v1/check and `advisor check --offline` run), next to each config's
    regret on the grid's own seeds (the mean over common.TRUTH_SEEDS): a CI hook should pass the good configs
    and fail the bad ones."""
    answer = stored_answer(db, spec, len(truth.trainer.data.train))
    verdicts: list[dict[str, Any]] = [
        {
            "batch_size": batch,
            "learning_rate": lr,
            "regret": (truth_loss(truth.trainer, (batch, lr)) - truth.best_loss) / truth.best_loss,
            "outcome": decide(answer, batch_size=batch, learning_rate=lr).outcome,
        }
        for batch, lr in truth.grid
    ]
    good = [v for v in verdicts if v["regret"] <= GOOD_REGRET]
    bad = [v for v in verdicts if v["regret"] > BAD_REGRET]
    passed = [v for v in verdicts if v["outcome"] == "pass"]
    return {
        "good": len(good),
        "good_passed": sum(v["outcome"] == "pass" for v in good),
        "bad": len(bad),
        "bad_failed": sum(v["outcome"] == "fail" for v in bad),
        "passed": len(passed),
        "worst_passed_regret": max((v["regret"] for v in passed), default=None),
        "verdicts": verdicts,
    }


def scored(truth: Truth, rec: Recommendation, examples: int | None = None) -> dict[str, Any]:
    config = (rec.batch_size, rec.learning_rate)
    mean, se = regret(truth.trainer, config, truth.best)
    spent = rec.cost.examples_seen if examples is None else examples
    return {
        "batch_size": rec.batch_size,
        "learning_rate": rec.learning_rate,
        "regret": mean,
        "regret_se": se,
        "confidence": rec.confidence.label,
        "provisional": rec.provisional,
        "examples": spent,
        "compute_share": spent / truth.grid_examples,
        "loss_forecast": loss_forecast_check(truth.trainer, config, rec),
    }


def run_task(
    base: Path, folder: Path, task: Task, cfg: BenchConfig, cache: Path | None = None
) -> dict[str, Any]:
    truth = ground_truth(base, folder, task, cfg, cache)
    spec_on = {
        seed: advisor_spec(truth.trainer, truth.grid_examples, seed) for seed in (FIRST_SEED, NEXT_SEED)
    }
    data = truth.trainer.data  # the task's prepared data: the context every question is asked in
    rows: dict[str, dict[str, Any]] = {}
    # 1–3: one store, filled as a user's database would be
    db = open_database(folder / task.name / "store")
    try:
        first_id, first = stored_study(db, spec_on[FIRST_SEED])
        rows["first_study"] = scored(truth, first)
        check = check_verdicts(db, spec_on[FIRST_SEED], truth)
        rows["instant"] = scored(truth, instant_answer(db, spec_on[NEXT_SEED], data))
        rows["warm_study"] = scored(truth, stored_study(db, spec_on[NEXT_SEED])[1])
        rows["cold_study"] = scored(truth, require(run_study(spec_on[NEXT_SEED]).recommendation))
        outcome = report_outcome(
            db, first_id, spec_on[FIRST_SEED], (first.batch_size, first.learning_rate), truth
        )
        rows["instant_after_outcome"] = scored(truth, instant_answer(db, spec_on[NEXT_SEED], data))
        rows["warm_after_outcome"] = scored(truth, stored_study(db, spec_on[NEXT_SEED])[1])
    finally:
        db.dispose()
    # 4: a store that knows only the task on half its records
    half = replace(task, records=task.records // 2)
    half_spec = task_spec(base, folder / "half", half, cfg).model_copy(
        update={"budget": spec_on[FIRST_SEED].budget}
    )
    db = open_database(folder / task.name / "store_half")
    try:
        stored_study(db, half_spec.with_seed(FIRST_SEED))
        rows["instant_from_half"] = scored(truth, instant_answer(db, spec_on[NEXT_SEED], data))
        rows["warm_from_half"] = scored(truth, stored_study(db, spec_on[NEXT_SEED])[1])
    finally:
        db.dispose()
    # 5: a store that knows only the task at another rank (two rank buckets away, the same data); a
    # method without a rank (full fine-tuning) has no such neighbour
    other_rank = None
    if METHODS[task.method].uses_rank:
        other_rank = task.rank * 4 if task.rank <= 8 else task.rank // 4
        rows["instant_from_rank"] = instant_from_rank(
            base, folder, task, cfg, other_rank, spec_on, data, truth
        )
    return {
        "task": task.name,
        "neighbour_rank": other_rank,
        "method": task.method,
        "rank": task.rank,
        "train_examples": truth.trainer.full_examples(),
        "grid_best": {
            "batch_size": truth.best[0],
            "learning_rate": truth.best[1],
            "eval_loss": truth.best_loss,
        },
        "grid_examples": truth.grid_examples,
        "reported_outcome": outcome,
        "check": check,
        "contenders": rows,
    }


def instant_from_rank(
    base: Path,
    folder: Path,
    task: Task,
    cfg: BenchConfig,
    other_rank: int,
    spec_on: dict[int, StudySpec],
    data: PreparedData,
    truth: Truth,
) -> dict[str, Any]:
    """The instant answer to the task's question from a store that holds only a study at `other_rank`."""
    rank_spec = task_spec(base, folder / "rank", replace(task, rank=other_rank), cfg).model_copy(
        update={"budget": spec_on[FIRST_SEED].budget}
    )
    db = open_database(folder / task.name / "store_rank")
    try:
        stored_study(db, rank_spec.with_seed(FIRST_SEED))
        return scored(truth, instant_answer(db, spec_on[NEXT_SEED], data))
    finally:
        db.dispose()


def require(rec: object) -> Recommendation:
    assert isinstance(rec, Recommendation), rec
    return rec


COLUMNS = {
    "first_study": "1st study",
    "cold_study": "cold",
    "instant": "instant",
    "warm_study": "warm",
    "instant_after_outcome": "inst+outc",
    "warm_after_outcome": "warm+outc",
    "instant_from_half": "inst(N/2)",
    "warm_from_half": "warm(N/2)",
    "instant_from_rank": "inst(rank)",
}


def summarise(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """Per contender, over the tasks that have it (a method without a rank has no `instant_from_rank`)."""
    summary = {}
    for name in COLUMNS:
        rows = [t["contenders"][name] for t in tasks if name in t["contenders"]]
        summary[name] = {
            "median_regret": statistics.median(r["regret"] for r in rows),
            "mean_regret": statistics.fmean(r["regret"] for r in rows),
            "median_compute_share": statistics.median(r["compute_share"] for r in rows),
            "median_abs_loss_error": median_abs_loss_error(rows),
            "tasks": len(rows),
        }
    return summary


def median_abs_loss_error(rows: list[dict[str, Any]]) -> float | None:
    """How far the predicted eval loss was from the pick's full runs; None where nothing was predicted
    (instant answers predict no loss)."""
    errors = [abs(r["loss_forecast"]["error"]) for r in rows if r["loss_forecast"]["error"] is not None]
    return statistics.median(errors) if errors else None


def print_table(tasks: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print(f"{'task':<36}" + "".join(f"{label:>12}" for label in COLUMNS.values()))
    for t in tasks:
        label = f"{t['task']} ({method_label(t)}, N={t['train_examples']})"
        regrets = [t["contenders"][n]["regret"] if n in t["contenders"] else None for n in COLUMNS]
        print(f"{label:<36}" + "".join(f"{_pct(r):>11} " for r in regrets))
    for stat in ("median_regret", "mean_regret"):
        print(f"{stat.replace('_', ' '):<36}" + "".join(f"{summary[n][stat]:>11.2%} " for n in COLUMNS))
    print(
        f"{'compute (median)':<36}"
        + "".join(f"{summary[n]['median_compute_share']:>11.1%} " for n in COLUMNS)
    )
    errors = [summary[n]["median_abs_loss_error"] for n in COLUMNS]
    print(f"{'loss forecast |error| (median)':<36}" + "".join(f"{_pct(e):>11} " for e in errors))


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def print_check_table(tasks: list[dict[str, Any]]) -> None:
    print(
        f"\n`advisor check` on the grid, against the 1st study: good = within {GOOD_REGRET:.0%} of the best, "
        f"bad = over {BAD_REGRET:.0%} worse (mean losses over the grid's 3 seeds)"
    )
    print(f"{'task':<36}{'good passed':>14}{'bad failed':>14}{'passed':>10}{'worst passed':>15}")
    for t in tasks:
        c = t["check"]
        worst = "—" if c["worst_passed_regret"] is None else f"{c['worst_passed_regret']:.2%}"
        label = f"{t['task']} ({method_label(t)}, N={t['train_examples']})"
        print(
            f"{label:<36}{c['good_passed']:>7} of {c['good']:<4}{c['bad_failed']:>7} of {c['bad']:<4}"
            f"{c['passed']:>10}{worst:>15}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 tasks, 3 batch sizes, a shorter base model")
    parser.add_argument("--json", default="bench/out/warm_start.json")
    parser.add_argument("--cache", metavar="FOLDER", help="where full-run losses are kept (as in quality.py)")
    args = parser.parse_args()
    cache = Path(args.cache) if args.cache else None
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and the machine is shared
    cfg = QUICK if args.quick else FULL
    started = time.perf_counter()
    tasks = run_suite(cfg, lambda base, folder, task: run_task(base, folder, task, cfg, cache))
    summary = summarise(tasks)
    seeds = {"first": FIRST_SEED, "next": NEXT_SEED}
    write_results(args.json, started, cfg, tasks, summary, quick=args.quick, seeds=seeds)
    print_table(tasks, summary)
    print_check_table(tasks)


if __name__ == "__main__":
    main()
