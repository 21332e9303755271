"""Sibling-proxy benchmark (issue 4): does a study on a smaller sibling model answer for the target?

The advisor's cheapest path (arXiv 2602.09492) runs its proxy study on a smaller model of the same family at a
low rank, carries B* over unchanged, moves LR* to the target by the curvature ratio (λ_target / λ_proxy)^−β
and, when the budget allows, confirms it with 3 short runs on the target. Here that path is held against a
dense grid on the target itself:

1. A model family, both members pretrained here in full on the same synthetic text with the same tokenizer
   and recipe: the sibling is the quality benchmark's tiny Llama (hidden 32, 2 layers), the target has
   hidden 64 and 4 layers (about 6× the compute per token).
2. The task: `reverse` (900 training examples, one epoch, cosine), LoRA at rank 16 on the target (the
   sibling proxy trains at rank 8, α/r kept), the LR range 3e-3 … 3e-1 for everyone.
3. Ground truth as in `quality.py`: the target's dense grid of 4 batch sizes × 8 LRs on 3 seeds; regret is
   a pick's mean loss over 8 fresh seeds against the grid best's over 16. The sibling's own dense grid (same
   data, its rank) says how far the optimum really moves between the two models.
4. Contenders, per choice seed, at 10% of the target grid's examples:
   - the advisor on the sibling (`proxy_model`), and two of its intermediate answers: the sibling's LR* as
     is, and after the curvature ratio but before the target's confirmation runs;
   - the advisor on the target itself (what `quality.py` measures);
   - and once, without a choice seed: the sibling grid's best config applied to the target unchanged.
   Compute is counted in wall-clock seconds of the whole study (probes, calibration and target runs
   included) against the target grid's seconds on one seed, and in examples on each model.

    python -m bench.sibling_transfer [--quick] [--choice-seed 0 3 ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from advisor.records import CONFIRMATION_ROLE
from advisor.science.recommendation import Recommendation
from advisor.specs import StudySpec
from advisor.study.sibling import proxy_spec_for
from bench.common import (  # the quality benchmark's pretraining, ground truth and regret
    FULL,
    QUICK,
    TRUTH_SEEDS,
    BenchConfig,
    Config,
    Task,
    Trainer,
    Truth,
    advisor_spec,
    build_base,
    grid_truth,
    ground_truth,
    regret,
    write_results,
)
from proxy_runs.runner import prepared_data, run_study

TARGET_SIZE = {"hidden": 64, "layers": 4}  # the sibling is the quality benchmark's hidden 32, 2 layers


@dataclass(frozen=True)
class Setup:
    task: Task
    sibling: BenchConfig
    target: BenchConfig


FULL_SETUP = Setup(
    Task("reverse", "lora", 16, 1000, (3e-3, 3e-1)),
    replace(FULL, tasks=[]),
    replace(FULL, tasks=[], **TARGET_SIZE),
)
QUICK_SETUP = Setup(
    Task("reverse", "lora", 16, 300, (3e-3, 3e-1)),
    replace(QUICK, tasks=[]),
    replace(QUICK, tasks=[], **TARGET_SIZE),
)


def sibling_trainer(target: Truth, sibling_base: Path) -> Trainer:
    """Full runs of the sibling at the proxy's rank on the target's data: its own dense grid."""
    spec = proxy_spec_for(target.trainer.spec.model_copy(update={"proxy_model": str(sibling_base)}))
    return Trainer(spec, prepared_data(spec))


def timed_study(spec: StudySpec) -> tuple[Recommendation, float, int, int]:
    """(the answer, the study's wall-clock seconds, examples on the proxy, examples on the target's
    confirmation runs)."""
    started = time.perf_counter()
    result = run_study(spec)
    seconds = time.perf_counter() - started
    assert isinstance(result.recommendation, Recommendation), result.recommendation
    on_target = sum(r.examples_seen for r in result.runs if r.meta.get("role") == CONFIRMATION_ROLE)
    on_proxy = sum(r.examples_seen for r in result.runs) - on_target
    return result.recommendation, seconds, on_proxy, on_target


def grid_seconds_one_seed(truth: Truth) -> float:
    """What one seed of the target's grid took; this benchmark trains its grids afresh, so always timed."""
    assert truth.seconds is not None, "sibling_transfer.py never reads a run cache"
    return truth.seconds / len(TRUTH_SEEDS)


def contender_row(
    truth: Truth, config: Config, seconds: float | None = None, **examples: int
) -> dict[str, Any]:
    """A pick's regret on the target against its grid's best, and what it cost."""
    value, se = regret(truth.trainer, config, truth.best)
    one_seed_grid_seconds = grid_seconds_one_seed(truth)
    return {
        "batch_size": config[0],
        "learning_rate": config[1],
        "regret": value,
        "regret_se": se,
        "seconds": seconds,
        "seconds_share": None if seconds is None else seconds / one_seed_grid_seconds,
        **{f"{model}_examples": n for model, n in examples.items()},
    }


