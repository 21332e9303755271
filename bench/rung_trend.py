"""Do the halving's own rungs tell where LR* goes past the top rung? (issue 4)

A study's top rung stops short of the real run, so LR* read there moves to the real run's length along
LR* ∝ N^γ, with arXiv 2602.04998's prior γ = −0.25 ± 0.3 unless horizon runs (or a trend study) measured it.
The successive-halving ladder already reads LR* at B* on every rung (32, 96, 288 examples on most quality
tasks, prefixes of the top rung's schedule): a line through those readings would measure γ for free. This asks
whether it should.

For each task of `bench/quality.py` (same base model, data, budget and run cache) and each choice seed, it
runs the advisor's study, takes LR*(B*) per rung from its evidence, and the real run's LR*(B*) from the dense
grid (the study's own fit, `fit_surface`, over the grid's 3 truth seeds). It then moves the top rung's LR* to
the real run's length two ways and reports the error in decades:

- prior: along the prior γ alone (what a study without horizon runs does);
- rungs: a Bayesian line (`fits.loglog_line`) through the top rung's LR* and the lower rungs' readings,
  each given `--rung-sd` decades of noise (the top rung keeps `--anchor-sd`), and the prior.

Both move from the same top-rung reading, so the difference is what the rungs add. The errors ignore the
study's later steps (the caution offset, horizon runs on `repeat`): they compare the two moves, not picks.

    python -m bench.rung_trend [--choice-seed 0 3 6 7] [--tasks reverse ...] [--cache FOLDER]
        [--rung-sd 0.15 0.3] [--json FILE] [--reprint JSON]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from advisor.science.fits import Observation, SurfaceFit, fit_surface
from advisor.science.knowledge import ExponentPrior
from advisor.science.length_scaling import LogMeasurement, loglog_line
from bench import common  # the quality benchmark's base model, tasks, budget and run cache

ANCHOR_SD = 0.15  # decades: a top rung's single-seed LR* (its bootstrap spread is 0.1–0.3 on these tasks)


def real_run_lr_star(truth: common.Truth, batch: int) -> float | None:
    """LR*(batch) of the real run: the study's fit over the dense grid's row at `batch`, truth seeds only."""
    full = truth.trainer.full_examples()
    observations = [
        Observation(batch, lr, truth.trainer.loss(batch, lr, seed), seed, full, full)
        for lr in truth.lrs
        for seed in common.TRUTH_SEEDS
    ]
    fit = fit_surface(observations, batch_candidates=[batch])
    return fit.curves[batch].lr_star if isinstance(fit, SurfaceFit) and batch in fit.curves else None


def rung_readings(evidence: dict[str, Any], batch: int) -> list[tuple[int, float]]:
    """(examples, LR*(batch)) on each rung of the study's halving, shortest first."""
    by_rung = evidence["fits"][max(evidence["fits"], key=int)]
    return [
        (int(examples), fit["lr_star_by_batch"][str(batch)])
        for examples, fit in sorted(by_rung.items(), key=lambda item: int(item[0]))
        if str(batch) in fit["lr_star_by_batch"]
    ]


def moved_errors(
    readings: list[tuple[int, float]], full: int, real: float, rung_sds: list[float]
) -> dict[str, float]:
    """Error in decades (moved − real) of the top rung's LR* moved to `full` examples: along the prior alone,
    and along a line through every rung for each rung noise in `rung_sds`."""
    prior = ExponentPrior()
    top_examples, top_lr = readings[-1]
    anchor = LogMeasurement(top_examples, math.log10(top_lr), ANCHOR_SD)
    errors = {"prior": loglog_line(anchor, [], prior.mean, prior.sd).at(full)[0] - math.log10(real)}
    for sd in rung_sds:
        lower = [LogMeasurement(n, math.log10(lr), sd) for n, lr in readings[:-1]]
        moved = loglog_line(anchor, lower, prior.mean, prior.sd).at(full)[0]
        errors[f"rungs_sd_{sd:g}"] = moved - math.log10(real)
    return errors


