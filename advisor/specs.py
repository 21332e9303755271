"""The study spec: one pydantic model used as the REST body, the CLI's YAML/JSON input and the stored record.

Field names are a contract that users' scripts rely on: extend, never rename. Unknown fields are
rejected (a typo such as ``lerning_rate`` must not be silently ignored), and every validation message
names the field, the bad value and the fix.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from advisor.errors import SpecError
from advisor.method_catalog import METHODS

DatasetFormat = Literal["text", "instruction", "seq2seq", "chat"]
Scaling = Literal["alpha_over_r", "alpha_over_sqrt_r"]
LrPick = Literal["median", "cautious"]


# Upper bounds on the integers a spec (or a request about a fine-tune) may carry. They sit far above any
# real fine-tune and keep every value storable: SQLite and PostgreSQL hold at most 64-bit integers, and an
# unbounded int once reached the database as a 500 instead of an error naming its field.
MAX_RANK = 65_536  # above the hidden size of any LLM; a rank cannot usefully exceed it
MAX_BATCH_SIZE = 1 << 20  # effective batch (micro-batch × accumulation × devices)
MAX_COUNT = 10**12  # examples, steps, dataset rows
MAX_SEED = 2**31 - 2  # studies train a second seed at seed + 1; numpy takes seeds below 2**32
MAX_NAME_CHARS = 512  # a model's hub id or resolved path, as the database stores it
MAX_REVISION_CHARS = 128  # a hub revision: a branch, a tag or a 40-character commit


def _without_nul(value: Any) -> Any:
    """`value` unchanged; ValueError when a string in it holds a NUL character, which PostgreSQL can store
    neither in text columns nor in JSON (the value would fail there, a 500, instead of here, a 422)."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("NUL characters (\\x00) are not allowed")
    if isinstance(value, list | tuple):
        for item in value:
            _without_nul(item)
    if isinstance(value, dict):
        for key, item in value.items():
            _without_nul(key)
            _without_nul(item)
    return value


