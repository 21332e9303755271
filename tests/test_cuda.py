"""On a GPU: proxy runs in bf16 autocast, probes and a whole study run there and agree with the CPU.

Run by `bench/gpu_check.sh` (and `pytest -m gpu`); skipped where there is no CUDA device.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advisor.records import RunStatus
from advisor.science.recommendation import Recommendation
from advisor.specs import StudySpec, parse_spec
from proxy_runs.engine import RunBudget, train_proxy
from proxy_runs.probes import probe_spec
from proxy_runs.runner import run_study
from tests.conftest import make_spec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def spec_of(model: Path, data: Path, **training: object) -> StudySpec:
    return parse_spec(make_spec(model, data, training={"max_seq_len": 64, **training}))


def test_a_proxy_run_on_cuda_in_bf16_trains_says_where_and_agrees_with_the_cpu(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    options = {"batch_size": 8, "learning_rate": 3e-3, "budget": RunBudget(max_steps=8)}
    on_gpu = train_proxy(spec_of(tiny_llama, instruction_jsonl, precision="bf16"), device="cuda", **options)
    on_cpu = train_proxy(spec_of(tiny_llama, instruction_jsonl), device="cpu", **options)
    assert on_gpu.status == RunStatus.SUCCESS and on_gpu.config.device.startswith("cuda")
    assert on_gpu.config.precision == "bf16"
    assert on_gpu.eval_loss == pytest.approx(on_cpu.eval_loss, rel=0.03)  # bf16's rounding, 8 steps in


def test_lambda_max_on_cuda_is_the_cpus(tiny_llama: Path, instruction_jsonl: Path) -> None:
    spec = spec_of(tiny_llama, instruction_jsonl)
    modules = ["layers.0.self_attn.q_proj", "layers.1.self_attn.v_proj"]
    on_gpu = probe_spec(spec, modules=modules, device="cuda", samples=8, tol=1e-4)
    on_cpu = probe_spec(spec, modules=modules, device="cpu", samples=8, tol=1e-4)
    for gpu, cpu in zip(on_gpu.modules, on_cpu.modules, strict=True):
        assert gpu.eigenvalue == pytest.approx(cpu.eigenvalue, rel=1e-3)


def test_a_whole_study_runs_on_the_gpu(tiny_llama: Path, instruction_jsonl: Path) -> None:
    spec = parse_spec(
        make_spec(
            tiny_llama,
            instruction_jsonl,
            training={"max_seq_len": 64, "precision": "bf16"},
            batch_sizes=[4, 8],
            lr_range=[1e-4, 1e-1],
            budget={"proxy_seconds": None, "proxy_examples": 1200},
        )
    )
    result = run_study(spec)
    assert isinstance(result.recommendation, Recommendation)
    assert all(run.config.device.startswith("cuda") for run in result.runs)
