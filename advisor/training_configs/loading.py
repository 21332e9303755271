"""Reading a file or a request body: `load_config` parses JSON or YAML, `map_config` maps a decoded config,
and `detect_format` tells the tool by its keys; `PARSERS` names each format's reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from advisor.training_configs.axolotl import _axolotl
from advisor.training_configs.hf_trainer import _hf_trainer
from advisor.training_configs.llama_factory import _llama_factory
from advisor.training_configs.mapped import ConfigError, MappedConfig
from advisor.training_configs.reader import _Reader
from advisor.training_configs.study_spec import _study_spec
from advisor.training_configs.torchtune import _torchtune

FORMATS = ("axolotl", "llama-factory", "hf-trainer", "torchtune", "study-spec")


def load_config(path: str | Path, *, format: str = "auto") -> MappedConfig:
    """Parse `path` (JSON or YAML) in `format`, or whichever supported format its keys show."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(str(path), "file", "not found; pass the path of a training config")
    try:
        text = file.read_text(encoding="utf-8")
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(str(path), "syntax", f"cannot parse: {exc}") from None
    except (UnicodeDecodeError, OSError, RecursionError) as exc:  # a binary file, no permission, deep nesting
        raise ConfigError(str(path), "file", f"cannot read: {type(exc).__name__}: {exc}") from None
    return map_config(data, path=str(path), text=text, format=format, base_dir=file.parent)


def map_config(
    data: Any, *, path: str = "config", text: str = "", format: str = "auto", base_dir: Path | None = None
) -> MappedConfig:
    """Map a decoded config. `text` (the file's) gives annotations their lines; `base_dir` is where
    relative dataset folders (LLaMA-Factory's dataset_dir) are looked up."""
    if not isinstance(data, dict):
        raise ConfigError(path, "top level", "must be a mapping of keys such as learning_rate")
    if format not in ("auto", *FORMATS):
        raise ConfigError(
            path, "format", f"unknown format {format!r}; choose auto or one of {', '.join(FORMATS)}"
        )
    kind = detect_format(data, path) if format == "auto" else format
    reader = _Reader(path, data, text, base_dir or Path.cwd())
    mapped = PARSERS[kind](reader)
    mapped.source = data
    return mapped


def detect_format(data: dict[str, Any], path: str = "config") -> str:
    if isinstance(data.get("optimizer"), dict) and isinstance(data.get("model"), dict):
        return "torchtune"
    if {"micro_batch_size", "adapter", "base_model"} & data.keys():
        return "axolotl"
    if {"finetuning_type", "stage", "lora_rank"} & data.keys():
        return "llama-factory"
    if {"batch_sizes", "lr_range", "budget"} & data.keys() or isinstance(data.get("dataset"), dict):
        return "study-spec"
    if {"per_device_train_batch_size", "model_name_or_path", "dataset_name"} & data.keys():
        return "hf-trainer"
    raise ConfigError(
        path,
        "format",
        "cannot tell the format: expected micro_batch_size (Axolotl), finetuning_type (LLaMA-Factory), "
        "per_device_train_batch_size (Hugging Face / TRL), optimizer.lr (torchtune) or batch_sizes "
        "(a lora-advisor study spec)",
    )


PARSERS = {
    "axolotl": _axolotl,
    "llama-factory": _llama_factory,
    "hf-trainer": _hf_trainer,
    "torchtune": _torchtune,
    "study-spec": _study_spec,
}
