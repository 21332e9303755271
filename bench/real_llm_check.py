"""`advisor check` on a real LLM at effective batches its study never ran (issue 4).

`bench/batch_rule.py` measures the check off the candidates on the quality benchmark's tiny tasks; there the
grid has 8 LRs × 3 seeds at every batch. This asks the same question once on SmolLM2-135M-Instruct with LoRA
r = 8 on the FAQ (`bench/real_llm.py`'s model, data, spec and run cache), as a CI pipeline would meet it:

1. the advisor's study on each choice seed, with `bench/real_llm.py`'s budget (10% of a nominal 4 × 8
   grid), stored in a real SQLite database and looked up the way `advisor check` and POST /v1/check look it
   up;
2. ground truth at B* = 4 (`bench/real_llm.py`'s) and at off-candidate batches (2: below the smallest
   candidate, which a user halving the micro-batch meets; 6: between 4 and 8): full runs on seed 0 over the
   LR lattice, from three LRs and grown while the best is on an edge, as `real_llm.py` grows its grid;
3. the check's verdict on every (B, LR) measured, next to two regrets: against the best config at any batch
   and against the best LR at the same batch (the part the band and its LR rule answer for); good ≤ 2% (CI
   should pass), bad > 5% (CI should fail), as in `bench/warm_start.py`;
4. where the study's rule puts the LR at each batch, against the LR that re-tuning there found;
5. the pick's regret on fresh seeds 1 and 2 against the best config measured at any batch. With
   `--candidates 2 4 8` the study may choose B = 2 itself: choosing B on a real LLM, where B = 2 is best.

    python -m bench.real_llm_check [--choice-seed 0 3 6] [--batches 2 6] [--candidates 4 8 16]
                                   [--cache FOLDER] [--json PATH]
    python -m bench.real_llm_check --truth-only ...   # train the ground truth into the cache, beside a study

Needs `make .venv/.models`. One seed of truth per LR (the best config's seed noise is 0.4–0.65% here, a
quarter of the good threshold); each full run takes 2–4 min on a 2-core CPU, each study 9–12 min.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from advisor.check import decide
from advisor.cli.recommend import open_database
from bench.common import (
    BAD_REGRET,
    GOOD_REGRET,
    Config,
    Trainer,
    advisor_spec,
    answer_summary,
    cpu_model,
    regret,
    stored_answer,
    stored_study,
    verdict_counts,
)
from bench.real_llm import BATCH_SIZES, FRESH_SEEDS, NOMINAL_GRID_CONFIGS, batch_lrs, faq_trainer

STUDY_BATCH = 4  # B* of every SmolLM2 LoRA study so far (`bench/real_llm.py`), and the truth's best batch
# Where each batch's truth starts: B* = 4's best LR, moved by √B (Adam's rule) to the nearest lattice LR.
START_LRS = {2: 0.00632, 4: 0.02, 6: 0.0112}  # B = 4 starts where `real_llm.py` did, so its cache answers


def truth_grid(trainer: Trainer, batches: list[int]) -> dict[int, dict[float, float]]:
    """Seed 0's eval loss per LR at each batch (a diverged run scores the untrained loss)."""
    return {batch: batch_lrs(trainer, batch, START_LRS.get(batch, 0.0112)) for batch in batches}


def study_answer(trainer: Trainer, seed: int, candidates: list[int], folder: Path) -> dict[str, Any]:
    """The study on choice seed `seed` over these candidate batch sizes, stored in its own SQLite
    database; what the check reads back."""
    spec = advisor_spec(trainer, NOMINAL_GRID_CONFIGS * trainer.full_examples(), seed)
    spec = spec.model_copy(update={"batch_sizes": candidates})
    db = open_database(folder / f"store_{seed}")
    stored_study(db, spec)
    return stored_answer(db, spec, len(trainer.data.train))


def verdicts(answer: dict[str, Any], grid: dict[int, dict[float, float]]) -> list[dict[str, Any]]:
    """The check's verdict on every (B, LR) of the truth, beside its regret against the best config anywhere
    and against the best LR at the same batch."""
    best_anywhere = min(loss for row in grid.values() for loss in row.values())
    rows = []
    for batch, row in sorted(grid.items()):
        best_here = min(row.values())
        for lr, loss in sorted(row.items()):
            rows.append(
                {
                    "batch_size": batch,
                    "learning_rate": lr,
                    "regret": loss / best_anywhere - 1,
                    "lr_regret": loss / best_here - 1,
                    "outcome": decide(answer, batch_size=batch, learning_rate=lr).outcome,
                }
            )
    return rows


def rule_placement(
    answer: dict[str, Any], grid: dict[int, dict[float, float]]
) -> dict[str, dict[str, float]]:
    """Per batch: the study's band and rule LR there (`decide`'s), the re-tuned LR, and how far apart the two
    are in decades (positive: the rule's LR is higher)."""
    placed = {}
    for batch, row in sorted(grid.items()):
        retuned = min(row, key=lambda lr: row[lr])
        band = decide(answer, batch_size=batch, learning_rate=retuned)
        rule_lr = band.rescaled_learning_rate
        assert rule_lr is not None, "a stored answer always has a rule (its own κ, or the prior)"
        placed[str(batch)] = {
            "rule_lr": rule_lr,
            "lr_low": band.lr_low,
            "lr_high": band.lr_high,
            "retuned_lr": retuned,
            "decades_off": math.log10(rule_lr / retuned),
        }
    return placed


