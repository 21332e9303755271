"""One mapping from the training configs people already have to the study that copies their real run.

`advisor check` (the CI hook), `advisor recommend` and POST /v1/studies all read configs here. A config
is told apart by its keys (`detect_format`) and read by one function per tool:

- **Axolotl** YAML: base_model, adapter (lora | qlora; none: full fine-tuning), lora_r, lora_alpha,
  lora_dropout, lora_target_modules / lora_target_linear, peft_use_dora, peft_use_rslora,
  peft_init_lora_weights, loraplus_lr_ratio; datasets (alpaca, completion, chat_template, sharegpt),
  train_on_inputs, val_set_size; sequence_len, sample_packing; micro_batch_size,
  gradient_accumulation_steps or batch_size (micro × accumulation), num_epochs, max_steps; optimizer,
  adam_beta1/2, adam_epsilon, weight_decay, max_grad_norm; lr_scheduler, warmup_steps / warmup_ratio;
  bf16 / fp16; load_in_4bit / load_in_8bit; rl and reward_model (not supervised: refused).
- **LLaMA-Factory** YAML: model_name_or_path, stage (sft, pt; others refused), finetuning_type,
  lora_rank, lora_alpha, lora_dropout, lora_target, use_dora, use_rslora, pissa_init, loraplus_lr_ratio,
  quantization_bit; dataset + dataset_dir (resolved through dataset_info.json), cutoff_len, packing,
  train_on_prompt, max_samples, val_size; and the Trainer's arguments below.
- **Hugging Face TrainingArguments / TRL SFTConfig** (YAML or JSON): per_device_train_batch_size,
  gradient_accumulation_steps, learning_rate, num_train_epochs, max_steps, lr_scheduler_type,
  warmup_ratio / warmup_steps, optim, adam_beta1/2, adam_epsilon, weight_decay, max_grad_norm, bf16 /
  fp16, seed; TRL's model_name_or_path, dataset_name, dataset_text_field, max_length (max_seq_length),
  packing, completion_only_loss, assistant_only_loss, loss_type (nll, chunked_nll), and the adapter as
  use_peft with lora_r / lora_alpha / lora_dropout / lora_target_modules / use_dora / use_rslora, or a
  `peft` section of LoraConfig keys.
- **torchtune** YAML: model._component_ (a lora_ or qlora_ builder; otherwise full fine-tuning),
  lora_attn_modules, apply_lora_to_mlp / apply_lora_to_output, lora_rank, lora_alpha, lora_dropout,
  use_dora; tokenizer.max_seq_len; dataset (its builder, source, data_files, packed); batch_size,
  gradient_accumulation_steps, epochs, max_steps_per_epoch; optimizer (lr, betas, eps, weight_decay);
  lr_scheduler.num_warmup_steps; clip_grad_norm; dtype.
- **lora-advisor's own study spec** (advisor.specs).

Each tool's own default stands in for a key its config leaves out (the Trainer's max_grad_norm of 1.0 and
linear schedule without warm-up, torchtune's unclipped gradients), never lora-advisor's. Everything the
mapping carried over is listed with the key it came from (`MappedConfig.mapped`), and every key it did not
carry over by name (`MappedConfig.dropped`). A key that would change the best LR or batch and cannot be
honoured (an optimizer other than AdamW, an unknown schedule, a DPO stage, a LoRA without a rank where the
tool has no default) is an error naming it.

Devices come from num_processes / world_size / num_devices, ray_num_workers, a DeepSpeed config's
train_batch_size, or `--devices`; where none says, 1 is assumed and the report says so. Batch keys that
contradict each other (two device counts, a DeepSpeed micro-batch, accumulation or train_batch_size other
than the config's own) are an error naming the key, as the tools themselves refuse them at launch.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import yaml
from pydantic import ValidationError

from advisor.errors import AdvisorError, SpecError
from advisor.method_catalog import METHODS
from advisor.recipes import Recipe, training_recipe
from advisor.specs import MAX_BATCH_SIZE, MAX_RANK, StudySpec, TrainingSpec, parse_spec, spec_errors

FORMATS = ("axolotl", "llama-factory", "hf-trainer", "torchtune", "study-spec")
# The Hugging Face Trainer's names (LLaMA-Factory's too) for the micro-batch, accumulation and LR.
TRAINER_BATCH_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate")
DEVICE_KEYS = ("num_processes", "world_size", "num_devices", "ray_num_workers")
NOT_SUPERVISED = "the advisor tunes supervised fine-tuning only"

QLORA = "QLoRA: a quantised base trained as LoRA on the full-precision model (same LR)"

# Optimizers that are AdamW to the maths: 8-bit and paged states change memory, not the update (to within
# quantisation noise), so their best LR is AdamW's.
ADAMW_OPTIMIZERS = {
    "adamw": "",
    "adamw_torch": "",
    "adamw_torch_fused": "",
    "adamw_hf": "",
    "adamw_apex_fused": "",
    "adam": "Adam with weight decay read as AdamW",
    "adamw_bnb_8bit": "8-bit AdamW trained as AdamW",
    "adamw_8bit": "8-bit AdamW trained as AdamW",
    "paged_adamw_8bit": "paged 8-bit AdamW trained as AdamW",
    "paged_adamw_32bit": "paged AdamW trained as AdamW",
    "paged_adamw": "paged AdamW trained as AdamW",
    "adamw_torch_4bit": "4-bit AdamW trained as AdamW",
    "adamw_torch_8bit": "8-bit AdamW trained as AdamW",
}
# The Trainer's schedule names → the proxies' (None: constant without warm-up, as the Trainer runs it).
SCHEDULERS = {
    "cosine": "cosine",
    "linear": "linear",
    "constant_with_warmup": "constant",
    "constant": None,
}
# torchtune's LoRA module names → the Hugging Face Llama names the proxies' PEFT adapters use.
TORCHTUNE_MODULES = {
    "q_proj": "q_proj",
    "k_proj": "k_proj",
    "v_proj": "v_proj",
    "output_proj": "o_proj",
}
TORCHTUNE_MLP = ["gate_proj", "up_proj", "down_proj"]  # w1, w3, w2
# torchtune's dataset builders that name their data themselves.
TORCHTUNE_DATASETS = {
    "alpaca_dataset": ("tatsu-lab/alpaca", "alpaca"),
    "alpaca_cleaned_dataset": ("yahma/alpaca-cleaned", "alpaca"),
    "slimorca_dataset": ("Open-Orca/SlimOrca-Dedup", "chat"),
}


class ConfigError(AdvisorError):
    """A config that cannot be read or honoured; names the file and the key to fix."""

    def __init__(self, path: str, key: str, message: str, *, line: int | None = None) -> None:
        self.path, self.key, self.message, self.line = path, key, message, line
        super().__init__(f"{path}: {key}: {message}")


@dataclass
class MappedField:
    """One value carried from the config (`key`) to the study (`field`, a dotted spec path, or a plan
    value such as learning_rate); `note` says what was assumed or approximated."""

    key: str
    field: str
    value: Any
    note: str = ""


@dataclass
class DroppedKey:
    key: str
    reason: str


@dataclass
class MappedConfig:
    """What a training config plans: the study that copies its recipe, and the (batch, LR) to judge."""

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
    spec: dict[str, Any] = field(default_factory=dict)  # the study spec's other fields, nested
    lines: dict[str, int] = field(default_factory=dict)  # plan value → line in the file, for annotations
    keys: dict[str, str] = field(default_factory=dict)  # plan value or spec field → the config key
    mapped: list[MappedField] = field(default_factory=list)
    dropped: list[DroppedKey] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dataset_error: ConfigError | None = None  # raised when a study needs the dataset, not by the check
    steps: dict[str, int] = field(default_factory=dict)  # max_steps / warm-up steps under the config's keys
    source: dict[str, Any] = field(default_factory=dict, repr=False)  # the config as decoded
    write_back_keys: tuple[str, str, str] = (
        "learning_rate",
        "micro_batch_size",
        "gradient_accumulation_steps",
    )

    @property
    def effective_batch_size(self) -> int:
        return (self.micro_batch_size or 0) * self.accumulation_steps * self.devices

    def study_spec(self, **overrides: Any) -> StudySpec:
        """The study that copies this config's run; `overrides` are top-level spec fields (batch_sizes,
        budget, lr_range). Raises ConfigError naming the config key when the spec is incomplete or bad."""
        if self.model is None:
            raise self._error("model", "missing; the study needs the model the real run fine-tunes")
        if self.dataset_error is not None:
            raise self.dataset_error
        if "dataset" not in self.spec:
            raise self._error("dataset", "missing; the study needs the real run's training data")
        method = METHODS.get(self.method)
        if self.rank is None and method is not None and method.uses_rank and "rank" not in overrides:
            # The spec's own default (8) would study another adapter than the real run trains.
            raise self._error(
                "rank", f"missing; {self.method} needs the adapter's rank and the tool has no default"
            )
        data = {**copy.deepcopy(self.spec), "model": self.model, "method": self.method, **overrides}
        if self.rank is not None:
            data["rank"] = self.rank
        if self.alpha is not None:
            data["alpha"] = self.alpha
        training = data.setdefault("training", {})
        if self.micro_batch_size is not None:
            training["batch_size"] = self.effective_batch_size
            training["device_micro_batch_size"] = self.micro_batch_size
            training["devices"] = self.devices
        try:
            return parse_spec(data)
        except SpecError as exc:
            raise self._error(exc.field, exc.describe().split(": ", 1)[-1]) from None

    def use_dataset(self, dataset: dict[str, Any], *, source: str) -> None:
        """Study `dataset` (a DatasetSpec's fields) in place of the config's own data, e.g. a copy uploaded
        to the service; the config's dataset error, if any, no longer applies."""
        self.spec["dataset"] = dataset
        self.dataset_error = None
        self.notes.append(f"dataset: {dataset['path']} from the {source}, in place of the config's")

    def recipe(self) -> Recipe:
        """The recipe the config plans (advisor.recipes), readable without its dataset."""
        dataset = self.spec.get("dataset") or {}
        training = dict(self.spec.get("training") or {})
        if self.micro_batch_size is not None:
            training["batch_size"] = self.effective_batch_size
        try:
            return training_recipe(
                TrainingSpec.model_validate(training),
                self.spec.get("target_modules"),
                dataset.get("format", "instruction"),
                bool(dataset.get("train_on_prompt", False)),
                dataset.get("prompt_template", "auto"),
            )
        except ValidationError as exc:
            first = spec_errors(exc)[0]
            raise self._error(f"training.{first.field}", first.describe().split(": ", 1)[-1]) from None

    def report(self) -> dict[str, Any]:
        """`mapped_from` in an answer: the format, each key carried over, approximated or dropped, and the
        real run's batch layout, from which `write_back` is computed (also from a stored report)."""
        return {
            "path": self.path,
            "format": self.format,
            "mapped": [vars(m) for m in self.mapped],
            "dropped": [vars(d) for d in self.dropped],
            "notes": list(self.notes),
            "devices": {"count": self.devices, "source": self.devices_source},
            "batch": {
                "micro_batch_size": self.micro_batch_size,
                "accumulation_steps": self.accumulation_steps,
                "devices": self.devices,
                "keys": list(self.write_back_keys),
                "steps": dict(self.steps),
            },
        }

    def write_back(self, batch_size: int, learning_rate: float) -> dict[str, Any]:
        """What to write into this config for the recommended (effective batch, LR): `write_back`."""
        return write_back(self.report(), batch_size, learning_rate)

    def _error(self, spec_field: str, message: str) -> ConfigError:
        key = self.keys.get(spec_field) or self.keys.get(spec_field.split(".")[0]) or spec_field
        return ConfigError(self.path, key, message, line=self.lines.get(spec_field))


def write_back(report: dict[str, Any], batch_size: int, learning_rate: float) -> dict[str, Any]:
    """The values to write into a mapped config (`report` is `MappedConfig.report()`) for the recommended
    (effective batch, LR), under the tool's own key names: the LR, and a micro-batch × accumulation that
    gives the batch on the run's devices (the config's own micro-batch where it divides, else the largest
    that does). A run planned in steps keeps its examples: max_steps and warm-up steps are rescaled."""
    plan = report["batch"]
    lr_key, micro_key, accumulation_key = plan["keys"]
    values: dict[str, Any] = {lr_key: float(f"{learning_rate:.3g}")}
    notes: list[str] = []
    devices = plan["devices"]
    per_device, remainder = divmod(batch_size, devices)
    if remainder or per_device == 0:
        notes.append(f"batch {batch_size} does not split evenly over {devices} devices")
    elif report["format"] != "study-spec":
        micro = min(plan["micro_batch_size"] or per_device, per_device)
        while per_device % micro:
            micro -= 1
        values[micro_key] = micro
        # Axolotl may give its per-device batch (micro × accumulation), `batch_size`, for the accumulation.
        values[accumulation_key] = per_device if accumulation_key == "batch_size" else per_device // micro
        planned = (plan["micro_batch_size"] or 0) * plan["accumulation_steps"] * devices
        for key, steps in plan["steps"].items():
            if planned:
                values[key] = max(1, round(steps * planned / batch_size))
    return {"format": report["format"], "values": values, "notes": notes}


# reading a file or a request body -------------------------------------------------------------------------


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


_MISSING = object()


class _Reader:
    """Typed access to a config's keys that records what it carried over; every error names the file, the
    dotted key and its line."""

    def __init__(self, path: str, data: dict[str, Any], text: str, base_dir: Path) -> None:
        self.path, self.data, self.text, self.base_dir = path, data, text, base_dir
        self.spec: dict[str, Any] = {}
        self.mapped: list[MappedField] = []
        self.notes: list[str] = []
        self.keys: dict[str, str] = {}
        self.read: set[str] = set()  # top-level keys consumed
        self.steps: dict[str, int] = {}  # config key → step count as written (MappedConfig.steps)

    # raw access ----------------------------------------------------------------------------------------

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        self.read.add(dotted.split(".")[0])
        return node

    def has(self, dotted: str) -> bool:
        return self.get(dotted, _MISSING) is not _MISSING

    def first(self, *keys: str) -> str | None:
        """The first of `keys` the config sets (not null)."""
        return next((k for k in keys if self.get(k) is not None), None)

    def error(self, dotted: str, message: str) -> ConfigError:
        return ConfigError(self.path, dotted, message, line=self.line(dotted))

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

    # typed values ----------------------------------------------------------------------------------------

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

    def number(self, dotted: str, *, low: float = 0.0, strict: bool = True) -> float | None:
        """A finite number above `low` (or at it, when not `strict`)."""
        value = self.get(dotted)
        if value is None:
            return None
        try:  # YAML 1.1 reads `2e-4` (no dot) as a string; accept it as the number it plainly is
            number = float(value)
        except (TypeError, ValueError):
            raise self.error(dotted, f"must be a number such as 2e-4 (got {value!r})") from None
        if isinstance(value, bool) or not math.isfinite(number) or number < low or (strict and number == low):
            bound = f"above {low:g}" if strict else f"at least {low:g}"
            raise self.error(dotted, f"must be a finite number {bound} (got {value!r})")
        return number

    def positive_float(self, dotted: str) -> float | None:
        return self.number(dotted)

    def flag(self, dotted: str) -> bool:
        return bool(self.get(dotted, False))

    # recording -------------------------------------------------------------------------------------------

    def put(self, spec_field: str, key: str, value: Any, note: str = "", *, none_too: bool = False) -> None:
        """Set the dotted `spec_field` of the study to `value`, carried from the config's `key`. None is
        skipped (the key is absent) unless `none_too`: a real None, such as unclipped gradients."""
        if value is None and not none_too:
            return
        node = self.spec
        *parents, leaf = spec_field.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        self.keys[spec_field] = key
        self.mapped.append(MappedField(key, spec_field, value, note))
        if note:
            self.notes.append(f"{key}: {note}")

    def note(self, key: str, text: str) -> None:
        self.notes.append(f"{key}: {text}")

    def put_steps(self, spec_field: str, key: str, steps: int, *, written: int | None = None) -> None:
        """A step count for the study, remembered as the config wrote it (`written`, when the config counts
        otherwise, e.g. per epoch) so that `write_back` can rescale the config's own value."""
        self.put(spec_field, key, steps)
        self.steps[key] = steps if written is None else written

    def mapped_config(self, kind: str, names: ToolKeys, **values: Any) -> MappedConfig:
        """The result, with the plan's values (model, method, rank, alpha, batch, LR) recorded as mapped; the
        model and LR are read under the tool's `names`."""
        keys = names.plan_keys(self)
        write_back_keys = (names.learning_rate, names.micro_batch, names.accumulation)
        values = {
            "model": self.get(names.model),
            "learning_rate": self.positive_float(names.learning_rate),
            **values,
        }
        dataset_error = values.pop("dataset_error", None)
        micro, accumulation = values["micro_batch_size"], values["accumulation_steps"]
        accumulation_key = (write_back_keys or MappedConfig.write_back_keys)[2]
        if accumulation_key == "batch_size":  # Axolotl's per-device batch, in place of accumulation
            accumulation_key = "batch_size ÷ micro_batch_size"
        self.check_deepspeed_layout(
            (keys.get("micro_batch_size", "micro-batch"), micro), (accumulation_key, accumulation)
        )
        devices, devices_source = self.devices(micro * accumulation if micro else None)
        self.check_deepspeed_total(micro, accumulation, devices, devices_source)
        if devices_source != "default":
            keys["devices"] = devices_source
        for name, key in keys.items():
            if (value := {**values, "devices": devices}.get(name)) is not None:
                self.mapped.append(MappedField(key, name, value))
        mapped = MappedConfig(
            path=self.path,
            format=kind,
            devices=devices,
            devices_source=devices_source,
            keys={**self.keys, **keys},
            spec=self.spec,
            mapped=self.mapped,
            notes=self.notes,
            dataset_error=dataset_error,
            steps=self.steps,
            **values,
        )
        mapped.write_back_keys = write_back_keys
        mapped.lines = {
            name: line
            for name, key in mapped.keys.items()
            if not key.startswith("--") and (line := self.line(key))
        }
        mapped.dropped = [DroppedKey(k, _drop_reason(k)) for k in self.data if k not in self.read]
        return mapped

    def devices(self, per_device: int | None) -> tuple[int, str]:
        """(count, where it came from): a launch key, a DeepSpeed config's train_batch_size over the
        `per_device` batch (micro-batch × accumulation), else 1 assumed."""
        given = {k: self.positive_int(k) for k in DEVICE_KEYS if self.get(k) is not None}
        if len(set(given.values())) > 1:  # two launch keys that disagree: either may be the real one
            first, *others = given
            raise self.error(others[0], f"{given[others[0]]} devices contradicts {first}: {given[first]}")
        if given:
            key = next(iter(given))
            return given[key] or 1, key
        if (from_deepspeed := self.deepspeed_devices(per_device)) is not None:
            return from_deepspeed, "deepspeed"
        for launcher in ("deepspeed", "fsdp", "fsdp_config"):
            if self.get(launcher):
                self.note(
                    launcher, "multi-device launch; its device count is not in the config (pass --devices N)"
                )
        return 1, "default"

    def deepspeed_config(self) -> dict[str, Any] | None:
        """The DeepSpeed config, inline or a JSON file beside this one; None when absent or unreadable."""
        config = self.get("deepspeed")
        if isinstance(config, str):
            try:
                config = json.loads((self.base_dir / config).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
        return config if isinstance(config, dict) else None

    def deepspeed_devices(self, per_device: int | None) -> int | None:
        """A DeepSpeed config's train_batch_size over the per-device batch, when it is a number (not "auto")
        and divides; a remainder is left to `check_deepspeed_total` to report."""
        total = (self.deepspeed_config() or {}).get("train_batch_size")
        if not per_device or not _is_count(total) or total % per_device:
            return None
        return int(total // per_device)

    def check_deepspeed_layout(self, micro: tuple[str, int | None], accumulation: tuple[str, int]) -> None:
        """The Trainer refuses a DeepSpeed config whose micro-batch or accumulation (when numbers, not "auto")
        differ from its own arguments (`micro`, `accumulation`: the config's key and value): which one the
        user meant is unknowable, so the contradiction is an error here too, naming the DeepSpeed key."""
        config = self.deepspeed_config()
        if config is None:
            return
        for ds_key, (own_key, own) in (
            ("train_micro_batch_size_per_gpu", micro),
            ("gradient_accumulation_steps", accumulation),
        ):
            value = config.get(ds_key)
            if _is_count(value) and own is not None and value != own:
                raise self.deepspeed_error(ds_key, f"{value} contradicts this config's {own} ({own_key})")

    def check_deepspeed_total(self, micro: int | None, accumulation: int, devices: int, source: str) -> None:
        """DeepSpeed's train_batch_size is micro-batch × accumulation × devices (the Trainer checks it)."""
        total = (self.deepspeed_config() or {}).get("train_batch_size")
        if micro is None or not _is_count(total) or total == micro * accumulation * devices:
            return
        plural = "s" if devices > 1 else ""
        layout = f"{micro} micro × {accumulation} accumulation × {devices} device{plural}"
        where = "assumed" if source == "default" else f"from {source}"
        raise self.deepspeed_error("train_batch_size", f"{total} contradicts {layout} ({where})")

    def deepspeed_error(self, ds_key: str, message: str) -> ConfigError:
        fix = 'set it to "auto" so that the Trainer fills it in, or make the two agree'
        return ConfigError(self.path, f"deepspeed.{ds_key}", f"{message}; {fix}", line=self.line("deepspeed"))


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _drop_reason(key: str) -> str:
    if key in BOOKKEEPING or key.startswith(BOOKKEEPING_PREFIXES):
        return "bookkeeping: does not move the best LR or batch"
    return "not read by lora-advisor; it may change the real run in ways the proxies do not copy"


BOOKKEEPING = {
    "output_dir",
    "overwrite_output_dir",
    "logging_steps",
    "logging_dir",
    "report_to",
    "run_name",
    "do_train",
    "do_eval",
    "plot_loss",
    "overwrite_cache",
    "preprocessing_num_workers",
    "dataloader_num_workers",
    "gradient_checkpointing",
    "flash_attention",
    "sdp_attention",
    "xformers_attention",
    "strict",
    "tokenizer_type",
    "model_type",
    "trust_remote_code",
    "template",
    "special_tokens",
    "chat_template",
    "dataset_prepared_path",
    "output_router_logits",
    "resume_from_checkpoint",
    "ddp_timeout",
    "tf32",
    "compile",
    "device",
    "enable_activation_checkpointing",
    "enable_activation_offloading",
    "profiler",
    "metric_logger",
    "log_every_n_steps",
    "log_peak_memory_stats",
    "recipe_checkpoint",
    "checkpointer",
    "tokenizer",
    "loss",
    "use_peft",
}
BOOKKEEPING_PREFIXES = (
    "save_",
    "eval_",
    "evals_",
    "hub_",
    "push_to_hub",
    "wandb_",
    "mlflow_",
    "logging_",
    "ray_",
)


# what every Hugging Face Trainer-based config shares --------------------------------------------------------


@dataclass
class _TrainerKeys:
    """The key names a Trainer-based tool uses for the shared training arguments, and its defaults."""

    epochs: str = "num_train_epochs"
    scheduler: str = "lr_scheduler_type"
    optimizer: str = "optim"
    seq_len: tuple[str, ...] = ("max_length", "max_seq_length")
    packing: str = "packing"
    default_epochs: float = 3.0
    default_scheduler: str = "linear"
    default_seq_len: int = 1024


def _trainer_arguments(r: _Reader, names: _TrainerKeys) -> None:
    """Schedule, optimizer, clipping, length, packing, precision and seed, under the tool's key names."""
    _run_length(r, names)
    _schedule(r, names)
    _optimizer(r, r.get(names.optimizer), names.optimizer)
    _betas(r, "adam_beta1", "adam_beta2", "adam_epsilon")
    r.put("training.weight_decay", "weight_decay", r.number("weight_decay", strict=False))
    clip = r.number("max_grad_norm", strict=False)  # the Trainer clips at 1.0 unless told; 0 turns it off
    clip_key = "max_grad_norm" if r.has("max_grad_norm") else "(Trainer default)"
    r.put("training.max_grad_norm", clip_key, 1.0 if clip is None else clip or None, none_too=True)
    seq_key = r.first(*names.seq_len)
    seq_len = r.positive_int(seq_key, upper=10**9) if seq_key else names.default_seq_len
    r.put("training.max_seq_len", seq_key or "(tool default)", seq_len)
    r.put(
        "training.packing", names.packing if r.has(names.packing) else "(tool default)", r.flag(names.packing)
    )
    _precision(r)
    seed = r.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        r.put("training.seed", "seed", seed)


def _run_length(r: _Reader, names: _TrainerKeys) -> None:
    steps = r.get("max_steps")
    if _is_count(steps):  # the Trainer's -1 means unset
        r.put_steps("training.max_steps", "max_steps", steps)
    epochs = r.number(names.epochs)
    r.put(
        "training.epochs",
        names.epochs if epochs is not None else "(tool default)",
        epochs or names.default_epochs,
    )


def _schedule(r: _Reader, names: _TrainerKeys) -> None:
    raw = r.get(names.scheduler)
    name = str(raw or names.default_scheduler).lower()
    if name not in SCHEDULERS:
        raise r.error(
            names.scheduler,
            f"schedule {name!r} cannot be copied by the proxies; use one of {', '.join(SCHEDULERS)}",
        )
    key = names.scheduler if raw is not None else "(tool default)"
    shape = SCHEDULERS[name]
    ratio, steps = r.number("warmup_ratio", strict=False), r.number("warmup_steps", strict=False)
    if shape is None:  # the Trainer's "constant" ignores any warm-up setting
        r.put(
            "training.lr_scheduler", key, "constant", "constant schedule: no warm-up, as the Trainer runs it"
        )
        r.put("training.warmup_ratio", key, 0.0)
        return
    r.put("training.lr_scheduler", key, shape)
    # transformers 5 reads a warmup_steps below 1 as a share of the run (and has no warmup_ratio)
    if steps is not None and 0 < steps < 1:
        r.put("training.warmup_ratio", "warmup_steps", steps, "below 1: a share of the run (transformers 5)")
        return
    if steps is not None and steps >= 1:  # a count wins over warmup_ratio, as in the Trainer
        r.put_steps("training.warmup_steps", "warmup_steps", int(steps))
    r.put("training.warmup_ratio", "warmup_ratio" if ratio is not None else "(tool default)", ratio or 0.0)


def _optimizer(r: _Reader, raw: Any, key: str) -> None:
    name = str(raw or "adamw_torch").lower().rsplit(".", 1)[-1]
    name = {"adamw8bit": "adamw_8bit", "pagedadamw8bit": "paged_adamw_8bit", "pagedadamw": "paged_adamw"}.get(
        name, name
    )
    if name not in ADAMW_OPTIMIZERS:
        raise r.error(
            key,
            f"optimizer {raw!r} cannot be copied: the proxies train with AdamW, and another optimizer's best "
            "LR differs (use an AdamW variant, or tune that optimizer without the advisor)",
        )
    r.put(
        "training.optimizer.name",
        key if raw is not None else "(tool default)",
        "adamw",
        ADAMW_OPTIMIZERS[name],
    )


def _betas(r: _Reader, beta1: str, beta2: str, eps: str) -> None:
    b1, b2 = r.number(beta1, strict=False), r.number(beta2, strict=False)
    if b1 is not None or b2 is not None:
        betas = [b1 if b1 is not None else 0.9, b2 if b2 is not None else 0.999]
        r.put("training.optimizer.betas", f"{beta1}, {beta2}", betas)
    r.put("training.optimizer.eps", eps, r.number(eps))


def _precision(r: _Reader) -> None:
    if r.flag("bf16") or str(r.get("bf16")).lower() == "auto":
        r.put("training.precision", "bf16", "bf16")
    elif r.flag("fp16"):
        r.put("training.precision", "fp16", "bf16", "fp16 trained as bf16 autocast (same LR to first order)")


def _adapter(
    r: _Reader,
    *,
    dropout: str,
    targets: str | None,
    all_linear: str | None = None,
    lora_plus: str | None = None,
) -> None:
    """Dropout, target modules (`all_linear`: a flag that targets every linear layer, whatever `targets`
    lists) and the LoRA+ ratio of a LoRA-family adapter."""
    r.put("method_options.dropout", dropout, r.number(dropout, strict=False))
    if all_linear and r.flag(all_linear):
        r.put("target_modules", all_linear, "all-linear")
    elif targets and (value := r.get(targets)) is not None:
        r.put("target_modules", targets, _module_list(r, targets, value))
    if lora_plus and (ratio := r.number(lora_plus)) is not None:
        r.put("method_options.lora_plus_ratio", lora_plus, ratio)


def _module_list(r: _Reader, key: str, value: Any) -> list[str] | str:
    if isinstance(value, str):
        if value.strip().lower() in ("all", "all-linear", "all_linear"):
            return "all-linear"
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise r.error(key, f"must be a list of module names or 'all' (got {value!r})")


def _refuse_modules_to_save(r: _Reader, key: str) -> None:
    if r.get(key):
        raise r.error(
            key,
            "training whole modules beside the adapter (embeddings, lm_head) moves the best LR and is not "
            "copied by the proxies; remove it to get a recommendation",
        )


def _lora_method(
    r: _Reader, *, dora: str, rslora: str, init: str | None = None, lora_plus: str | None = None
) -> str:
    if r.flag(dora):
        return "dora"
    if r.flag(rslora):
        return "rslora"
    if init and (value := r.get(init)) not in (None, False, True, "gaussian"):
        text = str(value).lower()
        if text.startswith("pissa"):
            return "pissa"
        if text == "olora":
            return "olora"
        raise r.error(init, f"initialisation {value!r} is not one the proxies copy (pissa, olora)")
    if init and r.get(init) is True and init.endswith("pissa_init"):
        return "pissa"
    if lora_plus and r.get(lora_plus):
        return "lora_plus"
    return "lora"


# datasets -------------------------------------------------------------------------------------------------


def _dataset_local(r: _Reader, path: str) -> str:
    """A dataset path as written, made absolute when it names a file or folder beside the config."""
    candidate = (r.base_dir / path).expanduser()
    return str(candidate.resolve()) if not Path(path).is_absolute() and candidate.exists() else path


def _first_record(path: str) -> dict[str, Any] | None:
    """The first record of a local JSON/JSONL file, to tell its layout (messages, prompt/completion, text)."""
    file = Path(path)
    try:
        if file.suffix == ".jsonl":
            with file.open(encoding="utf-8") as lines:
                for line in lines:
                    if line.strip():
                        record = json.loads(line)
                        return record if isinstance(record, dict) else None
        if file.suffix == ".json":
            data = json.loads(file.read_text(encoding="utf-8"))
            if isinstance(data, list) and data and isinstance(data[0], dict):
                return data[0]
    except (OSError, ValueError):
        return None
    return None


def _sniffed_dataset(r: _Reader, key: str, path: str, *, train_on_prompt: bool | None) -> dict[str, Any]:
    """TRL tells a dataset's layout by its columns at run time; the same here, from a local file's first
    record (a hub id cannot be read offline: plain text is assumed and said)."""
    record = _first_record(path) or {}
    if "messages" in record or "conversations" in record:
        column = "messages" if "messages" in record else "conversations"
        spec: dict[str, Any] = {"path": path, "format": "chat", "messages_field": column}
    elif "prompt" in record and "completion" in record:
        spec = {  # TRL joins a string prompt and completion as written: no template between them
            "path": path,
            "format": "instruction",
            "prompt_field": "prompt",
            "input_field": None,
            "response_field": "completion",
            "prompt_template": "none",
        }
    elif "instruction" in record and "output" in record:
        spec = {"path": path, "format": "instruction"}
    else:
        text_field = str(r.get("dataset_text_field") or "text")
        spec = {"path": path, "format": "text", "text_field": text_field}
        if not record:
            r.note(key, "layout not readable here (a hub id or another file type): plain text assumed")
    if train_on_prompt is not None and spec["format"] in ("chat", "instruction"):
        spec["train_on_prompt"] = train_on_prompt
    return spec


def _put_dataset(r: _Reader, key: str, dataset: dict[str, Any], note: str = "") -> None:
    r.put("dataset", key, dataset, note)


# Axolotl ------------------------------------------------------------------------------------------------


def _axolotl(r: _Reader) -> MappedConfig:
    _refuse_stage(r, "rl", lambda v: bool(v))
    _refuse_stage(r, "reward_model", lambda v: bool(v))
    _refuse_stage(r, "process_reward_model", lambda v: bool(v))
    adapter = str(r.get("adapter") or "")
    if adapter not in ("", "lora", "qlora"):
        raise r.error(
            "adapter",
            f"must be lora or qlora for a LoRA study, or absent for full fine-tuning (got {adapter!r})",
        )
    method = "full"
    if adapter:
        method = _lora_method(
            r,
            dora="peft_use_dora",
            rslora="peft_use_rslora",
            init="peft_init_lora_weights",
            lora_plus="loraplus_lr_ratio",
        )
        _adapter(
            r,
            dropout="lora_dropout",
            targets="lora_target_modules",
            all_linear="lora_target_linear",
            lora_plus="loraplus_lr_ratio",
        )
        _refuse_modules_to_save(r, "lora_modules_to_save")
        bits = [key for key in ("load_in_4bit", "load_in_8bit") if r.flag(key)]  # both read: neither dropped
        if adapter == "qlora" or bits:
            r.note("adapter" if adapter == "qlora" else bits[0], QLORA)
    _trainer_arguments(
        r,
        _TrainerKeys(
            epochs="num_epochs",
            scheduler="lr_scheduler",
            optimizer="optimizer",
            seq_len=("sequence_len",),
            packing="sample_packing",
            default_epochs=1.0,
            default_scheduler="cosine",
            default_seq_len=512,  # Axolotl's own default sequence_len
        ),
    )
    if not r.has("warmup_steps") and not r.has("warmup_ratio"):  # Axolotl warms up over 3% when unset
        r.put("training.warmup_ratio", "(Axolotl default)", 0.03, "no warm-up set: Axolotl's 3% assumed")
    dataset_error = _axolotl_dataset(r)
    micro, accumulation, accumulation_key = _axolotl_batch(r)
    names = ToolKeys(
        "base_model", "adapter", "lora_r", "lora_alpha", "micro_batch_size", accumulation_key, "learning_rate"
    )
    return r.mapped_config(
        "axolotl",
        names,
        method=method,
        rank=r.rank("lora_r") if adapter else None,
        alpha=r.positive_float("lora_alpha") if adapter else None,
        micro_batch_size=micro,
        accumulation_steps=accumulation,
        dataset_error=dataset_error,
    )


def _axolotl_batch(r: _Reader) -> tuple[int | None, int, str]:
    """(micro-batch, accumulation, the key that gives the accumulation). Axolotl takes two of
    micro_batch_size, gradient_accumulation_steps and batch_size, its per-device batch (micro ×
    accumulation); a batch_size that disagrees with the other two is an error, as it is in Axolotl."""
    micro = r.positive_int("micro_batch_size")
    accumulation = r.positive_int("gradient_accumulation_steps")
    if micro is None or (per_device := r.positive_int("batch_size")) is None:
        return micro, accumulation or 1, "gradient_accumulation_steps"
    if accumulation is not None and micro * accumulation != per_device:
        raise r.error(
            "batch_size",
            f"{per_device} contradicts micro_batch_size × gradient_accumulation_steps = "
            f"{micro} × {accumulation}; set only one of batch_size and gradient_accumulation_steps",
        )
    if per_device % micro:
        raise r.error("batch_size", f"{per_device} is not a multiple of micro_batch_size {micro}")
    return micro, per_device // micro, "gradient_accumulation_steps" if accumulation else "batch_size"


def _axolotl_dataset(r: _Reader) -> ConfigError | None:
    datasets = r.get("datasets")
    if datasets is None:
        return None
    if not isinstance(datasets, list) or len(datasets) != 1 or not isinstance(datasets[0], dict):
        return r.error(
            "datasets", "a study reads one dataset: list exactly one (merge several into one file)"
        )
    entry, key = datasets[0], "datasets.0"
    path = entry.get("data_files") or entry.get("path")
    if isinstance(path, list) and len(path) == 1:
        path = path[0]
    if not isinstance(path, str) or not path:
        return r.error(f"{key}.path", "missing; name the dataset file or hub id")
    path = _dataset_local(r, path)
    kind = entry.get("type", "alpaca")
    train_on_prompt = r.flag("train_on_inputs")
    if isinstance(kind, dict):  # a custom instruction layout: field_instruction, field_input, field_output
        spec = {
            "path": path,
            "format": "instruction",
            "prompt_field": kind.get("field_instruction", "instruction"),
            "input_field": kind.get("field_input"),
            "response_field": kind.get("field_output", "output"),
            "train_on_prompt": train_on_prompt,
        }
    elif kind in ("alpaca", "alpaca_chat", "alpaca_w_system"):
        spec = {"path": path, "format": "instruction", "train_on_prompt": train_on_prompt}
    elif kind == "completion":
        spec = {"path": path, "format": "text", "text_field": entry.get("field", "text")}
    elif kind == "chat_template" or str(kind).startswith("sharegpt"):
        default_column = "messages" if kind == "chat_template" else "conversations"
        column = entry.get("field_messages", default_column)
        roles = entry.get("roles_to_train")
        on_prompt = train_on_prompt or (isinstance(roles, list) and "user" in roles)
        spec = {"path": path, "format": "chat", "messages_field": column, "train_on_prompt": on_prompt}
    else:
        return r.error(
            f"{key}.type",
            f"dataset type {kind!r} is not one the proxies read "
            "(alpaca, completion, chat_template, sharegpt)",
        )
    val = r.number("val_set_size", strict=False)
    if val and 0 < val < 0.5:
        spec["eval_fraction"] = val
    _put_dataset(r, "datasets", spec)
    return None


# LLaMA-Factory -------------------------------------------------------------------------------------------


def _llama_factory(r: _Reader) -> MappedConfig:
    stage = str(r.get("stage") or "sft")
    _refuse_stage(r, "stage", lambda v: str(v) not in ("sft", "pt"))
    kind = str(r.get("finetuning_type") or "lora")
    if kind not in ("lora", "full"):
        raise r.error("finetuning_type", f"must be lora or full (got {kind!r}); freeze tuning is not copied")
    method, rank, alpha = "full", None, None
    if kind == "lora":
        method = _lora_method(
            r, dora="use_dora", rslora="use_rslora", init="pissa_init", lora_plus="loraplus_lr_ratio"
        )
        rank = r.rank("lora_rank", 8)  # LLaMA-Factory's defaults: rank 8, alpha 2 × rank, target "all"
        alpha = r.positive_float("lora_alpha")
        alpha = alpha if alpha is not None else 2.0 * (rank or 8)
        _adapter(r, dropout="lora_dropout", targets="lora_target", lora_plus="loraplus_lr_ratio")
        if "target_modules" not in r.spec:
            r.put("target_modules", "(LLaMA-Factory default)", "all-linear")
        _refuse_modules_to_save(r, "additional_target")
        if r.get("quantization_bit") is not None:
            r.note("quantization_bit", QLORA)
    _trainer_arguments(r, _TrainerKeys(seq_len=("cutoff_len",), default_seq_len=2048))
    if stage == "pt" and not r.has("packing"):  # LLaMA-Factory packs pre-training data by default
        r.put("training.packing", "(LLaMA-Factory default for pt)", True)
    if stage == "sft" and r.flag("packing") and not r.flag("neat_packing"):
        # Its plain packing lets packed examples attend to each other; the proxies keep them apart.
        r.note(
            "packing", "without neat_packing packed examples attend to each other; proxies keep them apart"
        )
    dataset_error = _llama_factory_dataset(r, stage)
    names = ToolKeys("model_name_or_path", "finetuning_type", "lora_rank", "lora_alpha", *TRAINER_BATCH_KEYS)
    return r.mapped_config(
        "llama-factory",
        names,
        method=method,
        rank=rank,
        alpha=alpha,
        micro_batch_size=r.positive_int(names.micro_batch, 8),
        accumulation_steps=r.positive_int(names.accumulation, 1) or 1,
        dataset_error=dataset_error,
    )


def _llama_factory_dataset(r: _Reader, stage: str) -> ConfigError | None:
    names = [n.strip() for n in str(r.get("dataset") or "").split(",") if n.strip()]
    if not names:
        return None
    if len(names) != 1:
        return r.error("dataset", f"a study reads one dataset; got {len(names)} ({', '.join(names)})")
    folder = r.base_dir / str(r.get("dataset_dir") or "data")
    info_file = folder / "dataset_info.json"
    try:
        info = json.loads(info_file.read_text(encoding="utf-8")).get(names[0])
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict):
        return r.error(
            "dataset", f"{names[0]!r} is not described in {info_file}; set dataset_dir to its folder"
        )
    columns = info.get("columns") or {}
    path = str(folder / info["file_name"]) if info.get("file_name") else info.get("hf_hub_url")
    if not path:
        return r.error("dataset", f"{names[0]!r} in {info_file} has neither file_name nor hf_hub_url")
    train_on_prompt = r.flag("train_on_prompt")
    if stage == "pt":
        spec: dict[str, Any] = {"path": path, "format": "text", "text_field": columns.get("prompt", "text")}
    elif info.get("formatting") == "sharegpt":
        spec = {
            "path": path,
            "format": "chat",
            "messages_field": columns.get("messages", "conversations"),
            "train_on_prompt": train_on_prompt,
        }
    else:
        spec = {
            "path": path,
            "format": "instruction",
            "prompt_field": columns.get("prompt", "instruction"),
            "input_field": columns.get("query", "input"),
            "response_field": columns.get("response", "output"),
            "train_on_prompt": train_on_prompt,
        }
    if (samples := r.positive_int("max_samples", upper=10**12)) is not None:
        spec["max_examples"] = samples
    val = r.number("val_size", strict=False)
    if val and 0 < val < 0.5:
        spec["eval_fraction"] = val
    _put_dataset(r, "dataset", spec)
    return None


# Hugging Face TrainingArguments / TRL ---------------------------------------------------------------------

TRL_STAGE_KEYS = {  # keys that only a non-SFT TRL trainer takes
    "max_prompt_length": "DPO",
    "rpo_alpha": "DPO",
    "ref_model_init_kwargs": "DPO",
    "desirable_weight": "KTO",
    "undesirable_weight": "KTO",
    "kl_coef": "PPO",
    "num_ppo_epochs": "PPO",
    "cliprange": "PPO",
    "vf_coef": "PPO",
    "reward_model_path": "PPO",
    "center_rewards_coefficient": "reward modelling",
    "num_generations": "GRPO",
}


# SFTConfig's loss_type values that train plain cross-entropy; DPO, KTO and GRPO configs share the key name.
TRL_SFT_LOSSES = ("nll", "chunked_nll")


def _hf_trainer(r: _Reader) -> MappedConfig:
    for key, stage in TRL_STAGE_KEYS.items():
        if r.has(key):
            raise r.error(key, f"{NOT_SUPERVISED}; {key} belongs to a {stage} config")
    _trl_loss(r)
    section = next((s for s in ("peft", "lora") if isinstance(r.get(s), dict)), None)
    use_peft = r.get("use_peft")  # TRL trains the full model, ignoring lora_*, unless use_peft is true
    adapter = section is not None or bool(use_peft) or (use_peft is None and r.has("lora_r"))
    if section:  # a PEFT LoraConfig: r and lora_alpha default to 8
        rank_key, alpha_key, prefix = f"{section}.r", f"{section}.lora_alpha", f"{section}."
        rank, alpha = r.rank(rank_key, 8), r.positive_float(alpha_key) or 8.0
        _adapter(r, dropout=f"{prefix}lora_dropout", targets=f"{prefix}target_modules")
        _refuse_modules_to_save(r, f"{prefix}modules_to_save")
        method = _lora_method(
            r, dora=f"{prefix}use_dora", rslora=f"{prefix}use_rslora", init=f"{prefix}init_lora_weights"
        )
    elif adapter:  # TRL's ModelConfig: lora_r 16, lora_alpha 32, lora_dropout 0.05
        rank_key, alpha_key = "lora_r", "lora_alpha"
        rank, alpha = r.rank(rank_key, 16), r.positive_float(alpha_key) or 32.0
        _adapter(r, dropout="lora_dropout", targets="lora_target_modules")
        if "method_options" not in r.spec:
            r.put("method_options.dropout", "(TRL default)", 0.05)
        _refuse_modules_to_save(r, "lora_modules_to_save")
        method = _lora_method(r, dora="use_dora", rslora="use_rslora")
    else:
        rank_key, alpha_key, rank, alpha, method = "lora_r", "lora_alpha", None, None, "full"
        if use_peft is not None and "lora_r" in r.data:  # said, not read: lora_r stays listed as dropped
            r.note("use_peft", "false: TRL trains the full model and ignores lora_r")
    if bits := [key for key in ("load_in_4bit", "load_in_8bit") if r.flag(key)]:  # both read: neither dropped
        r.note(bits[0], QLORA)
    _trainer_arguments(r, _TrainerKeys())
    dataset_key = r.first("dataset_name", "train_file", "dataset")
    if dataset_key:
        path = _dataset_local(r, str(r.get(dataset_key)))
        completion_only = r.get("completion_only_loss")
        assistant_only = r.flag("assistant_only_loss")
        record = _first_record(path) or {}
        chat = "messages" in record or "conversations" in record
        on_prompt = not assistant_only if chat else completion_only is False
        _put_dataset(r, dataset_key, _sniffed_dataset(r, dataset_key, path, train_on_prompt=on_prompt))
    method_key = section or ("use_peft" if r.has("use_peft") else rank_key)
    names = ToolKeys("model_name_or_path", method_key, rank_key, alpha_key, *TRAINER_BATCH_KEYS)
    return r.mapped_config(
        "hf-trainer",
        names,
        method=method,
        rank=rank,
        alpha=alpha,
        micro_batch_size=r.positive_int(names.micro_batch, 8),
        accumulation_steps=r.positive_int(names.accumulation, 1) or 1,
    )


def _trl_loss(r: _Reader) -> None:
    loss = r.get("loss_type")
    if loss is None or str(loss).lower() in TRL_SFT_LOSSES:
        return
    if str(loss).lower() == "dft":
        raise r.error(
            "loss_type",
            "DFT weights each token's loss by its probability, which moves the best LR; the proxies train "
            f"plain cross-entropy (loss_type one of {', '.join(TRL_SFT_LOSSES)})",
        )
    raise r.error(
        "loss_type", f"{NOT_SUPERVISED}; loss_type {loss!r} belongs to a DPO or other preference config"
    )


# torchtune ------------------------------------------------------------------------------------------------


def _torchtune(r: _Reader) -> MappedConfig:
    loss = str(r.get("loss._component_") or "")
    if "rlhf" in loss or "DPO" in loss or "PPO" in loss:
        raise r.error("loss._component_", f"{NOT_SUPERVISED} (got {loss})")
    builder = str(r.get("model._component_") or "").rsplit(".", 1)[-1]
    lora = builder.startswith(("lora_", "qlora_"))
    method = "dora" if lora and r.flag("model.use_dora") else "lora" if lora else "full"
    if lora:
        _torchtune_targets(r)
        r.put("method_options.dropout", "model.lora_dropout", r.number("model.lora_dropout", strict=False))
        if builder.startswith("qlora_"):
            r.note("model._component_", QLORA)
    _torchtune_training(r)
    steps_per_epoch = r.positive_int("max_steps_per_epoch", upper=10**12)
    epochs = r.number("epochs") or 1.0
    r.put("training.epochs", "epochs", epochs)
    if steps_per_epoch is not None:  # a cap per epoch; write_back rescales the cap itself
        total = math.ceil(steps_per_epoch * epochs)
        r.put_steps("training.max_steps", "max_steps_per_epoch", total, written=steps_per_epoch)
    dataset_error = _torchtune_dataset(r)
    r.note("devices", "torchtune takes its device count from `tune run --nproc_per_node`: pass --devices N")
    names = ToolKeys(
        "checkpointer.checkpoint_dir",
        "model._component_",
        "model.lora_rank",
        "model.lora_alpha",
        "batch_size",
        "gradient_accumulation_steps",
        "optimizer.lr",
    )
    return r.mapped_config(
        "torchtune",
        names,
        method=method,
        rank=r.rank(names.rank) if lora else None,
        alpha=r.positive_float(names.alpha) if lora else None,
        micro_batch_size=r.positive_int(names.micro_batch),
        accumulation_steps=r.positive_int(names.accumulation, 1) or 1,
        dataset_error=dataset_error,
    )


def _torchtune_targets(r: _Reader) -> None:
    attention = r.get("model.lora_attn_modules") or []
    unknown = [m for m in attention if m not in TORCHTUNE_MODULES]
    if unknown:
        raise r.error(
            "model.lora_attn_modules",
            f"unknown module(s) {unknown}; torchtune names q_proj, k_proj, v_proj, output_proj",
        )
    modules = [TORCHTUNE_MODULES[m] for m in attention]
    if r.flag("model.apply_lora_to_mlp"):
        modules += TORCHTUNE_MLP
    if r.flag("model.apply_lora_to_output"):
        modules.append("lm_head")
    if modules:
        r.put(
            "target_modules",
            "model.lora_attn_modules",
            modules,
            "torchtune's module names as Hugging Face Llama's",
        )


def _torchtune_training(r: _Reader) -> None:
    component = str(r.get("optimizer._component_") or "torch.optim.AdamW")
    _optimizer(r, component, "optimizer._component_")
    betas = r.get("optimizer.betas")
    if isinstance(betas, list) and len(betas) == 2:
        r.put("training.optimizer.betas", "optimizer.betas", [float(b) for b in betas])
    r.put("training.optimizer.eps", "optimizer.eps", r.number("optimizer.eps"))
    decay = r.number("optimizer.weight_decay", strict=False)
    if decay is not None:
        r.put("training.weight_decay", "optimizer.weight_decay", decay)
    else:  # the optimizer class's own default: 0.01 for torch's and bitsandbytes' AdamW, 0 for Adam
        default = 0.0 if component.rsplit(".", 1)[-1].lower() == "adam" else 0.01
        r.put("training.weight_decay", f"({component} default)", default)
    clip = r.number("clip_grad_norm")  # torchtune leaves gradients unclipped unless told
    r.put("training.max_grad_norm", "clip_grad_norm", clip, "" if clip else "unset: unclipped", none_too=True)
    scheduler = str(r.get("lr_scheduler._component_") or "").rsplit(".", 1)[-1]
    shapes = {"get_cosine_schedule_with_warmup": "cosine", "get_linear_schedule_with_warmup": "linear"}
    if scheduler and scheduler not in shapes:
        raise r.error(
            "lr_scheduler._component_",
            f"schedule {scheduler!r} cannot be copied (cosine or linear with warm-up)",
        )
    r.put(
        "training.lr_scheduler",
        "lr_scheduler._component_" if scheduler else "(no scheduler)",
        shapes.get(scheduler, "constant"),
    )
    r.put("training.warmup_ratio", "lr_scheduler", 0.0)
    warmup = r.get("lr_scheduler.num_warmup_steps")
    if _is_count(warmup):
        r.put_steps("training.warmup_steps", "lr_scheduler.num_warmup_steps", warmup)
    seq_len = r.positive_int("tokenizer.max_seq_len", upper=10**9)
    if seq_len is None:
        r.note("tokenizer.max_seq_len", "unset (no truncation): the proxies truncate at 2048 tokens")
    r.put("training.max_seq_len", "tokenizer.max_seq_len", seq_len or 2048)
    dtype = str(r.get("dtype") or "bf16")
    r.put("training.precision", "dtype", "fp32" if dtype == "fp32" else "bf16")
    seed = r.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        r.put("training.seed", "seed", seed)


def _torchtune_dataset(r: _Reader) -> ConfigError | None:
    if not isinstance(r.get("dataset"), dict):
        return (
            None
            if r.get("dataset") is None
            else r.error("dataset", "one dataset builder: a list is not copied")
        )
    builder = str(r.get("dataset._component_") or "").rsplit(".", 1)[-1]
    r.put("training.packing", "dataset.packed", r.flag("dataset.packed"))
    train_on_prompt = r.flag("dataset.train_on_input")
    files, source = r.get("dataset.data_files"), r.get("dataset.source")
    path = (
        files
        if isinstance(files, str)
        else source
        if isinstance(source, str) and source not in ("json", "csv", "parquet", "text")
        else None
    )
    if builder in TORCHTUNE_DATASETS:
        hub_id, layout = TORCHTUNE_DATASETS[builder]
        path = path or hub_id
        kind = layout
    elif builder in ("instruct_dataset", "chat_dataset", "text_completion_dataset"):
        kind = {"instruct_dataset": "instruction", "chat_dataset": "chat", "text_completion_dataset": "text"}[
            builder
        ]
    else:
        return r.error("dataset._component_", f"dataset builder {builder!r} is not one the proxies read")
    if not path:
        return r.error(
            "dataset.data_files", "missing; name the dataset file (source: json + data_files) or hub id"
        )
    path = _dataset_local(r, path)
    columns = r.get("dataset.column_map") or {}  # torchtune's column name → the dataset's
    if kind == "alpaca":  # the Alpaca builders read instruction, input and output
        spec: dict[str, Any] = {
            "path": path,
            "format": "instruction",
            "prompt_field": columns.get("instruction", "instruction"),
            "input_field": columns.get("input", "input"),
            "response_field": columns.get("output", "output"),
            "train_on_prompt": train_on_prompt,
        }
    elif kind == "instruction":  # instruct_dataset reads one prompt column, "input", and "output"
        spec = {
            "path": path,
            "format": "instruction",
            "prompt_field": columns.get("input", "input"),
            "input_field": None,
            "response_field": columns.get("output", "output"),
            "train_on_prompt": train_on_prompt,
        }
    elif kind == "chat":
        column = (
            r.get("dataset.conversation_column")
            or columns.get("messages")
            or ("messages" if r.get("dataset.conversation_style") == "openai" else "conversations")
        )
        spec = {"path": path, "format": "chat", "messages_field": column, "train_on_prompt": train_on_prompt}
    else:
        spec = {"path": path, "format": "text", "text_field": r.get("dataset.column") or "text"}
    _put_dataset(r, "dataset", spec)
    return None


# lora-advisor's own spec ---------------------------------------------------------------------------------


def _study_spec(r: _Reader) -> MappedConfig:
    try:
        spec = parse_spec(r.data)
    except SpecError as exc:
        raise r.error(exc.field, exc.describe().split(": ", 1)[-1]) from None
    r.read.update(r.data)
    r.spec = spec.model_dump(mode="json", exclude={"model", "method", "rank", "alpha"})
    # A spec plans no LR; its batch is written back as batch_sizes' training.batch_size.
    names = ToolKeys(
        "model", "method", "rank", "alpha", "training.device_micro_batch_size", "-", "learning_rate"
    )
    return r.mapped_config(
        "study-spec",
        names,
        model=spec.model,
        method=spec.method,
        rank=spec.rank,
        alpha=spec.alpha,
        micro_batch_size=spec.training.device_micro_batch_size,
        accumulation_steps=1,
        learning_rate=None,
    )


# shared ---------------------------------------------------------------------------------------------------


def _refuse_stage(r: _Reader, key: str, is_other_stage: Any) -> None:
    value = r.get(key)
    if value is not None and is_other_stage(value):
        raise r.error(
            key, f"{NOT_SUPERVISED} (got {key}: {value!r}); DPO, KTO, PPO and reward models are not tuned"
        )


@dataclass(frozen=True)
class ToolKeys:
    """A tool's names for the plan's values: where the model, adapter, batch layout and LR are read, and
    where the recommended LR, micro-batch and accumulation are written back."""

    model: str
    method: str
    rank: str
    alpha: str
    micro_batch: str
    accumulation: str
    learning_rate: str

    def plan_keys(self, r: _Reader) -> dict[str, str]:
        """Plan value → the config key that gives it; a key the config leaves out gives the tool's default."""
        defaulted = {"method": self.method, "accumulation_steps": self.accumulation}
        return {
            **{name: key if r.has(key) else "(tool default)" for name, key in defaulted.items()},
            "model": self.model,
            "rank": self.rank,
            "alpha": self.alpha,
            "micro_batch_size": self.micro_batch,
            "learning_rate": self.learning_rate,
        }


PARSERS = {
    "axolotl": _axolotl,
    "llama-factory": _llama_factory,
    "hf-trainer": _hf_trainer,
    "torchtune": _torchtune,
    "study-spec": _study_spec,
}
