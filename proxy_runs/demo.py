"""Assets for trying lora-advisor on a laptop CPU in minutes: a tiny pretrained Llama and an instruction
dataset, written under the service's data directory (inside its allowed model and dataset roots)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy_runs import synthetic, tiny


def write_demo_assets(data_dir: Path, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write data_dir/models/tiny-llama and data_dir/datasets/tasks.jsonl; return a study spec using them.
    `progress` hears what is being done (pretraining the model takes a minute or two on a laptop CPU)."""
    say = progress or (lambda message: None)
    model_dir = data_dir / "models" / "tiny-llama"
    dataset = data_dir / "datasets" / "tasks.jsonl"
    instructions = synthetic.instruction_records(600, seed=1)
    synthetic.write_jsonl(instructions, dataset)
    say(f"wrote {len(instructions)} instruction examples to {dataset}")
    if (model_dir / "config.json").is_file():
        say(f"the tiny Llama is already at {model_dir}")
    else:
        started = time.perf_counter()
        say("pretraining a tiny Llama on plain text (150 steps; 1-3 minutes on a laptop CPU)...")
        with tempfile.TemporaryDirectory() as scratch:
            text = synthetic.text_records(400, seed=0)
            text_path = synthetic.write_jsonl(text, Path(scratch) / "text.jsonl")
            base = tiny.save_tiny_model(
                Path(scratch) / "base", "llama", synthetic.corpus_of(text + instructions)
            )
            tiny.pretrain_tiny_model(base, text_path, model_dir, steps=150, learning_rate=1e-2)
        say(f"saved it to {model_dir} ({time.perf_counter() - started:.0f} s)")
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