def measure_task(
    base: Path, folder: Path, task: common.Task, seeds: list[int], cache: Path | None, rung_sds: list[float]
) -> dict[str, Any]:
    truth = common.ground_truth(base, folder, task, common.FULL, cache)
    full = truth.trainer.full_examples()
    studies = []
    for seed in seeds:
        (batch, _), _, rec = common.advisor(truth.trainer, truth.grid_examples, seed)
        readings = rung_readings(rec.evidence, batch)
        real = real_run_lr_star(truth, batch)
        if real is None or not readings:
            studies.append({"choice_seed": seed, "batch_size": batch, "skipped": "no LR* to compare"})
            continue
        studies.append(
            {
                "choice_seed": seed,
                "batch_size": batch,
                "readings": readings,
                "real_lr_star": real,
                "errors_decades": moved_errors(readings, full, real, rung_sds),
            }
        )
    return {"task": task.name, "method": task.method, "full_examples": full, "studies": studies}


def summary(tasks: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per way of moving: mean and median |error| over every study, and per task the mean |error|."""
    done = [s for t in tasks for s in t["studies"] if "errors_decades" in s]
    ways = list(done[0]["errors_decades"]) if done else []
    out: dict[str, dict[str, float]] = {}
    for way in ways:
        errors = [abs(s["errors_decades"][way]) for s in done]
        out[way] = {"mean_abs": statistics.fmean(errors), "median_abs": statistics.median(errors)}
        for t in tasks:
            mine = [abs(s["errors_decades"][way]) for s in t["studies"] if "errors_decades" in s]
            if mine:
                out[way][t["task"]] = statistics.fmean(mine)
    return out


def print_table(tasks: list[dict[str, Any]], totals: dict[str, dict[str, float]]) -> None:
    head = "| task (real run) | choice seed | LR*(B*) per rung | real run's LR* | "
    print(head + " | ".join(totals) + " |")
    print("|---|---|---|---|" + "---|" * len(totals))
    for t in tasks:
        for s in t["studies"]:
            if "errors_decades" not in s:
                print(f"| {t['task']} | {s['choice_seed']} | {s['skipped']} |")
                continue
            rungs = ", ".join(f"{n}: {lr:.3g}" for n, lr in s["readings"])
            errors = " | ".join(f"{s['errors_decades'][way]:+.2f}" for way in totals)
            print(
                f"| {t['task']} ({t['full_examples']}) | {s['choice_seed']} | {rungs} | "
                f"{s['real_lr_star']:.3g} | {errors} |"
            )
    print()
    names = [t["task"] for t in tasks]
    print("| moved along | mean \\|error\\| | median \\|error\\| | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for way, s in totals.items():
        per_task = " | ".join(f"{s[name]:.2f}" if name in s else "—" for name in names)
        print(f"| {way} | {s['mean_abs']:.3f} | {s['median_abs']:.3f} | {per_task} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--choice-seed", type=int, nargs="+", default=[0, 3, 6, 7])
    parser.add_argument("--tasks", nargs="+", metavar="NAME", help="only these tasks (default: all)")
    parser.add_argument("--cache", metavar="FOLDER", help="the quality benchmark's run cache (ground truth)")
    parser.add_argument(
        "--rung-sd",
        type=float,
        nargs="+",
        default=[0.15, 0.3],
        help="decades of noise given to each lower rung's LR* in the line through the rungs",
    )
    parser.add_argument("--json", default="bench/out/rung_trend.json")
    parser.add_argument("--reprint", metavar="JSON", help="print an earlier run's tables again")
    args = parser.parse_args()
    if args.reprint:
        earlier = json.loads(Path(args.reprint).read_text())
        print_table(earlier["tasks"], summary(earlier["tasks"]))
        return
    if bad := [sd for sd in args.rung_sd if sd <= 0]:
        parser.error(f"--rung-sd: must be positive, got {bad}")
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and the machine is shared
    cfg = common.only_tasks(common.FULL, args.tasks, parser)
    cache = Path(args.cache) if args.cache else None
    started = time.perf_counter()
    tasks = common.run_suite(
        cfg,
        lambda base, folder, task: measure_task(base, folder, task, args.choice_seed, cache, args.rung_sd),
    )
    totals = summary(tasks)
    common.write_results(
        args.json, started, common.FULL, tasks, totals, choice_seeds=args.choice_seed, rung_sd=args.rung_sd
    )
    print_table(tasks, totals)


if __name__ == "__main__":
    main()