def choose(truth: Truth, sibling_base: Path, choice_seed: int) -> dict[str, Any]:
    """The advisor on the sibling (with its intermediate answers) and on the target, on one choice seed."""
    spec = advisor_spec(truth.trainer, truth.grid_examples, choice_seed)
    via_sibling, sibling_seconds, proxy_examples, confirm_examples = timed_study(
        spec.model_copy(update={"proxy_model": str(sibling_base)})
    )
    on_target, target_seconds, target_examples, _ = timed_study(spec)
    transfer = via_sibling.evidence["transfer"]
    batch = via_sibling.batch_size
    return {
        "choice_seed": choice_seed,
        "lambda_proxy": transfer["lambda_proxy"],
        "lambda_target": transfer["lambda_target"],
        "confirmations": transfer["confirmations"],
        "reasoning": via_sibling.reasoning,
        "contenders": {
            "sibling_study": contender_row(
                truth,
                (batch, via_sibling.learning_rate),
                sibling_seconds,
                sibling=proxy_examples,
                target=confirm_examples,
            ),
            "sibling_lr_as_is": contender_row(truth, (batch, transfer["proxy_learning_rate"])),
            "curvature_moved": contender_row(truth, (batch, transfer["transferred_learning_rate"])),
            "target_study": contender_row(
                truth, (on_target.batch_size, on_target.learning_rate), target_seconds, target=target_examples
            ),
        },
    }


def run(setup: Setup, choice_seeds: list[int]) -> dict[str, Any]:
    """Pretrain the family, take both dense grids, then every contender on every choice seed."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sibling_base = build_base(folder / "sibling", setup.sibling)
        target_base = build_base(folder / "target", setup.target)
        truth = ground_truth(target_base, folder / "target", setup.task, setup.target)
        sibling = sibling_trainer(truth, sibling_base)
        sibling_best, sibling_loss = grid_truth(sibling, truth.grid)
        choices = [choose(truth, sibling_base, seed) for seed in choice_seeds]
        target_best = truth.best
        lambdas = [(c["lambda_proxy"], c["lambda_target"]) for c in choices]
        return {
            "task": setup.task.name,
            "method": setup.task.method,
            "rank": setup.task.rank,
            "proxy_rank": sibling.spec.rank,
            "train_examples": truth.trainer.full_examples(),
            "target_grid_best": {"batch_size": target_best[0], "learning_rate": target_best[1]},
            "target_grid_loss": truth.best_loss,
            "sibling_grid_best": {"batch_size": sibling_best[0], "learning_rate": sibling_best[1]},
            "sibling_grid_loss": sibling_loss,
            "implied_beta": implied_beta(sibling_best[1], target_best[1], lambdas),
            "sibling_best_on_target": contender_row(truth, sibling_best),
            "grid_seconds_one_seed": grid_seconds_one_seed(truth),
            "choices": choices,
        }


def implied_beta(sibling_lr: float, target_lr: float, lambdas: list[tuple[float, float]]) -> float | None:
    """The β that would have moved the sibling grid's LR* onto the target grid's exactly, with the median of
    the studies' λ ratios: −log(LR ratio) / log(λ ratio)."""
    ratios = [t / p for p, t in lambdas if p and t]
    if not ratios or math.isclose(statistics.median(ratios), 1.0):
        return None
    return -math.log(target_lr / sibling_lr) / math.log(statistics.median(ratios))


LABELS = {
    "sibling_study": "advisor via sibling",
    "curvature_moved": "  before confirmation",
    "sibling_lr_as_is": "  sibling LR* as is",
    "target_study": "advisor on target",
}


def print_table(out: dict[str, Any]) -> None:
    best, sib = out["target_grid_best"], out["sibling_grid_best"]
    print(
        f"target grid best (B, LR) = ({best['batch_size']}, {best['learning_rate']:.3g}) → "
        f"{out['target_grid_loss']:.4f}; sibling grid best ({sib['batch_size']}, {sib['learning_rate']:.3g}) "
        f"→ {out['sibling_grid_loss']:.4f}; implied β {_num(out['implied_beta'])}"
    )
    row = out["sibling_best_on_target"]
    print(f"sibling grid's best config on the target: regret {row['regret']:.2%} ± {row['regret_se']:.2%}")
    print(f"{'contender':<24}{'seed':>5}{'(B, LR)':>16}{'regret':>16}{'seconds share':>15}{'examples':>22}")
    for c in out["choices"]:
        for name, label in LABELS.items():
            r = c["contenders"][name]
            share = "" if r["seconds_share"] is None else f"{r['seconds_share']:.1%}"
            examples = " + ".join(
                f"{r[k]} {k[:-9]}" for k in ("sibling_examples", "target_examples") if k in r
            )
            pick = f"({r['batch_size']}, {r['learning_rate']:.3g})"
            regret_text = f"{r['regret']:.2%} ± {r['regret_se']:.2%}"
            print(f"{label:<24}{c['choice_seed']:>5}{pick:>16}{regret_text:>16}{share:>15}{examples:>22}")
        print(
            f"{'':<24}λ_proxy {c['lambda_proxy']:.3g}, λ_target {c['lambda_target']:.3g}; confirmations "
            + ", ".join(f"{lr:.3g} → {_num(loss)}" for lr, loss in c["confirmations"])
        )
    for name, label in LABELS.items():
        regrets = [c["contenders"][name]["regret"] for c in out["choices"]]
        print(f"median {label.strip():<30}{statistics.median(regrets):>10.2%}  (worst {max(regrets):.2%})")


def _num(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 records and a shorter pretraining")
    parser.add_argument("--choice-seed", type=int, nargs="+", default=[0, 3, 6, 7])
    parser.add_argument("--json", default="bench/out/sibling_transfer.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and the machine is shared
    setup = QUICK_SETUP if args.quick else FULL_SETUP
    started = time.perf_counter()
    out = run(setup, args.choice_seed)
    write_results(
        args.json, started, setup.target, [out], {}, quick=args.quick, choice_seeds=args.choice_seed
    )
    print_table(out)


if __name__ == "__main__":
    main()
