"""torchtune YAML.

Keys read: model._component_ (a lora_ or qlora_ builder; otherwise full fine-tuning), lora_attn_modules,
apply_lora_to_mlp / apply_lora_to_output, lora_rank, lora_alpha, lora_dropout, use_dora;
tokenizer.max_seq_len; dataset (its builder, source, data_files, packed); batch_size,
gradient_accumulation_steps, epochs, max_steps_per_epoch; optimizer (lr, betas, eps, weight_decay);
lr_scheduler.num_warmup_steps; clip_grad_norm; dtype. torchtune's own defaults stand in for keys left out
(unclipped gradients, the optimizer class's weight decay).
"""

from __future__ import annotations

import math
from typing import Any

from advisor.training_configs.common import NOT_SUPERVISED, QLORA, _dataset_local, _optimizer, _put_dataset
from advisor.training_configs.mapped import ConfigError, MappedConfig
from advisor.training_configs.reader import ToolKeys, _is_count, _Reader

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
