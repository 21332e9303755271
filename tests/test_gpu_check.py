"""The one prepared GPU check (`bench/gpu_check.sh`) works before a GPU session spends its minutes on it:
its CPU smoke run does every step on a tiny Llama and writes what each measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_every_step_on_the_cpu_and_writes_what_each_measured(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        [str(ROOT / "bench" / "gpu_check.sh"), "--cpu-smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    check = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = {step["name"]: step for step in check["steps"]}
    assert all(step["rc"] == 0 for step in steps.values())
    probes = next(s for name, s in steps.items() if name.startswith("λ_max"))["result"]
    assert len(probes["modules"]) == 14  # q, k, v, o, gate, up, down of two layers
    assert all(m["eigenvalue"] is not None for m in probes["modules"]) and probes["seconds_per_hvp"] > 0
    study = next(s for name, s in steps.items() if name.startswith("one whole study"))["result"]
    assert study["batch_size"] in (4, 8) and study["learning_rate"] > 0
    parallel = next(s for name, s in steps.items() if name.startswith("the same study"))["result"]
    assert parallel["batch_size"] in (4, 8) and parallel["learning_rate"] > 0  # runs in worker processes
    assert (tmp_path / "gpu_check.log").stat().st_size > 0 and check["not_done"]
