"""What a run records about where it ran, so a result can be trusted and reproduced later."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("lora-advisor", "torch", "transformers", "peft", "numpy")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def git_sha() -> str | None:
    """The commit of this checkout, or None when installed outside a git work tree."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: CUDA kernels run asynchronously, so a clock stopped without a
    sync would stop before the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_meta(device: torch.device, *, model_source: str, model_revision: str | None) -> dict[str, Any]:
    return {
        "versions": {name: _version(name) for name in PACKAGES} | {"python": platform.python_version()},
        "git_sha": git_sha(),
        "device": device_name(device),
        "model_source": model_source,
        "model_revision": model_revision,
    }
