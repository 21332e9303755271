"""Hugging Face TrainingArguments / TRL SFTConfig (YAML or JSON).

Keys read: per_device_train_batch_size, gradient_accumulation_steps, learning_rate, num_train_epochs,
max_steps, lr_scheduler_type, warmup_ratio / warmup_steps, optim, adam_beta1/2, adam_epsilon, weight_decay,
max_grad_norm, bf16 / fp16, seed; TRL's model_name_or_path, dataset_name, dataset_text_field, max_length
(max_seq_length), packing, completion_only_loss, assistant_only_loss, loss_type (nll, chunked_nll), and the
adapter as use_peft with lora_r / lora_alpha / lora_dropout / lora_target_modules / use_dora / use_rslora,
or a `peft` section of LoraConfig keys. A local dataset's layout is told from its first record, as TRL does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from advisor.training_configs.common import (
    NOT_SUPERVISED,
    QLORA,
    TRAINER_BATCH_KEYS,
    _adapter,
    _dataset_local,
    _lora_method,
    _put_dataset,
    _refuse_modules_to_save,
    _trainer_arguments,
    _TrainerKeys,
)
from advisor.training_configs.mapped import MappedConfig
from advisor.training_configs.reader import ToolKeys, _Reader

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


# the dataset's layout, as TRL tells it ---------------------------------------------------------------------


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
