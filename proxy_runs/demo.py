"""Assets for trying lora-advisor on a laptop CPU in minutes: a tiny pretrained Llama and an instruction
dataset, written under the service's data directory (inside its allowed model and dataset roots)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from proxy_runs import synthetic, tiny


def write_demo_assets(data_dir: Path) -> dict[str, Any]:
    """Write data_dir/models/tiny-llama and data_dir/datasets/tasks.jsonl; return a study spec using them."""
    model_dir = data_dir / "models" / "tiny-llama"
    dataset = data_dir / "datasets" / "tasks.jsonl"
    instructions = synthetic.instruction_records(600, seed=1)
    synthetic.write_jsonl(instructions, dataset)
    if not (model_dir / "config.json").is_file():
        with tempfile.TemporaryDirectory() as scratch:
            text = synthetic.text_records(400, seed=0)
            text_path = synthetic.write_jsonl(text, Path(scratch) / "text.jsonl")
            base = tiny.save_tiny_model(
                Path(scratch) / "base", "llama", synthetic.corpus_of(text + instructions)
            )
            tiny.pretrain_tiny_model(base, text_path, model_dir, steps=150, learning_rate=1e-2)
    return {
        "model": str(model_dir.resolve()),
        "dataset": {"path": str(dataset.resolve())},
        "method": "lora",
        "rank": 8,
        "training": {"max_seq_len": 64, "epochs": 1},
        "batch_sizes": [4, 8, 16, 32],
        # A model this small (hidden 32, 150 steps of pretraining) trains best at LRs of 1e-2 and above,
        # past the default range's 1e-2 ceiling; real models want the default.
        "lr_range": [1e-3, 3e-1],
        "budget": {"proxy_seconds": 120},
    }
