"""Parallel proxy runs: one study's wall time and pick at 1 and at N worker processes.

A tiny Llama (hidden 64, 4 layers) on synthetic instructions, a study with an examples budget (the same plan
on any machine), run with `ParallelRunner(1)` and `ParallelRunner(N)` (one torch thread per worker), and for
reference in this process as `advisor recommend` runs by default (`TorchRunner`, torch's own threads).
Reported: wall seconds, the ratio to one worker, whether every run (config, examples, loss) and the pick are
bitwise those of one worker, and which workers ran the runs. Target: at N = 2 on a 2-core CPU, ≤ 0.6× the
wall time of one worker, the same pick.

With --ray, the contender is instead `RayRunner` on a real two-node Ray cluster started on loopback
(`proxy_runs.ray_cluster`, one CPU per node, as tests/test_ray_runs.py does), and the rows also say how many
runs each Ray node trained. On 2 cores its wall time says little (the two nodes share them); the check is
that the runs and the pick are those of one worker.

    python -m bench.parallel [--workers 2] [--examples 6000] [--ray] [--json bench/out/parallel.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from advisor.science.recommendation import Recommendation
from advisor.specs import StudySpec, parse_spec
from advisor.study import StudyResult, run_study
from advisor.study.runner import ProxyRunner
from proxy_runs import synthetic, tiny
from proxy_runs.parallel import ParallelRunner
from proxy_runs.ray_cluster import loopback_cluster
from proxy_runs.ray_runner import RayRunner
from proxy_runs.runner import TorchRunner


def task(folder: Path, examples: int) -> StudySpec:
    records = synthetic.instruction_records(480, seed=0)
    data = synthetic.write_jsonl(records, folder / "train.jsonl")
    model = tiny.save_tiny_model(
        folder / "model", "llama", synthetic.corpus_of(records), vocab_size=512, hidden=64, layers=4
    )
    return parse_spec(
        {
            "model": str(model),
            "dataset": {"path": str(data)},
            "training": {"max_seq_len": 64},
            "batch_sizes": [4, 8, 16],
            "lr_range": [1e-4, 1.0],
            "budget": {"proxy_seconds": None, "proxy_examples": examples},
        }
    )


def timed(spec: StudySpec, runner: ProxyRunner) -> tuple[StudyResult, float]:
    started = time.perf_counter()
    try:
        return run_study(spec, runner), time.perf_counter() - started
    finally:
        if isinstance(runner, ParallelRunner):
            runner.close()


def fingerprint(result: StudyResult) -> list[tuple[int, float, int, float | None]]:
    return [(r.config.batch_size, r.config.learning_rate, r.examples_seen, r.eval_loss) for r in result.runs]


def pick(result: StudyResult) -> tuple[int, float] | None:
    rec = result.recommendation
    return (rec.batch_size, rec.learning_rate) if isinstance(rec, Recommendation) else None


def in_processes(spec: StudySpec, workers: int) -> Iterator[tuple[str, tuple[StudyResult, float]]]:
    yield f"{workers} worker processes", timed(spec, ParallelRunner(workers))
    yield "in this process (TorchRunner)", timed(spec, TorchRunner())


def on_ray(spec: StudySpec, paused_runs: Path) -> Iterator[tuple[str, tuple[StudyResult, float]]]:
    """Paused runs wait in a folder both nodes read (on one machine, any folder)."""
    with loopback_cluster(nodes=2, cpus_per_node=1) as cluster:
        runner = RayRunner(cluster.address, paused_runs_dir=paused_runs)
        yield "Ray tasks on 2 nodes (loopback)", timed(spec, runner)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--examples", type=int, default=6000, help="the study's examples budget")
    parser.add_argument("--json", default="bench/out/parallel.json")
    parser.add_argument(
        "--ray", action="store_true", help="the contender: Ray tasks on a two-node Ray cluster on loopback"
    )
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        spec = task(Path(folder), args.examples)
        base, base_seconds = timed(spec, ParallelRunner(1))
        rows.append(row("1 worker process", base, base_seconds, base, base_seconds))
        contenders = on_ray(spec, Path(folder)) if args.ray else in_processes(spec, args.workers)
        for name, (result, seconds) in contenders:
            rows.append(row(name, result, seconds, base, base_seconds))
    print(
        f"{'runner':32} {'runs':>5} {'seconds':>8} {'× 1 worker':>10} {'same runs':>9} {'same pick':>9}  pick"
    )
    for r in rows:
        print(
            f"{r['runner']:32} {r['runs']:5d} {r['seconds']:8.1f} {r['ratio']:10.2f} {r['same_runs']!s:>9} "
            f"{r['same_pick']!s:>9}  {r['pick']}"
        )
        if r["runs_per_ray_node"]:
            print(f"{'':32} runs per Ray node: {r['runs_per_ray_node']}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2))


def row(
    name: str, result: StudyResult, seconds: float, base: StudyResult, base_seconds: float
) -> dict[str, Any]:
    workers = Counter(str(r.meta.get("worker", "this process")) for r in result.runs)
    nodes = Counter(str(r.meta["ray_node"]) for r in result.runs if "ray_node" in r.meta)
    return {
        "runner": name,
        "runs": len(result.runs),
        "seconds": round(seconds, 1),
        "ratio": round(seconds / base_seconds, 2),
        "same_runs": fingerprint(result) == fingerprint(base),
        "same_pick": pick(result) == pick(base),
        "pick": pick(result),
        "runs_per_worker": dict(workers),
        "runs_per_ray_node": dict(nodes),  # empty off Ray
    }


if __name__ == "__main__":
    main()
