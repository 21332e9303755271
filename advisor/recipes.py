"""A fine-tune's recipe: the parts of its training plan that move the best LR (and batch), and how two
recipes differ.

A stored study answers for the recipe its proxies trained. A config planned with another recipe (all
linear layers adapted where the study adapted the attention projections, no clipping where it clipped,
packed where it was not) can have a best LR twice as high or low: on outside tasks, leaving
`target_modules` and `max_grad_norm` at other values moved the pick's LR 2× and cost 1.7% of loss. So
`advisor check` and the lookups compare the recipe, not just the model, method and rank.

Each compared field has a tolerance: a difference within it is the same recipe (a warm-up of 3% vs 4% of
the run does not move LR* measurably; 0% vs 10% does).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from advisor.specs import StrictInput, StudySpec, TrainingSpec

# Tolerances. Relative ones are ratios between the two values; a value within the ratio is "the same".
LENGTH_RATIO = 1.5  # epochs, sequence length: LR* moves with the run's length as a weak power (≈ −0.1…−0.3)
DATASET_SIZE_RATIO = 2.0  # dataset rows vs a study's training split (which is ~90% of them), then ×2
CLIP_RATIO = 1.5  # max_grad_norm 1.0 vs 0.3 clips most steps of a LoRA run; 1.0 vs 1.2 hardly differ
WARMUP_SHARE = 0.02  # warm-up as a share of the run: within 2 points is the same schedule
BETA2_GAP = 0.01  # Adam's β2 0.999 vs 0.95 adapts 50× faster; 0.999 vs 0.998 is the same optimizer


class Recipe(StrictInput):
    """The LR-moving fields of a study spec (`recipe_of`), as the check sends and a study stores them."""

    target_modules: list[str] | Literal["all-linear"] | None = None  # None: PEFT's default
    packing: bool = False
    max_grad_norm: float | None = 1.0  # None: no clipping
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    warmup_steps: int | None = None
    max_seq_len: int = 512
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int | None = None  # the real run's effective batch, which max_steps and warm-up steps count
    betas: tuple[float, float] = (0.9, 0.999)
    dataset_format: str = "instruction"
    train_on_prompt: bool = False
    prompt_template: str = "auto"


def recipe_of(spec: StudySpec) -> Recipe:
    return training_recipe(
        spec.training, spec.target_modules, spec.dataset.format, spec.dataset.train_on_prompt
    )


def training_recipe(
    training: TrainingSpec,
    target_modules: list[str] | str | None,
    dataset_format: str = "instruction",
    train_on_prompt: bool = False,
    prompt_template: str = "auto",
) -> Recipe:
    return Recipe(
        target_modules=sorted(target_modules) if isinstance(target_modules, list) else target_modules,
        packing=training.packing,
        max_grad_norm=training.max_grad_norm,
        lr_scheduler=training.lr_scheduler,
        warmup_ratio=training.warmup_ratio,
        warmup_steps=training.warmup_steps,
        max_seq_len=training.max_seq_len,
        epochs=training.epochs,
        max_steps=training.max_steps,
        batch_size=training.batch_size,
        betas=training.optimizer.betas,
        dataset_format=dataset_format,
        train_on_prompt=train_on_prompt,
        prompt_template=prompt_template,
    )


def stored_recipe(spec: Mapping[str, Any]) -> Recipe | None:
    """The recipe of a stored study's spec; None when the stored spec no longer validates."""
    try:
        return recipe_of(StudySpec.model_validate(dict(spec)))
    except ValidationError:
        return None


def recipe_key(spec: StudySpec, dataset: str | None = None) -> str:
    """A short hash naming "a study of this model, method, adapter, data and recipe": what makes two
    submissions the same study. `dataset` (a fingerprint) stands in for the dataset's path when known."""
    identity = {
        "model": spec.model,
        "revision": spec.revision,
        "method": spec.method,
        "rank": spec.rank,
        "alpha": spec.alpha,
        "scaling": spec.scaling,
        "dataset": dataset or spec.dataset.path,
        "recipe": recipe_of(spec).model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Mismatch:
    """One recipe field on which a plan and the study that answers it differ by more than its tolerance."""

    field: str
    planned: Any
    study: Any

    @property
    def message(self) -> str:
        return f"{self.field}: the config plans {_show(self.planned)}, the study trained {_show(self.study)}"

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "planned": self.planned, "study": self.study, "message": self.message}


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _within_ratio(ratio: float) -> Callable[[Any, Any], bool]:
    def same(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return a is b
        return max(a, b) <= ratio * min(a, b)

    return same


def _equal(a: Any, b: Any) -> bool:
    return bool(a == b)


def _same_betas(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return abs(a[0] - b[0]) <= 0.05 and abs(a[1] - b[1]) <= BETA2_GAP


def _warmup(recipe: Recipe) -> str | float:
    """Warm-up as the tools write it: a share of the run, or steps at the run's batch (compared as steps)."""
    return f"{recipe.warmup_steps} steps" if recipe.warmup_steps is not None else recipe.warmup_ratio


def _same_warmup(a: str | float, b: str | float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= WARMUP_SHARE
    return a == b


def _length(recipe: Recipe) -> str | float:
    if recipe.max_steps is not None:
        return f"{recipe.max_steps} steps at batch {recipe.batch_size}"
    return recipe.epochs


def _same_length(a: str | float, b: str | float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return _within_ratio(LENGTH_RATIO)(a, b)
    return a == b


# field shown → (its value in a recipe, whether two values are the same recipe)
COMPARED: dict[str, tuple[Callable[[Recipe], Any], Callable[[Any, Any], bool]]] = {
    "target_modules": (lambda r: r.target_modules, _equal),
    "packing": (lambda r: r.packing, _equal),
    "max_grad_norm": (lambda r: r.max_grad_norm, _within_ratio(CLIP_RATIO)),
    "lr_scheduler": (lambda r: r.lr_scheduler, _equal),
    "warmup": (_warmup, _same_warmup),
    "max_seq_len": (lambda r: r.max_seq_len, _within_ratio(LENGTH_RATIO)),
    "training_length": (_length, _same_length),
    "optimizer.betas": (lambda r: list(r.betas), lambda a, b: _same_betas(tuple(a), tuple(b))),
    "dataset.format": (lambda r: r.dataset_format, _equal),
    "dataset.train_on_prompt": (lambda r: r.train_on_prompt, _equal),
    "dataset.prompt_template": (lambda r: r.prompt_template, _equal),
}


def mismatches(
    planned: Recipe | None,
    study: Recipe | None,
    *,
    planned_examples: int | None = None,
    study_examples: int | None = None,
) -> list[Mismatch]:
    """Where a planned recipe differs from a study's beyond tolerance; the dataset size too, when both
    are known (rows of the planned data vs the study's training split)."""
    found = []
    if planned is not None and study is not None:
        for name, (value, same) in COMPARED.items():
            a, b = value(planned), value(study)
            if not same(a, b):
                found.append(Mismatch(name, a, b))
    if (
        planned_examples
        and study_examples
        and not _within_ratio(DATASET_SIZE_RATIO)(planned_examples, study_examples)
    ):
        found.append(Mismatch("dataset_size", planned_examples, study_examples))
    return found
