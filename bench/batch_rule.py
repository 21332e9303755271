"""The LR rule at an effective batch the study never ran (issue 4): is LR(B) = LR* × (B / B*)^κ the LR to
use there, and does `advisor check` pass the good configs and fail the bad ones at such a batch?

A study compares its candidate batch sizes (4, 8, 16, 32 here) and answers with B*, LR* and the rule's κ.
A user's effective batch is often none of them: micro-batch × accumulation × devices. `advisor check`
moves the band by the rule to that batch; the quality benchmark's grid has no such batch, so the rule is
measured nowhere else. Per task of `bench/quality.py` (same pretrained base, tasks and dense grid):

1. the advisor's study on each choice seed, stored in a real SQLite database and looked up the way
   `advisor check` and POST /v1/check look it up;
2. at each off-candidate batch (2: below the smallest; 6: between B* = 4 and 8): the task's 8 grid LRs in
   full on the 3 truth seeds, the best of them (the LR a re-tuning would find);
3. the LR each rule gives there, from the study's LR*: the study's own κ, no rescaling (κ = 0), Adam's
   √B (κ = 0.5) and linear scaling (κ = 1); each scored, with the re-tuned LR, on the 8 fresh seeds,
   relative to the re-tuned LR's mean: what following the rule costs against re-tuning at that batch. The
   fixed rules also start from the grid's best (B, LR), which sets the study's error aside: that is what
   the rule itself costs;
4. `advisor check`'s verdict on every (off-candidate batch, grid LR), next to its regret against the best
   config measured at any batch (3-seed means): good ≤ 2% (CI should pass), bad > 5% (CI should fail).

    python -m bench.batch_rule [--tasks NAME ...] [--choice-seed 0 3] [--cache FOLDER] [--json PATH]
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

from advisor.check import decide
from advisor.cli.recommend import open_database
from bench.common import (  # the quality benchmark's base, tasks, ground truth and regret
    FRESH_SEEDS,
    FULL,
    BenchConfig,
    Task,
    Truth,
    advisor_spec,
    answer_summary,
    ground_truth,
    method_label,
    only_tasks,
    run_suite,
    stored_answer,
    stored_study,
    truth_loss,
    verdict_counts,
    write_results,
)

OFF_CANDIDATE_BATCHES = (2, 6)  # below the smallest candidate, and between B* = 4 and the next one
# The rules a user might follow when the batch changes: keep the LR, Adam's square root, linear scaling.
FIXED_RULES = {"not rescaled (κ = 0)": 0.0, "√B (κ = 0.5)": 0.5, "linear (κ = 1)": 1.0}
STUDY_RULE = "the study's rule"


def retuned_lr(truth: Truth, batch: int) -> tuple[float, float]:
    """(LR, 3-seed mean loss) of the best grid LR at `batch`: what re-tuning at that batch finds."""
    losses = {lr: truth_loss(truth.trainer, (batch, lr)) for lr in truth.lrs}
    best = min(losses, key=lambda lr: losses[lr])
    return best, losses[best]


def fixed_rule_lrs(best_batch: int, best_lr: float, batch: int) -> dict[str, float]:
    """The LR each of FIXED_RULES gives at `batch`, starting from `best_lr` at `best_batch`."""
    return {name: best_lr * (batch / best_batch) ** kappa for name, kappa in FIXED_RULES.items()}


def rule_lrs(answer: dict[str, Any], batch: int) -> dict[str, float]:
    """The LR each rule gives at `batch` from the stored answer's (B*, LR*); the study's is `decide`'s."""
    best_batch, best_lr = int(answer["batch_size"]), float(answer["learning_rate"])
    study = decide(answer, batch_size=batch, learning_rate=best_lr).rescaled_learning_rate
    assert study is not None, "a stored answer always has a rule (its own κ, or the prior)"
    return {**fixed_rule_lrs(best_batch, best_lr, batch), STUDY_RULE: study}


def rule_costs(
    truth: Truth, batch: int, rules: dict[str, float], retuned: float
) -> dict[str, dict[str, float]]:
    """Each rule's LR and its mean loss over FRESH_SEEDS against the re-tuned LR's on the same seeds."""
    reference = statistics.fmean(truth.trainer.scores(batch, retuned, FRESH_SEEDS))
    return {
        name: {
            "learning_rate": lr,
            "cost": statistics.fmean(truth.trainer.scores(batch, lr, FRESH_SEEDS)) / reference - 1,
        }
        for name, lr in rules.items()
    }


