"""How the best batch size moves with dataset size, B*(N), and whether the advisor follows it (issue 4).

arXiv 2602.09492 reports that B* is roughly invariant to rank and model size but moves with dataset size, as
the critical-batch theory predicts; on every quality task (450–1800 examples) the grid's best is the smallest
candidate, B = 4. This benchmark grows one task (`add`, LoRA r = 8, the quality benchmark's base model and LR
range) from 900 to 3600 training examples and measures, at each size:

- the ground truth: the dense grid (4 batch sizes × 8 LRs, full runs on the 3 truth seeds) and what each
  batch size's best LR loses against the best (`common.batch_penalties`);
- the advisor on its 10% budget (choice seeds 0 and 3): the batch size and LR it picks and their regret
  (8 fresh seeds against the grid best's 16), as `bench/quality.py` scores them.

    python -m bench.batch_scaling [--records 1000 2000 4000] [--cache FOLDER] [--json FILE] [--reprint JSON]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import common  # the quality benchmark's base model, ground truth, advisor budget and regret

CHOICE_SEEDS = (0, 3)


def sized_task(records: int) -> common.Task:
    """`add` with LoRA r = 8 on `records` instruction records (a tenth held out)."""
    return common.Task(f"add_lora_{records}", "lora", 8, records, (1e-3, 1e-1), mixes=("add",))


def measure(base: Path, folder: Path, records: int, cache: Path | None) -> dict[str, Any]:
    started = time.perf_counter()
    task = sized_task(records)
    truth = common.ground_truth(base, folder, task, common.FULL, cache)
    picks = []
    for seed in CHOICE_SEEDS:
        config, examples, rec = common.advisor(truth.trainer, truth.grid_examples, seed)
        value, se = common.regret(truth.trainer, config, truth.best)
        picks.append(
            {
                "choice_seed": seed,
                "batch_size": config[0],
                "learning_rate": config[1],
                "regret": value,
                "regret_se": se,
                "band_batch_sizes": rec.band.batch_sizes,
                "compute_share": examples / truth.grid_examples,
            }
        )
    return {
        "records": records,
        "train_examples": truth.trainer.full_examples(),
        "grid_best": {"batch_size": truth.best[0], "learning_rate": truth.best[1], "loss": truth.best_loss},
        "batch_penalties": common.batch_penalties(truth),
        "advisor": picks,
        "seconds": round(time.perf_counter() - started, 1),
    }


def print_table(sizes: list[dict[str, Any]]) -> None:
    batches = sorted({int(b) for s in sizes for b in s["batch_penalties"]})
    columns = ["N", "grid best (B, LR)", *(f"B = {b}: best LR, loss vs best" for b in batches)]
    columns.append("advisor (B, LR) → regret, choice seeds " + ", ".join(map(str, CHOICE_SEEDS)))
    print("| " + " | ".join(columns) + " |")
    print("|---" * (len(batches) + 3) + "|")
    for s in sizes:
        best = s["grid_best"]
        cells = [
            f"{p['learning_rate']:.3g}, {p['regret']:+.2%}"
            for _, p in sorted(s["batch_penalties"].items(), key=lambda item: int(item[0]))
        ]
        picks = "; ".join(
            f"({a['batch_size']}, {a['learning_rate']:.3g}) → {a['regret']:.2%}" for a in s["advisor"]
        )
        print(
            f"| {s['train_examples']} | ({best['batch_size']}, {best['learning_rate']:.3g}) | "
            + " | ".join(cells)
            + f" | {picks} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--cache", metavar="FOLDER", help="where full-run losses are kept (as in quality.py)")
    parser.add_argument("--json", default="bench/out/batch_scaling.json")
    parser.add_argument("--reprint", metavar="JSON", help="print an earlier run's table again")
    args = parser.parse_args()
    if args.reprint:
        print_table(json.loads(Path(args.reprint).read_text())["tasks"])
        return
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and the machine is shared
    cache = Path(args.cache) if args.cache else None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = common.build_base(folder, common.FULL)
        sizes = []
        for records in args.records:
            sizes.append(measure(base, folder, records, cache))
            print(f"N = {sizes[-1]['train_examples']}: done ({sizes[-1]['seconds']:.0f} s)", file=sys.stderr)
    summary = {"grid_best_batch": {s["train_examples"]: s["grid_best"]["batch_size"] for s in sizes}}
    common.write_results(args.json, started, common.FULL, sizes, summary, choice_seeds=list(CHOICE_SEEDS))
    print_table(sizes)


if __name__ == "__main__":
    main()