class StrictInput(BaseModel):
    """What every model of user input shares (specs here, the API's small request bodies): unknown fields
    are errors; NaN and Infinity, which Python's JSON and YAML parsers accept, mean no field's value; and no
    string may hold a NUL character."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return _without_nul(value)


class _Strict(StrictInput):
    model_config = ConfigDict(validate_assignment=True)


class DatasetSpec(_Strict):
    """Where the data is and how to read it."""

    path: str = Field(
        description="local JSONL/JSON/CSV/parquet/text file, a save_to_disk folder, or a hub id"
    )
    format: DatasetFormat = Field(
        "instruction",
        description="text: plain LM loss; instruction: loss on the response only; seq2seq: source → "
        "target; chat: a list of turns (OpenAI `messages` or ShareGPT `conversations`), loss on the "
        "assistant's turns",
    )
    text_field: str = "text"
    prompt_field: str = "instruction"
    input_field: str | None = Field("input", description="optional extra prompt context (Alpaca's `input`)")
    response_field: str = "output"
    messages_field: str = Field(
        "messages",
        description="chat: the list of turns, each {role, content} (OpenAI) or {from, value} (ShareGPT)",
    )
    prompt_template: Literal["auto", "none"] = Field(
        "auto",
        description="instruction: how the prompt is laid out before the response; auto: the model's chat "
        "template, else an Alpaca-style `### Instruction: … ### Response:` layout; none: prompt and response "
        "joined as written (TRL's prompt/completion datasets)",
    )
    train_on_prompt: bool = Field(
        False,
        description="instruction and chat: take the loss on every token, prompts and user turns included "
        "(TRL's default for plain messages; Axolotl's train_on_inputs; LLaMA-Factory's train_on_prompt)",
    )
    eval_path: str | None = Field(
        None, description="held-out data; when absent a split of `path` is held out"
    )
    eval_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="held-out share when there is no eval_path")
    max_examples: int | None = Field(
        None, gt=0, le=MAX_COUNT, description="deterministic subsample of the training split"
    )
    split: str = Field("train", description="split to read from a hub id or save_to_disk DatasetDict")
    revision: str | None = None

    @field_validator("path")
    @classmethod
    def _path_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("dataset path is empty; give a file, a folder or a hub id")
        return value


class OptimizerSpec(_Strict):
    """The real run's optimizer. Proxies train with AdamW (8-bit and paged AdamW are AdamW to the maths);
    its β2 and ε set how fast the step size adapts, which moves the best LR."""

    name: Literal["adamw"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0, le=1.0)

    @field_validator("betas")
    @classmethod
    def _betas_in_unit_interval(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in value):
            raise ValueError("betas must be two numbers in [0, 1), e.g. [0.9, 0.999]")
        return value


class TrainingSpec(_Strict):
    """The training plan of the user's real run; proxies copy it (schedule shape, sequence length,
    packing, optimizer, clipping) and are scaled to its length."""

    epochs: float = Field(1.0, gt=0, le=100)
    max_steps: int | None = Field(
        None,
        gt=0,
        le=MAX_COUNT,
        description="the real run's optimizer steps at training.batch_size; replaces epochs (as in Hugging "
        "Face's Trainer), so the run sees max_steps × batch_size examples",
    )
    max_seq_len: int = Field(512, ge=8, le=131072)
    packing: bool = Field(
        False,
        description="pack examples into max_seq_len sequences (TRL packing, Axolotl sample_packing), each "
        "attending only to itself (format text: documents joined and cut into blocks); off: one example per "
        "sequence, truncated, as most real runs train",
    )
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)  # arXiv 2602.04998 uses 3% warm-up
    warmup_steps: int | None = Field(
        None,
        ge=0,
        le=MAX_COUNT,
        description="warm-up in the real run's optimizer steps; replaces warmup_ratio (proxies warm up over "
        "the same share of their own length)",
    )
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast applies on CUDA only")
    max_grad_norm: float | None = Field(1.0, gt=0)
    micro_batch_size: int | None = Field(
        None,
        gt=0,
        le=MAX_BATCH_SIZE,
        description="the proxies' micro-batch (memory only, never the maths); None: the largest that fits",
    )
    batch_size: int | None = Field(
        None,
        gt=0,
        le=MAX_BATCH_SIZE,
        description="the real run's effective batch (micro-batch × accumulation × devices); always among the "
        "candidates, and the batch that max_steps counts at",
    )
    device_micro_batch_size: int | None = Field(
        None, gt=0, le=MAX_BATCH_SIZE, description="the real run's micro-batch per device"
    )
    devices: int = Field(1, gt=0, le=MAX_BATCH_SIZE, description="the real run's data-parallel devices")
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _steps_need_their_batch(self) -> TrainingSpec:
        for name in ("max_steps", "warmup_steps"):
            if getattr(self, name) is not None and self.batch_size is None:
                raise ValueError(
                    f"{name} needs training.batch_size, the real run's effective batch that its steps "
                    "are counted at"
                )
        return self

    def real_run_examples(self, n_train: int) -> int:
        """Examples the real run trains on: max_steps × its batch, else epochs over the training split."""
        if self.max_steps is not None and self.batch_size is not None:
            return self.max_steps * self.batch_size
        return max(1, int(self.epochs * n_train))

    def warmup_fraction(self, n_train: int) -> float:
        """The share of the real run spent warming up: warmup_ratio, or warmup_steps over the real run's steps
        at its batch. A proxy warms up over the same share of its own length."""
        if self.warmup_steps is None or self.batch_size is None:
            return self.warmup_ratio
        real_steps = max(1, math.ceil(self.real_run_examples(n_train) / self.batch_size))
        return min(self.warmup_steps / real_steps, 0.99)


class MethodOptions(_Strict):
    """Knobs of individual methods; each is ignored by methods it does not concern."""

    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora_plus_ratio: float = Field(
        16.0, gt=0, description="LoRA+: LR of B = ratio × LR of A (paper default 16)"
    )
    reflora_warmup_steps: int = Field(
        100, ge=1, le=MAX_COUNT, description="RefLoRA: plain steps before refactoring, so B ≠ 0"
    )
    reflora_eps: float = Field(1e-6, gt=0, description="RefLoRA: added to singular values before inverting")
    num_virtual_tokens: int = Field(20, ge=1, le=1024, description="prompt tuning: learned prefix length")


class BudgetSpec(_Strict):
    """Proxy compute a study may spend. Either bound may be left open, not both."""

    proxy_seconds: float | None = Field(900.0, gt=0)
    proxy_examples: int | None = Field(
        None, gt=0, le=MAX_COUNT, description="examples seen, summed over all proxy runs"
    )

    @model_validator(mode="after")
    def _some_bound(self) -> BudgetSpec:
        if self.proxy_seconds is None and self.proxy_examples is None:
            raise ValueError("budget needs proxy_seconds or proxy_examples; an unbounded study never ends")
        return self


class StudySpec(_Strict):
    """A model, a dataset, a method and a training plan: the question the advisor answers."""

    model: str = Field(max_length=MAX_NAME_CHARS, description="hub id, local folder, or a .gguf file")
    revision: str | None = Field(None, max_length=MAX_REVISION_CHARS)
    proxy_model: str | None = Field(
        None,
        max_length=MAX_NAME_CHARS,
        description="smaller sibling of `model` for proxy runs (arXiv 2602.09492); None: the planner decides",
    )
    dataset: DatasetSpec
    method: str = "lora"
    rank: int = 8
    alpha: float | None = Field(None, description="LoRA α; defaults to rank (α = r, as in arXiv 2602.04998)")
    scaling: Scaling | None = Field(None, description="alpha_over_r (LoRA) or alpha_over_sqrt_r (rsLoRA)")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="None: PEFT's default for the architecture"
    )
    method_options: MethodOptions = Field(default_factory=MethodOptions)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    batch_sizes: list[int] | None = Field(
        None,
        description="effective batches to compare; None: derived from the training split, the real "
        "run's epochs or max_steps and its devices (powers of two from the device count up to the largest "
        "batch that leaves the real run enough optimizer steps; `advisor.science.planner.batch_candidates`), "
        "and extended past an edge that B* lands on",
    )
    lr_range: tuple[float, float] = (1e-6, 1e-2)
    lr_pick: LrPick = Field(
        "median",
        description="median: LR*'s estimate at the real run's length; cautious: below it by an amount that "
        "grows with LR*'s uncertainty (the loss rises faster above LR* than below)",
    )
    budget: BudgetSpec = Field(default_factory=BudgetSpec)

    @field_validator("model", "proxy_model")
    @classmethod
    def _model_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("model is empty; give a hub id (org/name), a local folder or a .gguf file")
        return value

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        name = value.strip().lower()
        if name not in METHODS:
            raise ValueError(f"unknown method; choose one of {', '.join(METHODS)}")
        return name

    @field_validator("rank")
    @classmethod
    def _positive_rank(cls, value: int) -> int:
        if not 0 < value <= MAX_RANK:
            raise ValueError(f"rank must be a positive integer such as 8 or 16 (at most {MAX_RANK})")
        return value

    @field_validator("alpha")
    @classmethod
    def _positive_alpha(cls, value: float | None) -> float | None:
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ValueError("alpha must be a positive number (commonly α = r or 2r)")
        return value

    @field_validator("scaling")
    @classmethod
    def _scaling_matches_method(cls, value: Scaling | None, info: ValidationInfo) -> Scaling | None:
        if info.data.get("method") == "rslora" and value == "alpha_over_r":
            raise ValueError("rslora means alpha_over_sqrt_r; use method 'lora' for alpha_over_r")
        return value

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None  # derived once the training split's size is known (the planner)
        if not value or any(not 0 < b <= MAX_BATCH_SIZE for b in value):
            raise ValueError(
                f"batch_sizes must be a non-empty list of positive integers up to {MAX_BATCH_SIZE}, "
                "e.g. [8, 16, 32]"
            )
        return sorted(set(value))

    @field_validator("lr_range")
    @classmethod
    def _lr_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not (0 < low < high and math.isfinite(high)):
            raise ValueError("lr_range must be [low, high] with 0 < low < high, e.g. [1e-6, 1e-2]")
        return value

    @model_validator(mode="after")
    def _resolve_defaults(self) -> StudySpec:
        # Resolve defaults into the record itself, so a stored spec says exactly what ran.
        if self.alpha is None:
            object.__setattr__(self, "alpha", float(self.rank))
        if self.scaling is None:
            object.__setattr__(
                self, "scaling", "alpha_over_sqrt_r" if self.method == "rslora" else "alpha_over_r"
            )
        # The real run's batch is always compared (derived candidates get it where they are derived).
        planned, listed = self.training.batch_size, self.batch_sizes
        if planned is not None and listed is not None and planned not in listed:
            object.__setattr__(self, "batch_sizes", sorted([*listed, planned]))
        return self

    @property
    def lora_scale(self) -> float:
        """s in ΔW = s·B·A: α/r for LoRA, α/√r for rsLoRA."""
        assert self.alpha is not None
        if self.scaling == "alpha_over_sqrt_r":
            return self.alpha / math.sqrt(self.rank)
        return self.alpha / self.rank

    def with_seed(self, seed: int) -> StudySpec:
        """The same spec trained with another seed (adapter init and data order)."""
        return self.model_copy(update={"training": self.training.model_copy(update={"seed": seed})})


def _field_path(location: tuple[int | str, ...]) -> str:
    # pydantic reports model-level validators at the model's own path; "spec" reads better than "".
    return ".".join(str(part) for part in location) or "spec"


def spec_errors(exc: ValidationError) -> list[SpecError]:
    """One SpecError per pydantic error, with the dotted field path clients use."""
    errors = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field; check its spelling against the spec reference in the README"
        errors.append(SpecError(_field_path(error["loc"]), message, value=error.get("input")))
    return errors


def parse_spec(data: Any) -> StudySpec:
    """Validate a decoded spec; raises SpecError naming the first bad field (all are in the message)."""
    if not isinstance(data, dict):
        raise SpecError(
            "spec", "must be a mapping of fields such as model, dataset, method", value=type(data)
        )
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        first, *others = spec_errors(exc)
        first.others = others
        first.args = (first.describe(),)
        raise first from None


def load_spec(path: str | Path) -> StudySpec:
    """Read a spec from a YAML or JSON file."""
    file = Path(path)
    if not file.is_file():
        raise SpecError(
            "spec", "spec file not found", value=str(path), fix="pass the path of a YAML or JSON file"
        )
    try:
        text = file.read_text(encoding="utf-8")
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError("spec", f"cannot parse {file.name}: {exc}") from None
    except (UnicodeDecodeError, OSError, RecursionError) as exc:  # a binary file, no permission, deep nesting
        raise SpecError("spec", f"cannot read {file.name}: {type(exc).__name__}: {exc}") from None
    return parse_spec(data)
