"""Reading a decoded config: `_Reader`, typed access to its keys that records what was carried over, and
`ToolKeys`, a tool's names for the plan's values.

Every error names the file, the dotted key and its line. `_Reader.mapped_config` assembles the
`MappedConfig` a tool's reader returns: the plan's values recorded as mapped, the keys left unread listed as
dropped (bookkeeping or not), and the device count.

Devices come from num_processes / world_size / num_devices, ray_num_workers, a DeepSpeed config's
train_batch_size, or `--devices`; where none says, 1 is assumed and the report says so. Batch keys that
contradict each other (two device counts, a DeepSpeed micro-batch, accumulation or train_batch_size other
than the config's own) are an error naming the key, as the tools themselves refuse them at launch.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from advisor.specs import MAX_BATCH_SIZE, MAX_RANK
from advisor.training_configs.mapped import ConfigError, DroppedKey, MappedConfig, MappedField

DEVICE_KEYS = ("num_processes", "world_size", "num_devices", "ray_num_workers")

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