def grid_rule_costs(truth: Truth, batch: int, retuned: float) -> dict[str, dict[str, float]]:
    """The fixed rules from the grid's best (B, LR) to `batch`, scored as `rule_costs` scores them."""
    return rule_costs(truth, batch, fixed_rule_lrs(*truth.best, batch), retuned)


def check_verdicts(
    truth: Truth, answer: dict[str, Any], best_loss: float, retuned: dict[int, tuple[float, float]]
) -> list[dict[str, Any]]:
    """`advisor check` on every grid LR at the off-candidate batches and at B*, beside two regrets: against
    `best_loss` (the best config at any batch) and against the best LR at the same batch (`retuned`), which
    sets aside what the batch itself costs and is the part the LR band and the rule answer for."""
    verdicts = []
    for batch in sorted(retuned):
        for lr in truth.lrs:
            loss = truth_loss(truth.trainer, (batch, lr))
            verdicts.append(
                {
                    "batch_size": batch,
                    "learning_rate": lr,
                    "regret": loss / best_loss - 1,
                    "lr_regret": loss / retuned[batch][1] - 1,
                    "outcome": decide(answer, batch_size=batch, learning_rate=lr).outcome,
                }
            )
    return verdicts


def run_task(
    base: Path, folder: Path, task: Task, cfg: BenchConfig, choice_seeds: list[int], cache: Path | None
) -> dict[str, Any]:
    truth = ground_truth(base, folder, task, cfg, cache)
    retuned = {batch: retuned_lr(truth, batch) for batch in OFF_CANDIDATE_BATCHES}
    # The best config measured at any batch: the yardstick of good and bad for the check.
    best_loss = min(truth.best_loss, *(loss for _, loss in retuned.values()))
    choices = []
    for seed in choice_seeds:
        spec = advisor_spec(truth.trainer, truth.grid_examples, seed)
        db = open_database(folder / task.name / f"store_{seed}")
        stored_study(db, spec)
        answer = stored_answer(db, spec, len(truth.trainer.data.train))
        checked = {**retuned, int(answer["batch_size"]): retuned_lr(truth, int(answer["batch_size"]))}
        verdicts = check_verdicts(truth, answer, best_loss, checked)
        off_candidate = [v for v in verdicts if v["batch_size"] in OFF_CANDIDATE_BATCHES]
        choices.append(
            {
                "choice_seed": seed,
                "answer": answer_summary(answer),
                "rules": {
                    str(batch): rule_costs(truth, batch, rule_lrs(answer, batch), retuned[batch][0])
                    for batch in OFF_CANDIDATE_BATCHES
                },
                "check": {**verdict_counts(off_candidate), "verdicts": verdicts},
                # The LR part alone, at the off-candidate batches and at B*: good and bad against the best
                # LR at the same batch.
                "check_lr": {
                    "off_candidate": verdict_counts(off_candidate, "lr_regret"),
                    "at_best_batch": verdict_counts(
                        [v for v in verdicts if v["batch_size"] == answer["batch_size"]], "lr_regret"
                    ),
                },
            }
        )
        print(f"{task.name} seed {seed}: {choices[-1]['answer']}", file=sys.stderr)
    return {
        "task": task.name,
        "method": task.method,
        "rank": task.rank,
        "train_examples": truth.trainer.full_examples(),
        "grid_best": {
            "batch_size": truth.best[0],
            "learning_rate": truth.best[1],
            "eval_loss": truth.best_loss,
        },
        "retuned": {
            str(batch): {"learning_rate": lr, "regret": loss / truth.best_loss - 1}
            for batch, (lr, loss) in retuned.items()
        },
        "grid_rules": {
            str(batch): grid_rule_costs(truth, batch, retuned[batch][0]) for batch in OFF_CANDIDATE_BATCHES
        },
        "choices": choices,
    }


def cost_statistics(rule_sets: list[dict[str, dict[str, dict[str, float]]]]) -> dict[str, dict[str, Any]]:
    """Per batch and rule, the median, mean and worst cost over a list of {batch: {rule: {"cost": …}}}."""
    costs: dict[str, dict[str, list[float]]] = {}
    for rules_by_batch in rule_sets:
        for batch, rules in rules_by_batch.items():
            for name, rule in rules.items():
                costs.setdefault(batch, {}).setdefault(name, []).append(rule["cost"])
    return {
        batch: {
            name: {"median": statistics.median(v), "mean": statistics.fmean(v), "worst": max(v), "n": len(v)}
            for name, v in by_rule.items()
        }
        for batch, by_rule in costs.items()
    }


