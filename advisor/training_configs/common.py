"""What more than one tool's reader shares: the Hugging Face Trainer's arguments (schedule, AdamW and its
betas, clipping, length, packing, precision, seed) under each tool's key names, the LoRA adapter's options
and variant, the refusal of non-supervised stages, and where a dataset path is resolved and recorded.

Each tool's own default stands in for a key its config leaves out (the Trainer's max_grad_norm of 1.0 and
linear schedule without warm-up), never lora-advisor's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.training_configs.reader import _is_count, _Reader

# The Hugging Face Trainer's names (LLaMA-Factory's too) for the micro-batch, accumulation and LR.
TRAINER_BATCH_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate")
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


def _refuse_stage(r: _Reader, key: str, is_other_stage: Any) -> None:
    value = r.get(key)
    if value is not None and is_other_stage(value):
        raise r.error(
            key, f"{NOT_SUPERVISED} (got {key}: {value!r}); DPO, KTO, PPO and reward models are not tuned"
        )


# what every Hugging Face Trainer-based config shares -------------------------------------------------------


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


# datasets --------------------------------------------------------------------------------------------------


def _dataset_local(r: _Reader, path: str) -> str:
    """A dataset path as written, made absolute when it names a file or folder beside the config."""
    candidate = (r.base_dir / path).expanduser()
    return str(candidate.resolve()) if not Path(path).is_absolute() and candidate.exists() else path


def _put_dataset(r: _Reader, key: str, dataset: dict[str, Any], note: str = "") -> None:
    r.put("dataset", key, dataset, note)
