"""Axolotl YAML.

Keys read: base_model, adapter (lora | qlora; none: full fine-tuning), lora_r, lora_alpha, lora_dropout,
lora_target_modules / lora_target_linear, peft_use_dora, peft_use_rslora, peft_init_lora_weights,
loraplus_lr_ratio; datasets (alpaca, completion, chat_template, sharegpt), train_on_inputs, val_set_size;
sequence_len, sample_packing; micro_batch_size, gradient_accumulation_steps or batch_size (micro ×
accumulation), num_epochs, max_steps; optimizer, adam_beta1/2, adam_epsilon, weight_decay, max_grad_norm;
lr_scheduler, warmup_steps / warmup_ratio; bf16 / fp16; load_in_4bit / load_in_8bit; rl and reward_model
(not supervised: refused).
"""

from __future__ import annotations

from advisor.training_configs.common import (
    QLORA,
    _adapter,
    _dataset_local,
    _lora_method,
    _put_dataset,
    _refuse_modules_to_save,
    _refuse_stage,
    _trainer_arguments,
    _TrainerKeys,
)
from advisor.training_configs.mapped import ConfigError, MappedConfig
from advisor.training_configs.reader import ToolKeys, _Reader


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
