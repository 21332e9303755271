"""LLaMA-Factory YAML.

Keys read: model_name_or_path, stage (sft, pt; others refused), finetuning_type, lora_rank, lora_alpha,
lora_dropout, lora_target, use_dora, use_rslora, pissa_init, loraplus_lr_ratio, quantization_bit; dataset +
dataset_dir (resolved through dataset_info.json), cutoff_len, packing, train_on_prompt, max_samples,
val_size; and the Hugging Face Trainer's arguments (advisor.training_configs.hf_trainer).
"""

from __future__ import annotations

import json
from typing import Any

from advisor.training_configs.common import (
    QLORA,
    TRAINER_BATCH_KEYS,
    _adapter,
    _lora_method,
    _put_dataset,
    _refuse_modules_to_save,
    _refuse_stage,
    _trainer_arguments,
    _TrainerKeys,
)
from advisor.training_configs.mapped import ConfigError, MappedConfig
from advisor.training_configs.reader import ToolKeys, _Reader


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