def summarise(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """The rules' costs from every study's answer and from every task's grid best, and the check's verdicts
    counted over all (task, choice seed) pairs."""
    checks = [c["check"] for t in tasks for c in t["choices"]]
    counted = ("good", "good_passed", "bad", "bad_failed", "passed")
    lr_checks = {
        where: {key: sum(c["check_lr"][where][key] for t in tasks for c in t["choices"]) for key in counted}
        for where in ("off_candidate", "at_best_batch")
    }
    return {
        "check_lr": lr_checks,
        "rule_costs": cost_statistics([c["rules"] for t in tasks for c in t["choices"]]),
        "grid_rule_costs": cost_statistics([t["grid_rules"] for t in tasks]),
        "check": {key: sum(c[key] for c in checks) for key in counted},
    }


def print_tables(tasks: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    names = [STUDY_RULE, *FIXED_RULES]
    print(
        "| task | choice seed | B*, LR*, κ | "
        + " | ".join(f"B = {b}: re-tuned" for b in OFF_CANDIDATE_BATCHES)
        + " |"
    )
    for task in tasks:
        for choice in task["choices"]:
            answer = choice["answer"]
            cells = []
            for batch in OFF_CANDIDATE_BATCHES:
                rules = choice["rules"][str(batch)]
                costs = ", ".join(f"{rules[n]['cost']:+.2%}" for n in names)
                cells.append(f"{task['retuned'][str(batch)]['learning_rate']:.3g} ({costs})")
            print(
                f"| {method_label(task)} | {choice['choice_seed']} | {answer['batch_size']}, "
                f"{answer['learning_rate']:.3g}, {answer['kappa']:.2f} | " + " | ".join(cells) + " |"
            )
    print(
        f"\ncosts in brackets: {', '.join(names)} (mean loss over 8 fresh seeds against the re-tuned LR's)\n"
    )
    print(
        "| batch | rule | from the study: median | mean | worst "
        "| from the grid's best: median | mean | worst |"
    )
    for batch, by_rule in summary["rule_costs"].items():
        for name, stats in by_rule.items():
            grid = summary["grid_rule_costs"][batch].get(name)
            tail = (
                " — | — | — |"
                if grid is None
                else "".join(f" {grid[k]:+.2%} |" for k in ("median", "mean", "worst"))
            )
            print(
                f"| {batch} | {name} |"
                + "".join(f" {stats[k]:+.2%} |" for k in ("median", "mean", "worst"))
                + tail
            )
    print("\n| task | choice seed | good passed | bad failed | configs passed | worst regret passed |")
    for task in tasks:
        for choice in task["choices"]:
            c = choice["check"]
            worst = "—" if c["worst_passed_regret"] is None else f"{c['worst_passed_regret']:.1%}"
            print(
                f"| {task['task']} | {choice['choice_seed']} | {c['good_passed']} of {c['good']} | "
                f"{c['bad_failed']} of {c['bad']} | {c['passed']} | {worst} |"
            )
    views = {
        "off-candidate batches, against the best config at any batch": summary["check"],
        "off-candidate batches, against the best LR at the same batch": summary["check_lr"]["off_candidate"],
        "B*, against the best LR at B*": summary["check_lr"]["at_best_batch"],
    }
    print("\n| configs | good passed | bad failed | passed |")
    for name, c in views.items():
        print(
            f"| {name} | {c['good_passed']} of {c['good']} "
            f"| {c['bad_failed']} of {c['bad']} | {c['passed']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="bench/out/batch_rule.json")
    parser.add_argument("--choice-seed", type=int, nargs="+", default=[0, 3])
    parser.add_argument("--tasks", nargs="+", metavar="NAME", help="only these tasks (default: all)")
    parser.add_argument(
        "--cache", metavar="FOLDER", help="the quality benchmark's run cache (see quality.py)"
    )
    parser.add_argument(
        "--reprint", metavar="JSON", nargs="+", help="print earlier runs' tables again (their tasks together)"
    )
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
