"""Where should a study read LR*? The first part of the real run, or a complete short run (issue 4).

A study cannot afford the real run's length for every config, so its top rung stops after a third of the
real run's examples or less, and LR* read there has to be moved to the real run's end. How far it has to
move depends on which short run is read:

- complete: a run whose own LR schedule (warm-up, cosine decay) ends at the top rung (what a study runs);
- prefix: the real run's schedule, stopped at the top rung (tried on 2026-12-02 and not kept: in
  `bench/quality.py` such readings mis-ranked batch sizes when the top rung was a sixth of the real run;
  bench/RESULTS.md has the figures).

For each task of `bench/quality.py` (same base model, data and LR grid) this trains, at B = 4 (every task's
grid best) and every grid LR on several seeds: the real run once, read at the top rung the advisor's plan
reaches on the quality benchmark's budget and at its end, and the complete short run. LR* of each reading is
the study's own fit (`fit_surface`) over all seeds; the drift is log10(LR* at the end / LR* of the reading),
what the study has to move by. A drift near 0 on every task is what makes the reading a good proxy.

    python -m bench.prefix_reading [--seeds 0 3 6 7] [--tasks reverse ...] [--json FILE] [--reprint JSON]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from advisor.science.fits import Observation, SurfaceFit, fit_surface
from advisor.science.planner import plan_study
from advisor.specs import StudySpec
from advisor.study.halving import loss_at, run_to_rung
from bench import common  # the quality benchmark's base model, tasks and LR grid
from proxy_runs.runner import TorchRunner

BATCH = 4  # the grid's best batch size on every quality task
READINGS = ("end", "prefix", "complete")


def reading_point(spec: StudySpec, n_train: int, grid_size: int) -> int:
    """The top rung the advisor's plan reaches on the quality benchmark's budget for this task."""
    planned = common.with_advisor_budget(spec, grid_size * n_train)
    return plan_study(planned, n_train=n_train).top_examples


def lr_star(observations: list[Observation]) -> float | None:
    fit = fit_surface(observations, batch_candidates=[BATCH])
    return fit.curves[BATCH].lr_star if isinstance(fit, SurfaceFit) and BATCH in fit.curves else None


def measure_task(base: Path, folder: Path, task: common.Task, seeds: list[int]) -> dict[str, Any]:
    cfg = common.FULL
    spec = common.task_spec(base, folder, task, cfg)
    runner = TorchRunner()
    full = runner.prepare(spec).train_examples
    lrs = common.task_lrs(task)
    top = reading_point(spec, full, len(lrs) * len(cfg.batch_sizes))
    observed: dict[str, list[Observation]] = {reading: [] for reading in READINGS}
    started = time.perf_counter()
    for lr in lrs:
        for seed in seeds:
            seeded = spec.with_seed(seed)
            real = run_to_rung(
                runner, seeded, (BATCH, lr), top_examples=full, stop_at=full, eval_examples=top
            )
            short = run_to_rung(runner, seeded, (BATCH, lr), top_examples=top, stop_at=top, eval_examples=top)
            losses = {
                "end": loss_at(real, full),
                "prefix": loss_at(real, top),
                "complete": loss_at(short, top),
            }
            for reading, loss in losses.items():
                observed[reading].append(Observation(BATCH, lr, loss, seed, top, full))
    stars = {reading: lr_star(obs) for reading, obs in observed.items()}
    end = stars["end"]
    drift = {
        reading: math.log10(end / star) if end and star else None
        for reading, star in stars.items()
        if reading != "end"
    }
    return {
        "task": task.name,
        "method": task.method,
        "full_examples": full,
        "read_at": top,
        "seeds": seeds,
        "lr_star": stars,
        "drift_decades": drift,
        "runs": {r: [[o.learning_rate, o.seed, o.loss] for o in obs] for r, obs in observed.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }


def exponents(task: dict[str, Any]) -> dict[str, float | None]:
    """γ of each reading: its drift per decade of run length, from the reading point to the real run's end."""
    span = math.log10(task["full_examples"] / task["read_at"])
    return {r: (d / span if d is not None else None) for r, d in task["drift_decades"].items()}


def summary(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for reading in READINGS[1:]:
        drifts = [t["drift_decades"][reading] for t in tasks if t["drift_decades"][reading] is not None]
        gammas = [g for t in tasks if (g := exponents(t)[reading]) is not None]
        if drifts:
            out[reading] = {
                "mean": statistics.fmean(drifts),
                "mean_abs": statistics.fmean(abs(d) for d in drifts),
                "range": [min(drifts), max(drifts)],
                "exponent_median": statistics.median(gammas),
                "exponent_mean": statistics.fmean(gammas),
                "exponent_range": [min(gammas), max(gammas)],
            }
    return out


def print_table(tasks: list[dict[str, Any]], totals: dict[str, Any]) -> None:
    columns = ["task", "read at / real run", "LR* at the end"]
    columns += [f"{reading}: LR* (drift, γ)" for reading in READINGS[1:]]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|")
    for t in tasks:
        cells = []
        for reading in READINGS[1:]:
            star, drift, gamma = t["lr_star"][reading], t["drift_decades"][reading], exponents(t)[reading]
            ok = star and drift is not None and gamma is not None
            cells.append(f"{star:.3g} ({drift:+.2f}, {gamma:+.2f})" if ok else "no fit")
        end = t["lr_star"]["end"]
        end_text = f"{end:.3g}" if end else "no fit"
        print(
            f"| {t['task']} ({t['method']}) | {t['read_at']} / {t['full_examples']} | {end_text} | "
            + " | ".join(cells)
            + " |"
        )
    for reading, s in totals.items():
        low, high = s["range"]
        g_low, g_high = s["exponent_range"]
        print(
            f"{reading}: drift mean {s['mean']:+.2f}, mean |drift| {s['mean_abs']:.2f}, "
            f"range {low:+.2f} … {high:+.2f} decades; γ median {s['exponent_median']:+.2f}, "
            f"mean {s['exponent_mean']:+.2f}, range {g_low:+.2f} … {g_high:+.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 3, 6, 7])
    parser.add_argument("--tasks", nargs="+", default=[t.name for t in common.FULL.tasks])
    parser.add_argument("--json", default="bench/out/prefix_reading.json")
    parser.add_argument("--reprint", metavar="JSON", help="print an earlier run's table again")
    args = parser.parse_args()
    if args.reprint:
        earlier = json.loads(Path(args.reprint).read_text())
        print_table(earlier["tasks"], summary(earlier["tasks"]))
        return
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and the machine is shared
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = common.build_base(folder, common.FULL)
        tasks = []
        for task in common.FULL.tasks:
            if task.name in args.tasks:
                tasks.append(measure_task(base, folder, task, args.seeds))
                print(f"{task.name}: {tasks[-1]['lr_star']} ({tasks[-1]['seconds']:.0f} s)", file=sys.stderr)
    totals = summary(tasks)
    common.write_results(args.json, started, common.FULL, tasks, totals, seeds=args.seeds, batch_size=BATCH)
    print_table(tasks, totals)


if __name__ == "__main__":
    main()