def measure(args: argparse.Namespace) -> dict[str, Any]:
    batches = sorted({STUDY_BATCH, *args.batches})
    result: dict[str, Any] = {
        "machine": cpu_model(),
        "batches": batches,
        "candidates": args.candidates,
        "studies": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        answers = [
            (seed, study_answer(faq_trainer("en", "lora", args.cache), seed, args.candidates, Path(tmp)))
            for seed in args.choice_seed
        ]
    # A fresh trainer reads the cache again: a `--truth-only` process beside this one may have filled it.
    trainer = faq_trainer("en", "lora", args.cache)
    grid = truth_grid(trainer, batches)
    result["grid"] = {str(b): {str(lr): loss for lr, loss in row.items()} for b, row in grid.items()}
    best_per_batch: dict[int, Config] = {b: (b, min(row, key=lambda lr: row[lr])) for b, row in grid.items()}
    best = min(best_per_batch.values(), key=lambda c: grid[c[0]][c[1]])
    # Each batch's best LR on the fresh seeds, against the best config's: what the batch itself costs.
    result["best_per_batch_fresh"] = {
        str(b): {"learning_rate": c[1], "regret": regret(trainer, c, best, FRESH_SEEDS, FRESH_SEEDS)[0]}
        for b, c in best_per_batch.items()
    }
    for seed, answer in answers:
        rows = verdicts(answer, grid)
        off = [r for r in rows if r["batch_size"] not in args.candidates]
        at_best = [r for r in rows if r["batch_size"] == answer["batch_size"]]
        result["studies"].append(
            {
                "choice_seed": seed,
                "answer": answer_summary(answer),
                # why: the study's sentences, and the run-length move with its horizon runs when it ran them
                "reasoning": answer["details"].get("reasoning", []),
                "size_trend": answer["details"].get("evidence", {}).get("size_trend"),
                # the pick on the fresh seeds against the best config measured (seed 0 chose it)
                "regret": regret(
                    trainer, (answer["batch_size"], answer["learning_rate"]), best, FRESH_SEEDS, FRESH_SEEDS
                ),
                "rule": rule_placement(answer, grid),
                "verdicts": rows,
                "off_candidate": verdict_counts(off),
                "off_candidate_lr": verdict_counts(off, "lr_regret"),
                "at_best_batch_lr": verdict_counts(at_best, "lr_regret"),
            }
        )
    return result


def print_tables(result: dict[str, Any]) -> None:
    grid = {int(b): {float(lr): loss for lr, loss in row.items()} for b, row in result["grid"].items()}
    lrs = sorted({lr for row in grid.values() for lr in row})
    print(f"truth (seed 0), {result['machine']}\n{'B':>4}" + "".join(f"{lr:>9.3g}" for lr in lrs))
    for batch, row in grid.items():
        print(f"{batch:>4}" + "".join(f"{row[lr]:>9.4f}" if lr in row else f"{'':>9}" for lr in lrs))
    for batch, row in result.get("best_per_batch_fresh", {}).items():
        print(f"B = {batch}'s best LR {row['learning_rate']:.3g} on seeds 1, 2: {row['regret']:+.2%}")
    for study in result["studies"]:
        answer = study["answer"]
        worth = study.get("regret")  # JSON written before the candidates option has none
        print(
            f"\nchoice seed {study['choice_seed']}: ({answer['batch_size']}, {answer['learning_rate']:.3g})"
            + (f" → regret {worth[0]:+.2%} ± {worth[1]:.2%}" if worth else "")
            + f", κ as the check applies it {answer['kappa']:.2f}"
        )
        for batch, placed in study["rule"].items():
            print(
                f"  B = {batch}: rule LR {placed['rule_lr']:.3g} (band {placed['lr_low']:.3g} … "
                f"{placed['lr_high']:.3g}), re-tuned {placed['retuned_lr']:.3g}: "
                f"{placed['decades_off']:+.2f} decades"
            )
        for row in study["verdicts"]:
            print(
                f"  ({row['batch_size']}, {row['learning_rate']:.3g}): {row['outcome']:<5} regret "
                f"{row['regret']:+.2%}, at its batch {row['lr_regret']:+.2%}"
            )
    for key, label in (
        ("off_candidate", "off the candidates, against the best anywhere"),
        ("off_candidate_lr", "off the candidates, against the best LR at that batch"),
        ("at_best_batch_lr", "at B*, against the best LR there"),
    ):
        counts = [s[key] for s in result["studies"]]
        good, bad = sum(c["good"] for c in counts), sum(c["bad"] for c in counts)
        print(
            f"{label}: good passed {sum(c['good_passed'] for c in counts)} of {good}, "
            f"bad failed {sum(c['bad_failed'] for c in counts)} of {bad} "
            f"(good ≤ {GOOD_REGRET:.0%}, bad > {BAD_REGRET:.0%})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--choice-seed", type=int, nargs="+", default=[0, 3, 6])
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[2, 6], help="off-candidate effective batches"
    )
    parser.add_argument(
        "--candidates",
        type=int,
        nargs="+",
        default=list(BATCH_SIZES),
        help="the studies' batch_sizes (default bench/real_llm.py's 4 8 16)",
    )
    parser.add_argument("--cache", type=Path, default=None, help="the run cache `bench/real_llm.py` fills")
    parser.add_argument("--json", default="bench/out/real_llm_check.json")
    parser.add_argument(
        "--truth-only", action="store_true", help="only train the ground truth (into --cache)"
    )
    parser.add_argument("--reprint", type=Path, default=None, help="print an earlier run's JSON again")
    args = parser.parse_args()
    if args.reprint:
        print_tables(json.loads(args.reprint.read_text()))
        return
    torch.set_num_threads(1)  # one thread per process: the truth and the studies run side by side
    if args.truth_only:
        truth_grid(faq_trainer("en", "lora", args.cache), sorted({STUDY_BATCH, *args.batches}))
        return
    started = time.perf_counter()
    result = measure(args)
    result["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print_tables(result)


if __name__ == "__main__":
    main()
