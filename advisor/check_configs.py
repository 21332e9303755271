"""Read the batch size, LR and LoRA context out of the training configs people already have.

Formats, told apart by their keys (`detect_format`):

- Axolotl YAML: micro_batch_size, gradient_accumulation_steps, learning_rate, adapter (lora | qlora),
  lora_r, lora_alpha, peft_use_rslora, peft_use_dora, base_model.
- LLaMA-Factory YAML: per_device_train_batch_size, gradient_accumulation_steps, learning_rate,
  finetuning_type, lora_rank (default 8), lora_alpha (default 2 × rank), use_dora, use_rslora,
  pissa_init, model_name_or_path.
- Hugging Face / TRL TrainingArguments, JSON or YAML: per_device_train_batch_size,
  gradient_accumulation_steps, learning_rate, model_name_or_path, and the LoRA as TRL's lora_r /
  lora_alpha / use_dora / use_rslora or a `peft` (or `lora`) section of LoraConfig keys (r, lora_alpha).
- torchtune YAML: batch_size, gradient_accumulation_steps, optimizer.lr, model._component_ with
  lora_rank / lora_alpha / use_dora, checkpointer.checkpoint_dir (the model).
- lora-advisor's own study spec (advisor.specs): the context only; the plan's LR and batch come from
  `--lr` and `--batch-size`.

Devices come from num_processes / world_size / num_devices when a config has them, else 1 (the report
says so; `--devices N` overrides). QLoRA is LoRA on a quantised base: its LR is looked up as "lora".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from advisor.errors import AdvisorError
from advisor.specs import MAX_BATCH_SIZE, MAX_RANK

DEVICE_KEYS = ("num_processes", "world_size", "num_devices")


class ConfigError(AdvisorError):
    """A config that cannot be read; names the file and the key to fix."""

    def __init__(self, path: str, key: str, message: str, *, line: int | None = None) -> None:
        self.path, self.key, self.message, self.line = path, key, message, line
        super().__init__(f"{path}: {key}: {message}")


@dataclass
class Plan:
    """What a config plans: the context to look up and the (effective batch, LR) to judge."""

    path: str
    format: str
    model: str | None
    method: str
    rank: int | None
    alpha: float | None
    micro_batch_size: int | None
    accumulation_steps: int
    devices: int
    learning_rate: float | None
    devices_source: str = "default"  # "default" (1 assumed), "flag", or the config key
    lines: dict[str, int] = field(default_factory=dict)  # plan value → line in the file, for annotations
    keys: dict[str, str] = field(default_factory=dict)  # plan value → the config key it came from

    @property
    def effective_batch_size(self) -> int:
        return (self.micro_batch_size or 0) * self.accumulation_steps * self.devices


def load_plan(path: str | Path) -> Plan:
    """Parse `path` (JSON or YAML) in whichever supported format its keys show."""
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
    if not isinstance(data, dict):
        raise ConfigError(str(path), "top level", "must be a mapping of keys such as learning_rate")
    kind = detect_format(data, str(path))
    plan = PARSERS[kind](_Reader(str(path), data, text))
    return plan


def detect_format(data: dict[str, Any], path: str = "config") -> str:
    if isinstance(data.get("optimizer"), dict) and isinstance(data.get("model"), dict):
        return "torchtune"
    if {"micro_batch_size", "adapter", "base_model"} & data.keys():
        return "axolotl"
    if {"finetuning_type", "stage", "lora_rank"} & data.keys():
        return "llama-factory"
    if {"batch_sizes", "lr_range", "budget"} & data.keys() or isinstance(data.get("dataset"), dict):
        return "study-spec"
    if "per_device_train_batch_size" in data:
        return "hf-trainer"
    raise ConfigError(
        path,
        "format",
        "cannot tell the format: expected micro_batch_size (Axolotl), finetuning_type (LLaMA-Factory), "
        "per_device_train_batch_size (Hugging Face / TRL), optimizer.lr (torchtune) or batch_sizes "
        "(a lora-advisor study spec)",
    )


class _Reader:
    """Typed access to a config's keys; every error names the file, the dotted key and its line."""

    def __init__(self, path: str, data: dict[str, Any], text: str) -> None:
        self.path, self.data, self.text = path, data, text

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def has(self, dotted: str) -> bool:
        return self.get(dotted, _MISSING) is not _MISSING

    def error(self, dotted: str, message: str) -> ConfigError:
        return ConfigError(self.path, dotted, message, line=self.line(dotted))

    def positive_int(
        self, dotted: str, default: int | None = None, *, upper: int = MAX_BATCH_SIZE
    ) -> int | None:
        """A positive integer up to `upper`: batch sizes, accumulation steps and devices by default (their
        product stays a 64-bit integer), ranks up to MAX_RANK."""
        value = self.get(dotted, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= upper:
            raise self.error(dotted, f"must be a positive integer up to {upper} (got {value!r})")
        return value

    def rank(self, dotted: str, default: int | None = None) -> int | None:
        return self.positive_int(dotted, default, upper=MAX_RANK)

    def positive_float(self, dotted: str) -> float | None:
        value = self.get(dotted)
        if value is None:
            return None
        try:  # YAML 1.1 reads `2e-4` (no dot) as a string; accept it as the number it plainly is
            number = float(value)
        except (TypeError, ValueError):
            raise self.error(dotted, f"must be a number such as 2e-4 (got {value!r})") from None
        if isinstance(value, bool) or not number > 0 or number == float("inf"):
            raise self.error(dotted, f"must be a positive number (got {value!r})")
        return number

    def flag(self, dotted: str) -> bool:
        return bool(self.get(dotted, False))

    def line(self, dotted: str) -> int | None:
        """1-based line of `dotted` in the file: each part searched for after its parent's line."""
        lines, start = self.text.splitlines(), 0
        for part in dotted.split("."):
            pattern = re.compile(rf"^\s*-?\s*[\"']?{re.escape(part)}[\"']?\s*:")
            found = next((i for i in range(start, len(lines)) if pattern.search(lines[i])), None)
            if found is None:
                return None
            start = found + 1
        return start

    def plan(self, kind: str, **values: Any) -> Plan:
        keys: dict[str, str] = values.pop("keys")
        devices_key = next((k for k in DEVICE_KEYS if self.has(k)), None)
        devices = self.positive_int(devices_key) if devices_key else 1
        if devices_key:
            keys["devices"] = devices_key
        plan = Plan(
            path=self.path,
            format=kind,
            devices=devices or 1,
            devices_source=devices_key or "default",
            keys=keys,
            **values,
        )
        plan.lines = {name: line for name, key in keys.items() if (line := self.line(key)) is not None}
        return plan


_MISSING = object()


def _axolotl(r: _Reader) -> Plan:
    adapter = str(r.get("adapter") or "")
    if adapter not in ("lora", "qlora"):
        raise r.error("adapter", f"must be lora or qlora for a LoRA check (got {adapter or None!r})")
    method = "dora" if r.flag("peft_use_dora") else "rslora" if r.flag("peft_use_rslora") else "lora"
    return r.plan(
        "axolotl",
        model=r.get("base_model"),
        method=method,
        rank=r.rank("lora_r"),
        alpha=r.positive_float("lora_alpha"),
        micro_batch_size=r.positive_int("micro_batch_size"),
        accumulation_steps=r.positive_int("gradient_accumulation_steps", 1) or 1,
        learning_rate=r.positive_float("learning_rate"),
        keys=_keys("base_model", "lora_r", "lora_alpha", "micro_batch_size", "learning_rate"),
    )


def _llama_factory(r: _Reader) -> Plan:
    kind = str(r.get("finetuning_type") or "lora")
    if kind != "lora":
        raise r.error("finetuning_type", f"must be lora for a LoRA check (got {kind!r})")
    method = (
        "dora"
        if r.flag("use_dora")
        else "rslora"
        if r.flag("use_rslora")
        else "pissa"
        if r.flag("pissa_init")
        else "lora"
    )
    rank = r.rank("lora_rank", 8)  # LLaMA-Factory's defaults: rank 8, alpha 2 × rank
    alpha = r.positive_float("lora_alpha")
    return r.plan(
        "llama-factory",
        model=r.get("model_name_or_path"),
        method=method,
        rank=rank,
        alpha=alpha if alpha is not None else 2.0 * (rank or 8),
        micro_batch_size=r.positive_int("per_device_train_batch_size"),
        accumulation_steps=r.positive_int("gradient_accumulation_steps", 1) or 1,
        learning_rate=r.positive_float("learning_rate"),
        keys=_keys(
            "model_name_or_path", "lora_rank", "lora_alpha", "per_device_train_batch_size", "learning_rate"
        ),
    )


def _hf_trainer(r: _Reader) -> Plan:
    section = next((s for s in ("peft", "lora") if isinstance(r.get(s), dict)), None)
    if section:  # a PEFT LoraConfig: r and lora_alpha default to 8
        rank_key, alpha_key, prefix = f"{section}.r", f"{section}.lora_alpha", f"{section}."
        rank, alpha = r.rank(rank_key, 8), r.positive_float(alpha_key) or 8.0
    else:  # TRL's ModelConfig: lora_r 16, lora_alpha 32
        rank_key, alpha_key, prefix = "lora_r", "lora_alpha", ""
        rank, alpha = r.rank(rank_key, 16), r.positive_float(alpha_key) or 32.0
    dora, rslora = r.flag(f"{prefix}use_dora"), r.flag(f"{prefix}use_rslora")
    return r.plan(
        "hf-trainer",
        model=r.get("model_name_or_path"),
        method="dora" if dora else "rslora" if rslora else "lora",
        rank=rank,
        alpha=alpha,
        micro_batch_size=r.positive_int("per_device_train_batch_size"),
        accumulation_steps=r.positive_int("gradient_accumulation_steps", 1) or 1,
        learning_rate=r.positive_float("learning_rate"),
        keys=_keys("model_name_or_path", rank_key, alpha_key, "per_device_train_batch_size", "learning_rate"),
    )


def _torchtune(r: _Reader) -> Plan:
    component = str(r.get("model._component_") or "")
    if "lora" not in component.rsplit(".", 1)[-1]:
        raise r.error(
            "model._component_",
            f"must be a LoRA model builder such as ...lora_llama3_2_1b (got {component!r})",
        )
    return r.plan(
        "torchtune",
        model=r.get("checkpointer.checkpoint_dir"),
        method="dora" if r.flag("model.use_dora") else "lora",
        rank=r.rank("model.lora_rank"),
        alpha=r.positive_float("model.lora_alpha"),
        micro_batch_size=r.positive_int("batch_size"),
        accumulation_steps=r.positive_int("gradient_accumulation_steps", 1) or 1,
        learning_rate=r.positive_float("optimizer.lr"),
        keys={
            "model": "checkpointer.checkpoint_dir",
            "rank": "model.lora_rank",
            "alpha": "model.lora_alpha",
            "micro_batch_size": "batch_size",
            "learning_rate": "optimizer.lr",
        },
    )


def _study_spec(r: _Reader) -> Plan:
    from advisor.errors import SpecError
    from advisor.specs import parse_spec

    try:
        spec = parse_spec(r.data)
    except SpecError as exc:
        raise r.error(exc.field, exc.describe().split(": ", 1)[-1]) from None
    return r.plan(
        "study-spec",
        model=spec.model,
        method=spec.method,
        rank=spec.rank,
        alpha=spec.alpha,
        micro_batch_size=spec.training.micro_batch_size,
        accumulation_steps=1,
        learning_rate=None,
        keys={"model": "model", "rank": "rank", "alpha": "alpha"},
    )


def _keys(model: str, rank: str, alpha: str, batch: str, lr: str) -> dict[str, str]:
    return {"model": model, "rank": rank, "alpha": alpha, "micro_batch_size": batch, "learning_rate": lr}


PARSERS = {
    "axolotl": _axolotl,
    "llama-factory": _llama_factory,
    "hf-trainer": _hf_trainer,
    "torchtune": _torchtune,
    "study-spec": _study_spec,
}
