"""Choosing the batch size when the best one is not the smallest candidate (issue 4).

The quality benchmark's candidates are 4, 8, 16 and 32, and B = 4, the smallest, is its grid's best on every
task, so "take the smallest batch" does as well as the advisor there. `bench/batch_rule.py` found B = 2
better still on most tasks. Here the candidates are 2, 4, 8 and 16, so that the best batch is the smallest
on some tasks and inside the candidates on others. Per quality task (same pretrained base, data, LR range
and run cache) and choice seed:

1. ground truth: the task's 8 grid LRs in full at B = 2, 3, 4, 6, 8 and 16 on the 3 truth seeds; the best
   (B, LR) among the candidates' 32 configs, and the best LR at each batch;
2. the advisor's study with candidates [2, 4, 8, 16] (the quality benchmark's budget: 10% of its grid's
   examples), stored in SQLite and looked up the way `advisor check` looks it up; its pick's regret (8 fresh
   seeds against 16 of the best config, `common.regret`), beside the regret of the same study with the
   quality benchmark's candidates [4, 8, 16, 32], which cannot choose B = 2;
3. `advisor check` on every (B, grid LR) at B = 2, 3, 4, 6 and 8 (3 and 6 are none of the candidates),
   against the best LR at the same batch and the best config anywhere: good ≤ 2%, bad > 5%.

    python -m bench.batch_choice [--tasks NAME ...] [--choice-seed 0 3] [--cache FOLDER] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from advisor.cli.recommend import open_database
from bench.batch_rule import check_verdicts, retuned_lr
from bench.common import (
    FULL,
    BenchConfig,
    Config,
    Task,
    Truth,
    advisor_spec,
    answer_summary,
    ground_truth,
    method_label,
    only_tasks,
    regret,
    run_suite,
    stored_answer,
    stored_study,
    verdict_counts,
    write_results,
)

CANDIDATES = [2, 4, 8, 16]  # the quality benchmark's, shifted down one doubling
CHECKED_BATCHES = (2, 3, 4, 6, 8)  # 3 and 6 are none of the candidates


def study_pick(truth: Truth, seed: int, candidates: list[int], store: Path) -> tuple[Config, dict[str, Any]]:
    """The study with these candidates (the quality benchmark's budget), stored in SQLite; its pick and
    the answer `advisor check` reads back."""
    spec = advisor_spec(truth.trainer, truth.grid_examples, seed).model_copy(
        update={"batch_sizes": candidates}
    )
    db = open_database(store)
    _, rec = stored_study(db, spec)
    return (rec.batch_size, rec.learning_rate), stored_answer(db, spec, len(truth.trainer.data.train))


def run_task(
    base: Path, folder: Path, task: Task, cfg: BenchConfig, choice_seeds: list[int], cache: Path | None
) -> dict[str, Any]:
    truth = ground_truth(base, folder, task, cfg, cache)
    retuned = {batch: retuned_lr(truth, batch) for batch in sorted({*CHECKED_BATCHES, *CANDIDATES})}
    best_batch = min(CANDIDATES, key=lambda b: retuned[b][1])
    best: Config = (best_batch, retuned[best_batch][0])
    best_loss = retuned[best_batch][1]
    checked = {batch: retuned[batch] for batch in CHECKED_BATCHES}
    choices = []
    for seed in choice_seeds:
        pick, answer = study_pick(truth, seed, CANDIDATES, folder / task.name / f"store_{seed}")
        quality_pick, _ = study_pick(truth, seed, cfg.batch_sizes, folder / task.name / f"quality_{seed}")
        verdicts = check_verdicts(truth, answer, best_loss, checked)
        off = [v for v in verdicts if v["batch_size"] not in CANDIDATES]
        on = [v for v in verdicts if v["batch_size"] in CANDIDATES]
        choices.append(
            {
                "choice_seed": seed,
                "answer": answer_summary(answer),
                "regret": regret(truth.trainer, pick, best),
                "quality_pick": quality_pick,
                "quality_pick_regret": regret(truth.trainer, quality_pick, best),
                "check": {
                    "candidates_lr": verdict_counts(on, "lr_regret"),
                    "off_candidate_lr": verdict_counts(off, "lr_regret"),
                    "all": verdict_counts(verdicts),
                    "verdicts": verdicts,
                },
            }
        )
        print(f"{task.name} seed {seed}: {pick} (quality's candidates: {quality_pick})", file=sys.stderr)
    return {
        "task": task.name,
        "method": task.method,
        "rank": task.rank,
        "best": {"batch_size": best[0], "learning_rate": best[1], "eval_loss": best_loss},
        "best_per_batch": {
            str(b): {"learning_rate": lr, "loss_vs_best": loss / best_loss - 1}
            for b, (lr, loss) in retuned.items()
        },
        "choices": choices,
    }


def summarise(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    choices = [c for t in tasks for c in t["choices"]]
    counted = ("good", "good_passed", "bad", "bad_failed", "passed")
    return {
        "median_regret": statistics.median(c["regret"][0] for c in choices),
        "mean_regret": statistics.fmean(c["regret"][0] for c in choices),
        "worst_regret": max(c["regret"][0] for c in choices),
        "quality_pick_median_regret": statistics.median(c["quality_pick_regret"][0] for c in choices),
        "quality_pick_mean_regret": statistics.fmean(c["quality_pick_regret"][0] for c in choices),
        "picked_best_batch": sum(
            c["answer"]["batch_size"] == t["best"]["batch_size"] for t in tasks for c in t["choices"]
        ),
        "check": {
            view: {key: sum(c["check"][view][key] for c in choices) for key in counted}
            for view in ("candidates_lr", "off_candidate_lr", "all")
        },
    }


def print_tables(tasks: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print(
        "| task | best (B, LR); B = 2, 4, 8 behind it | choice seed | pick → regret "
        "| candidates 4–32 → regret |"
    )
    for task in tasks:
        best, per_batch = task["best"], task["best_per_batch"]
        behind = ", ".join(f"{per_batch[str(b)]['loss_vs_best']:+.1%}" for b in (2, 4, 8))
        for c in task["choices"]:
            (value, se), (q_value, q_se) = c["regret"], c["quality_pick_regret"]
            answer, q = c["answer"], c["quality_pick"]
            print(
                f"| {method_label(task)} | ({best['batch_size']}, {best['learning_rate']:.3g}); {behind} "
                f"| {c['choice_seed']} | ({answer['batch_size']}, {answer['learning_rate']:.3g}) → "
                f"{value:+.2%} ± {se:.2%} | ({q[0]}, {q[1]:.3g}) → {q_value:+.2%} ± {q_se:.2%} |"
            )
    print(
        f"\nmedian regret {summary['median_regret']:+.2%} (mean {summary['mean_regret']:+.2%}, worst "
        f"{summary['worst_regret']:+.2%}); with candidates 4–32 {summary['quality_pick_median_regret']:+.2%} "
        f"(mean {summary['quality_pick_mean_regret']:+.2%}); picked the best batch in "
        f"{summary['picked_best_batch']} of {sum(len(t['choices']) for t in tasks)}"
    )
    views = {
        "candidate batches (2, 4, 8), against the best LR at that batch": "candidates_lr",
        "off-candidate batches (3, 6), against the best LR at that batch": "off_candidate_lr",
        "all checked batches, against the best config anywhere": "all",
    }
    print("\n| configs | good passed | bad failed | passed |")
    for name, key in views.items():
        c = summary["check"][key]
        print(
            f"| {name} | {c['good_passed']} of {c['good']} | {c['bad_failed']} of {c['bad']} "
            f"| {c['passed']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="bench/out/batch_choice.json")
    parser.add_argument("--choice-seed", type=int, nargs="+", default=[0, 3])
    parser.add_argument("--tasks", nargs="+", metavar="NAME", help="only these tasks (default: all)")
    parser.add_argument(
        "--cache", metavar="FOLDER", help="the quality benchmark's run cache (see quality.py)"
    )
    parser.add_argument("--reprint", metavar="JSON", nargs="+", help="print earlier runs' tables again")
    args = parser.parse_args()
    if args.reprint:
        tasks = [task for path in args.reprint for task in json.loads(Path(path).read_text())["tasks"]]
        print_tables(tasks, summarise(tasks))
        return
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and the machine is shared
    cfg = only_tasks(FULL, args.tasks, parser)
    started = time.perf_counter()
    cache = Path(args.cache) if args.cache else None
    tasks = run_suite(
        cfg, lambda base, folder, task: run_task(base, folder, task, cfg, args.choice_seed, cache)
    )
    summary = summarise(tasks)
    write_results(args.json, started, cfg, tasks, summary, choice_seeds=args.choice_seed)
    print_tables(tasks, summary)


if __name__ == "__main__":
    main()
