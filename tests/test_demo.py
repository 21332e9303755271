"""`advisor demo`: the README's first step. It writes where the service will look (LORA_ADVISOR_DATA_DIR,
as the service reads it), says what it is doing on stderr, and prints only the spec on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_demo_writes_under_the_services_data_dir_and_reports_progress_on_stderr(tmp_path: Path) -> None:
    data_dir = tmp_path / "service-data"
    model = data_dir / "models" / "tiny-llama"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")  # already pretrained: the test skips the minute of training
    env = {**os.environ, "LORA_ADVISOR_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}

    done = subprocess.run(
        [sys.executable, "-m", "advisor.cli", "demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout)  # stdout is the spec alone: `advisor demo > spec.json` works
    assert spec["model"] == str(model.resolve())
    assert Path(spec["dataset"]["path"]).parent == (data_dir / "datasets").resolve()
    assert Path(spec["dataset"]["path"]).is_file() and not (tmp_path / "data").exists()
    assert "instruction examples" in done.stderr and "already at" in done.stderr
