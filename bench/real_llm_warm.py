"""Warm start on a real LLM: one larger study on one dataset teaches the next study, on another dataset.

On SmolLM2-135M the advisor's 10% studies read LR* at a third of the real run and move it to the run's
end with arXiv 2602.04998's run-length prior (LR* ∝ N^γ, γ = −0.25 ± 0.3); on this model LR* does not fall
with run length, so those answers sit low (`bench/real_llm.py`). A study whose budget reaches horizon runs
measures γ itself, and the knowledge store hands that γ, and the study's answer, to the next study of a nearby
context (`advisor.science.knowledge`). This benchmark measures that path as a user meets it:

1. **Calibration study:** the advisor on the English FAQ (choice seed 0) with `--first-share` of a nominal
   4 × 8 grid of full runs (25%: enough for 2 horizon runs at the real run's length), stored in a real
   SQLite database by the same code as `advisor recommend`.
2. **The next question, on the Swedish FAQ** (the same 503 questions in the original language: another
   fingerprint, the same model, method, rank and size bucket):
   - instant: the store's answer before any compute;
   - warm: a 10% study (choice seed 0, `--next-share`) that starts from the store.
   Both are scored against the Swedish ground truth of `python -m bench.real_llm --language sv` (run it first
   with the same `--cache`); the cold 10% study is that benchmark's advisor row on seed 0.
3. **Regret:** a pick's mean eval loss over seeds 1 and 2 against the grid best's on the same seeds (and,
   where a pick sits below LR*'s median for `lr_pick: cautious`, the median's beside it).

    python -m bench.real_llm_warm --cache bench/out/run_cache [--first-share 0.25] [--json FILE]

Needs `make .venv/.models`. About 50 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from advisor.cli.recommend import open_database
from advisor.science.recommendation import Recommendation
from advisor.specs import StudySpec
from bench.common import Config, Trainer, advisor_spec, cpu_model, instant_answer, regret, stored_study
from bench.real_llm import FRESH_SEEDS, NOMINAL_GRID_CONFIGS, batch_lrs, faq_trainer, median_scores

CHOICE_SEED = 0
TRUTH_START_LR = {"en": 0.02, "sv": 0.0112}  # where `real_llm.py` started each language's ground truth


def trainer_for(language: str, cache_folder: Path) -> tuple[Trainer, Config]:
    """The FAQ in `language` as `real_llm.py` trains it (LoRA r = 8, B ∈ {4, 8, 16}) and its grid best at
    B = 4, from the cache that benchmark filled."""
    trainer = faq_trainer(language, "lora", cache_folder)
    losses = batch_lrs(trainer, 4, TRUTH_START_LR[language])
    return trainer, (4, min(losses, key=lambda lr: losses[lr]))


def scored(trainer: Trainer, best: Config, rec: Recommendation) -> dict[str, Any]:
    """A recommendation's pick, and its LR*'s median when it moved below it for caution, with regrets."""
    worth, se = regret(trainer, (rec.batch_size, rec.learning_rate), best, FRESH_SEEDS, FRESH_SEEDS)
    return {
        "batch_size": rec.batch_size,
        "learning_rate": rec.learning_rate,
        "regret": worth,
        "se": se,
        **median_scores(trainer, best, rec),
        "provisional": rec.provisional,
        "examples": rec.cost.examples_seen,
        "reasoning": rec.reasoning,
    }


def with_share(trainer: Trainer, share: float) -> StudySpec:
    """The advisor's spec on CHOICE_SEED with `share` of a nominal 4 × 8 grid's examples as its budget."""
    spec = advisor_spec(trainer, NOMINAL_GRID_CONFIGS * trainer.full_examples(), CHOICE_SEED)
    examples = max(1, int(share * NOMINAL_GRID_CONFIGS * trainer.full_examples()))
    return spec.model_copy(update={"budget": spec.budget.model_copy(update={"proxy_examples": examples})})


def measure(
    cache_folder: Path,
    first_share: float,
    next_share: float,
    store: Path,
    save: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """The calibration study, then the instant answer and the warm study; `save` gets the result so far
    after each (a study takes many minutes)."""
    english, _ = trainer_for("en", cache_folder)
    swedish, swedish_best = trainer_for("sv", cache_folder)
    db = open_database(store)
    started = time.perf_counter()
    _, first = stored_study(db, with_share(english, first_share))
    first_seconds = time.perf_counter() - started
    trend = first.evidence.get("size_trend") or {}
    result: dict[str, Any] = {
        "machine": cpu_model(),
        "first_share": first_share,
        "next_share": next_share,
        "calibration_study": {
            "batch_size": first.batch_size,
            "learning_rate": first.learning_rate,
            "examples": first.cost.examples_seen,
            "seconds": round(first_seconds, 1),
            "gamma": trend.get("lr_exponent"),
            "gamma_sd": trend.get("exponent_sd"),
            "gamma_measured": trend.get("measured"),
            "reasoning": first.reasoning,
        },
        "swedish_best": {"batch_size": swedish_best[0], "learning_rate": swedish_best[1]},
    }
    save(result)
    next_spec = with_share(swedish, next_share)
    result["instant"] = scored(swedish, swedish_best, instant_answer(db, next_spec, swedish.data))
    save(result)
    started = time.perf_counter()
    _, warm = stored_study(db, next_spec)
    result["warm"] = {
        **scored(swedish, swedish_best, warm),
        "seconds": round(time.perf_counter() - started, 1),
    }
    save(result)
    return result


def print_table(result: dict[str, Any]) -> None:
    first = result["calibration_study"]
    print(
        f"calibration study (English, {result['first_share']:.0%} of a 4×8 grid): ({first['batch_size']}, "
        f"{first['learning_rate']:.3g}), {first['examples']} examples, {first['seconds']:.0f} s; "
        + (f"γ = {first['gamma']:+.2f} ± {first['gamma_sd']:.2f}" if first["gamma"] is not None else "no γ")
        + f" (measured: {bool(first['gamma_measured'])})"
    )
    best = result["swedish_best"]
    print(f"Swedish grid best ({best['batch_size']}, {best['learning_rate']:.3g})")
    for name in ("instant", "warm"):
        row = result.get(name)
        if row is None:
            continue
        line = (
            f"{name:>8}: ({row['batch_size']}, {row['learning_rate']:.3g}) regret {row['regret']:+.2%} ± "
            f"{row['se']:.2%}, {row['examples']} examples"
        )
        if row.get("median_regret") is not None:
            line += f"; LR*'s median {row['lr_star_median']:.3g}: {row['median_regret']:+.2%}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="the run cache `real_llm.py` filled")
    parser.add_argument("--first-share", type=float, default=0.25, help="the calibration study's budget")
    parser.add_argument("--next-share", type=float, default=0.10, help="the Swedish study's budget")
    parser.add_argument("--json", default="bench/out/real_llm_warm.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)

    def save(result: dict[str, Any]) -> None:
        Path(args.json).write_text(json.dumps(result, indent=2))

    with tempfile.TemporaryDirectory() as store:
        result = measure(args.cache, args.first_share, args.next_share, Path(store), save)
    print_table(result)


if __name__ == "__main__":
    main()
