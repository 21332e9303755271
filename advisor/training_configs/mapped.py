"""The shared model of a mapped config: what every tool's reader produces and every caller consumes.

- `MappedConfig`: the study that copies the config's run (`study_spec`, `recipe`), the plan to judge (model,
  method, rank, batch layout, LR), and `report()`, the `mapped_from` an answer and the database carry.
- `MappedField` / `DroppedKey`: each key carried over (with its note) and each key not carried over.
- `ConfigError`: a config that cannot be read or honoured, naming the file, the key and its line.
- `write_back`: what to write into the config, under the tool's own keys, for a recommended (batch, LR).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from advisor.errors import AdvisorError, SpecError
from advisor.method_catalog import METHODS
from advisor.recipes import Recipe, training_recipe
from advisor.specs import StudySpec, TrainingSpec, parse_spec, spec_errors


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
