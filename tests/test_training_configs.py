"""`advisor.training_configs`: each tool's config, shaped like the tool's own examples, maps to the study
that copies its run, field by field; each tool's default stands in for a key left out; a key that would change
the answer and cannot be honoured is an error naming it; `write_back` answers in the tool's own keys.

`tests/test_check.py` covers format detection and the plan the CI check reads; this file covers the study.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from advisor.science.planner import batch_candidates
from advisor.specs import StudySpec
from advisor.training_configs import ConfigError, MappedConfig, load_config

BOOKKEEPING = "bookkeeping: does not move the best LR or batch"
NOT_READ = "not read by lora-advisor; it may change the real run in ways the proxies do not copy"
QLORA = "QLoRA: a quantised base trained as LoRA on the full-precision model (same LR)"


def load(folder: Path, name: str, text: str, **kwargs: Any) -> MappedConfig:
    """Write `text` to `folder/name` and map it, as `advisor check` or `advisor recommend` would."""
    (folder / name).write_text(text, encoding="utf-8")
    return load_config(folder / name, **kwargs)


def write_records(folder: Path, name: str, records: list[dict[str, Any]]) -> str:
    """A local dataset file; its first record is what TRL-style layout detection reads."""
    file = folder / name
    if name.endswith(".jsonl"):
        file.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        file.write_text(json.dumps(records), encoding="utf-8")
    return str(file.resolve())


def sources(plan: MappedConfig) -> dict[str, str]:
    """Study field (or plan value) → the config key it was carried from."""
    return {m.field: m.key for m in plan.mapped}


def dropped(plan: MappedConfig) -> dict[str, str]:
    return {d.key: d.reason for d in plan.dropped}


def config_error(call: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        call()
    return caught.value


# Axolotl -----------------------------------------------------------------------------------------------

AXOLOTL_LORA = """\
base_model: NousResearch/Llama-3.2-1B
load_in_8bit: true
adapter: lora
lora_r: 16
lora_alpha: 32
lora_dropout: 0.05
lora_target_modules:
  - q_proj
  - v_proj
  - k_proj
  - o_proj
datasets:
  - path: teknium/GPT4-LLM-Cleaned
    type: alpaca
val_set_size: 0.05
output_dir: ./outputs/lora-out
sequence_len: 4096
sample_packing: false
micro_batch_size: 2
gradient_accumulation_steps: 4
num_epochs: 4
optimizer: adamw_8bit
lr_scheduler: cosine
learning_rate: 0.0002
weight_decay: 0.01
warmup_ratio: 0.1
bf16: auto
gradient_checkpointing: true
logging_steps: 1
flash_attention: true
wandb_project: llama-lora
neftune_noise_alpha: 5
"""

AXOLOTL_QLORA = """\
base_model: NousResearch/Meta-Llama-3.1-8B
load_in_4bit: true
adapter: qlora
lora_r: 32
lora_alpha: 16
lora_dropout: 0.05
lora_target_linear: true
chat_template: llama3
datasets:
  - path: fozziethebeat/alpaca_messages_2k_test
    type: chat_template
    field_messages: conversation
    roles_to_train: [assistant]
train_on_inputs: false
sequence_len: 2048
sample_packing: true
micro_batch_size: 2
gradient_accumulation_steps: 4
max_steps: 200
optimizer: paged_adamw_8bit
adam_beta2: 0.95
adam_epsilon: 1.0e-5
max_grad_norm: 0.0
lr_scheduler: linear
learning_rate: 0.0002
warmup_steps: 12
bf16: true
output_dir: ./outputs/qlora-out
"""


def test_an_axolotl_lora_config_maps_to_its_study_field_by_field(tmp_path: Path) -> None:
    plan = load(tmp_path, "lora.yml", AXOLOTL_LORA)
    spec = plan.study_spec()

    assert (plan.format, plan.model, plan.method, plan.rank, plan.alpha) == (
        "axolotl",
        "NousResearch/Llama-3.2-1B",
        "lora",
        16,
        32.0,
    )
    assert (spec.model, spec.method, spec.rank, spec.alpha) == ("NousResearch/Llama-3.2-1B", "lora", 16, 32.0)
    assert spec.target_modules == ["q_proj", "v_proj", "k_proj", "o_proj"]
    assert spec.method_options.dropout == 0.05
    assert (spec.dataset.path, spec.dataset.format) == ("teknium/GPT4-LLM-Cleaned", "instruction")
    assert (spec.dataset.prompt_field, spec.dataset.input_field, spec.dataset.response_field) == (
        "instruction",
        "input",
        "output",
    )
    assert spec.dataset.train_on_prompt is False  # train_on_inputs unset: Axolotl masks the prompt
    assert spec.dataset.eval_fraction == 0.05
    training = spec.training
    assert (training.max_seq_len, training.packing, training.epochs, training.max_steps) == (
        4096,
        False,
        4.0,
        None,
    )
    assert (training.lr_scheduler, training.warmup_ratio, training.warmup_steps) == ("cosine", 0.1, None)
    assert (training.optimizer.name, training.optimizer.betas, training.optimizer.eps) == (
        "adamw",
        (0.9, 0.999),
        1e-8,
    )
    assert (training.weight_decay, training.max_grad_norm, training.precision) == (0.01, 1.0, "bf16")
    assert (training.batch_size, training.device_micro_batch_size, training.devices) == (8, 2, 1)
    assert spec.batch_sizes is None  # derived where the training split's size is known, with the real batch:
    assert 8 in batch_candidates(spec, n_train=1_000).sizes


def test_an_axolotl_lora_config_says_where_each_value_came_from(tmp_path: Path) -> None:
    plan = load(tmp_path, "lora.yml", AXOLOTL_LORA)

    assert sources(plan) == {
        "method_options.dropout": "lora_dropout",
        "target_modules": "lora_target_modules",
        "training.epochs": "num_epochs",
        "training.lr_scheduler": "lr_scheduler",
        "training.warmup_ratio": "warmup_ratio",
        "training.optimizer.name": "optimizer",
        "training.weight_decay": "weight_decay",
        "training.max_grad_norm": "(Trainer default)",
        "training.max_seq_len": "sequence_len",
        "training.packing": "sample_packing",
        "training.precision": "bf16",
        "dataset": "datasets",
        "method": "adapter",
        "accumulation_steps": "gradient_accumulation_steps",
        "model": "base_model",
        "rank": "lora_r",
        "alpha": "lora_alpha",
        "micro_batch_size": "micro_batch_size",
        "learning_rate": "learning_rate",
    }
    assert "optimizer: 8-bit AdamW trained as AdamW" in plan.notes
    assert f"load_in_8bit: {QLORA}" in plan.notes  # an 8-bit base is read, not dropped


def test_report_lists_every_unread_top_level_key_as_dropped_with_its_reason(tmp_path: Path) -> None:
    report = load(tmp_path, "lora.yml", AXOLOTL_LORA).report()

    assert {d["key"]: d["reason"] for d in report["dropped"]} == {
        "output_dir": BOOKKEEPING,
        "gradient_checkpointing": BOOKKEEPING,
        "logging_steps": BOOKKEEPING,
        "flash_attention": BOOKKEEPING,
        "wandb_project": BOOKKEEPING,
        "neftune_noise_alpha": NOT_READ,  # noise on the embeddings may move the best LR: said, not hidden
    }
    assert {"key": "lora_r", "field": "rank", "value": 16, "note": ""} in report["mapped"]
    assert report["devices"] == {"count": 1, "source": "default"}
    assert report["batch"] == {
        "micro_batch_size": 2,
        "accumulation_steps": 4,
        "devices": 1,
        "keys": ["learning_rate", "micro_batch_size", "gradient_accumulation_steps"],
        "steps": {},
    }


def test_an_axolotl_qlora_config_reads_the_4_bit_base_targets_packing_clipping_and_steps(
    tmp_path: Path,
) -> None:
    plan = load(tmp_path, "qlora.yml", AXOLOTL_QLORA)
    spec = plan.study_spec()

    assert (spec.method, spec.rank, spec.alpha, spec.target_modules) == ("lora", 32, 16.0, "all-linear")
    assert sources(plan)["target_modules"] == "lora_target_linear"
    assert f"adapter: {QLORA}" in plan.notes
    assert "load_in_4bit" not in dropped(plan)  # read together with adapter: qlora, never short-circuited
    assert "optimizer: paged 8-bit AdamW trained as AdamW" in plan.notes
    assert (spec.dataset.format, spec.dataset.messages_field, spec.dataset.train_on_prompt) == (
        "chat",
        "conversation",
        False,
    )
    training = spec.training
    assert (training.max_seq_len, training.packing, training.lr_scheduler) == (2048, True, "linear")
    assert (training.max_steps, training.warmup_steps, training.batch_size) == (200, 12, 8)
    assert (training.optimizer.betas, training.optimizer.eps) == ((0.9, 0.95), 1e-5)
    assert training.max_grad_norm is None  # max_grad_norm: 0 turns clipping off in the Trainer
    assert plan.report()["batch"]["steps"] == {"max_steps": 200, "warmup_steps": 12}
    assert dropped(plan) == {"chat_template": BOOKKEEPING, "output_dir": BOOKKEEPING}


def test_axolotl_train_on_inputs_and_roles_to_train_put_the_prompt_into_the_loss(tmp_path: Path) -> None:
    on_inputs = AXOLOTL_QLORA.replace("train_on_inputs: false", "train_on_inputs: true")
    assert load(tmp_path, "a.yml", on_inputs).study_spec().dataset.train_on_prompt is True
    user_too = AXOLOTL_QLORA.replace("roles_to_train: [assistant]", "roles_to_train: [user, assistant]")
    assert load(tmp_path, "b.yml", user_too).study_spec().dataset.train_on_prompt is True


def test_an_axolotl_completion_dataset_is_plain_text_from_its_field(tmp_path: Path) -> None:
    completion = AXOLOTL_LORA.replace("    type: alpaca\n", "    type: completion\n    field: body\n")
    dataset = load(tmp_path, "c.yml", completion).study_spec().dataset
    assert (dataset.format, dataset.text_field) == ("text", "body")


def test_an_axolotl_local_dataset_file_is_resolved_beside_the_config(tmp_path: Path) -> None:
    path = write_records(tmp_path, "train.jsonl", [{"instruction": "i", "input": "", "output": "o"}])
    local = AXOLOTL_LORA.replace("path: teknium/GPT4-LLM-Cleaned", "path: train.jsonl")
    assert load(tmp_path, "local.yml", local).study_spec().dataset.path == path


def test_axolotl_defaults_are_axolotls_own(tmp_path: Path) -> None:
    bare = "base_model: m\nadapter: lora\nlora_r: 8\nmicro_batch_size: 1\nlearning_rate: 1e-4\n"
    bare += "datasets:\n  - path: d\n    type: alpaca\n"
    plan = load(tmp_path, "bare.yml", bare)
    training = plan.study_spec().training

    assert (training.lr_scheduler, training.epochs, training.max_seq_len) == ("cosine", 1.0, 512)
    assert training.warmup_ratio == 0.03 and sources(plan)["training.warmup_ratio"] == "(Axolotl default)"
    assert training.max_grad_norm == 1.0 and plan.accumulation_steps == 1
    assert sources(plan)["accumulation_steps"] == "(tool default)"


def test_an_axolotl_config_without_an_adapter_is_full_fine_tuning(tmp_path: Path) -> None:
    full = AXOLOTL_LORA.replace("adapter: lora\n", "").replace("load_in_8bit: true\n", "")
    plan = load(tmp_path, "full.yml", full)

    assert (plan.method, plan.rank, plan.alpha) == ("full", None, None)
    assert plan.study_spec().method == "full"  # no rank needed: full fine-tuning has none
    assert sources(plan)["method"] == "(tool default)"
    for key in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"):
        assert dropped(plan)[key] == NOT_READ  # adapter keys without an adapter train nothing


def test_axolotl_batch_size_gives_the_accumulation_and_is_written_back_as_batch_size(tmp_path: Path) -> None:
    by_batch = AXOLOTL_LORA.replace("gradient_accumulation_steps: 4", "batch_size: 16")
    plan = load(tmp_path, "bs.yml", by_batch)

    assert (plan.micro_batch_size, plan.accumulation_steps, plan.effective_batch_size) == (2, 8, 16)
    assert sources(plan)["accumulation_steps"] == "batch_size"
    values = plan.write_back(32, 2e-4)["values"]
    assert values == {"learning_rate": 2e-4, "micro_batch_size": 2, "batch_size": 32}


def test_axolotl_rl_is_refused_as_not_supervised(tmp_path: Path) -> None:
    error = config_error(lambda: load(tmp_path, "dpo.yml", AXOLOTL_LORA + "rl: dpo\n"))
    assert error.key == "rl" and "supervised fine-tuning only" in error.message
    assert "'dpo'" in error.message


# LLaMA-Factory -------------------------------------------------------------------------------------------

LLAMA_FACTORY = """\
### model
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
quantization_bit: 4

### dataset
dataset: support_tickets
dataset_dir: data
template: llama3
cutoff_len: 2048
max_samples: 1000
overwrite_cache: true
preprocessing_num_workers: 16
packing: true

### output
output_dir: saves/llama3-8b/lora/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
deepspeed: ds_z2_config.json
"""

DATASET_INFO = {
    "support_tickets": {
        "file_name": "tickets.json",
        "columns": {"prompt": "question", "query": "context", "response": "answer"},
    },
    "support_chats": {
        "file_name": "chats.json",
        "formatting": "sharegpt",
        "columns": {"messages": "dialog"},
    },
}

DEEPSPEED_Z2 = {
    "train_batch_size": 32,  # 1 micro × 8 accumulation × 4 GPUs
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "zero_optimization": {"stage": 2},
}


@pytest.fixture
def llama_factory_dir(tmp_path: Path) -> Path:
    """A LLaMA-Factory working folder: data/dataset_info.json and a DeepSpeed config beside the YAML."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps(DATASET_INFO))
    (tmp_path / "ds_z2_config.json").write_text(json.dumps(DEEPSPEED_Z2))
    return tmp_path


def test_a_llama_factory_sft_config_maps_to_its_study_field_by_field(llama_factory_dir: Path) -> None:
    plan = load(llama_factory_dir, "sft.yaml", LLAMA_FACTORY)
    spec = plan.study_spec()

    assert (plan.format, plan.method, plan.rank, plan.alpha) == ("llama-factory", "lora", 8, 16.0)  # α 2r
    assert spec.target_modules == "all-linear"
    assert sources(plan)["target_modules"] == "lora_target"
    assert f"quantization_bit: {QLORA}" in plan.notes
    dataset = spec.dataset
    assert dataset.path == str(llama_factory_dir / "data" / "tickets.json")
    assert (dataset.format, dataset.prompt_field, dataset.input_field, dataset.response_field) == (
        "instruction",
        "question",
        "context",
        "answer",
    )
    assert (dataset.max_examples, dataset.train_on_prompt) == (1000, False)
    training = spec.training
    assert (training.max_seq_len, training.packing, training.epochs) == (2048, True, 3.0)
    assert (training.lr_scheduler, training.warmup_ratio, training.precision) == ("cosine", 0.1, "bf16")
    assert (plan.devices, plan.devices_source) == (4, "deepspeed")  # 32 / (1 × 8)
    assert (training.batch_size, training.device_micro_batch_size, training.devices) == (32, 1, 4)
    assert plan.learning_rate == 1e-4
    assert set(dropped(plan)) == {
        "trust_remote_code",
        "do_train",
        "template",
        "overwrite_cache",
        "preprocessing_num_workers",
        "output_dir",
        "logging_steps",
        "save_steps",
        "plot_loss",
        "overwrite_output_dir",
        "ddp_timeout",
    }
    assert set(dropped(plan).values()) == {BOOKKEEPING}


def test_a_llama_factory_sharegpt_dataset_is_chat_from_its_messages_column(llama_factory_dir: Path) -> None:
    chats = LLAMA_FACTORY.replace("dataset: support_tickets", "dataset: support_chats")
    dataset = load(llama_factory_dir, "chat.yaml", chats).study_spec().dataset
    assert (dataset.format, dataset.messages_field) == ("chat", "dialog")
    assert dataset.path == str(llama_factory_dir / "data" / "chats.json")


def test_a_llama_factory_dataset_missing_from_dataset_info_is_an_error_when_the_study_needs_it(
    llama_factory_dir: Path,
) -> None:
    plan = load(llama_factory_dir, "x.yaml", LLAMA_FACTORY.replace("support_tickets", "unknown_set"))
    error = config_error(plan.study_spec)
    assert error.key == "dataset" and "'unknown_set' is not described in" in error.message


def test_two_llama_factory_datasets_fail_the_study_but_not_the_check(llama_factory_dir: Path) -> None:
    both = LLAMA_FACTORY.replace("dataset: support_tickets", "dataset: support_tickets,support_chats")
    plan = load(llama_factory_dir, "two.yaml", both)

    # The CI check reads only model, rank, LR and batch: those still map.
    assert (plan.model, plan.rank, plan.learning_rate, plan.effective_batch_size) == (
        "meta-llama/Meta-Llama-3-8B-Instruct",
        8,
        1e-4,
        32,
    )
    error = config_error(plan.study_spec)
    assert error.key == "dataset" and "a study reads one dataset; got 2" in error.message


def test_a_llama_factory_stage_other_than_sft_or_pt_is_refused(llama_factory_dir: Path) -> None:
    error = config_error(lambda: load(llama_factory_dir, "dpo.yaml", LLAMA_FACTORY.replace("sft", "dpo", 1)))
    assert error.key == "stage" and "supervised fine-tuning only" in error.message


# Hugging Face TrainingArguments / TRL SFTConfig -----------------------------------------------------------

TRL_SFT = """\
model_name_or_path: Qwen/Qwen2-0.5B
dataset_name: chats.jsonl
learning_rate: 2.0e-4
num_train_epochs: 1
packing: true
max_length: 2048
per_device_train_batch_size: 2
gradient_accumulation_steps: 8
gradient_checkpointing: true
eval_strategy: steps
eval_steps: 100
use_peft: true
lora_r: 32
lora_alpha: 16
lora_target_modules: all-linear
output_dir: Qwen2-0.5B-SFT
report_to: none
"""

TRAINING_ARGUMENTS = {
    "output_dir": "out",
    "model_name_or_path": "Qwen/Qwen2.5-0.5B",
    "dataset_name": "pairs.json",
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 2,
    "learning_rate": 3e-4,
    "max_steps": 500,
    "warmup_steps": 50,
    "lr_scheduler_type": "cosine",
    "optim": "adamw_bnb_8bit",
    "adam_beta1": 0.85,
    "adam_beta2": 0.98,
    "adam_epsilon": 1e-6,
    "weight_decay": 0.1,
    "max_grad_norm": 0.5,
    "seed": 7,
    "world_size": 2,
    "peft": {
        "r": 32,
        "lora_alpha": 64,
        "lora_dropout": 0.1,
        "target_modules": ["q_proj", "v_proj"],
        "use_dora": True,
    },
}


def trainer_json(folder: Path, **changes: Any) -> MappedConfig:
    """TRAINING_ARGUMENTS with `changes` (None removes a key), beside a prompt/completion data file."""
    write_records(folder, "pairs.json", [{"prompt": "2 + 2 =", "completion": " 4"}])
    data = {**TRAINING_ARGUMENTS, **changes}
    return load(folder, "trainer.json", json.dumps({k: v for k, v in data.items() if v is not None}))


def test_a_trl_sft_config_with_a_chat_file_maps_to_its_study(tmp_path: Path) -> None:
    path = write_records(tmp_path, "chats.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    plan = load(tmp_path, "sft.yaml", TRL_SFT)
    spec = plan.study_spec()

    assert (plan.format, spec.model, spec.method, spec.rank, spec.alpha) == (
        "hf-trainer",
        "Qwen/Qwen2-0.5B",
        "lora",
        32,
        16.0,
    )
    assert spec.target_modules == "all-linear" and spec.method_options.dropout == 0.05  # TRL's dropout
    assert (spec.dataset.path, spec.dataset.format, spec.dataset.messages_field) == (path, "chat", "messages")
    assert spec.dataset.train_on_prompt is True  # assistant_only_loss unset: TRL trains on every token
    training = spec.training
    assert (training.max_seq_len, training.packing, training.epochs) == (2048, True, 1.0)
    assert (training.batch_size, training.device_micro_batch_size, training.devices) == (16, 2, 1)
    assert sources(plan)["method"] == "use_peft"
    assert set(dropped(plan)) == {
        "gradient_checkpointing",
        "eval_strategy",
        "eval_steps",
        "output_dir",
        "report_to",
    }


def test_trl_assistant_only_loss_masks_the_prompt_of_a_chat_dataset(tmp_path: Path) -> None:
    write_records(tmp_path, "chats.jsonl", [{"messages": []}])
    plan = load(tmp_path, "sft.yaml", TRL_SFT + "assistant_only_loss: true\n")
    assert plan.study_spec().dataset.train_on_prompt is False


def test_defaults_are_the_trainers_and_trls_when_keys_are_left_out(tmp_path: Path) -> None:
    write_records(tmp_path, "chats.jsonl", [{"messages": []}])
    plan = load(tmp_path, "min.yaml", "model_name_or_path: m\ndataset_name: chats.jsonl\nuse_peft: true\n")
    spec = plan.study_spec()

    assert (spec.rank, spec.alpha, spec.method_options.dropout) == (16, 32.0, 0.05)  # TRL's ModelConfig
    assert spec.target_modules is None  # PEFT's per-architecture default, as TRL leaves it
    training = spec.training
    assert (training.max_grad_norm, training.lr_scheduler, training.warmup_ratio) == (1.0, "linear", 0.0)
    assert (training.epochs, training.max_seq_len, training.packing) == (3.0, 1024, False)
    assert (plan.micro_batch_size, plan.accumulation_steps) == (8, 1)  # per_device_train_batch_size 8
    assert sources(plan)["training.max_grad_norm"] == "(Trainer default)"
    assert plan.learning_rate is None  # TrainingArguments and SFTConfig differ: not guessed


def test_training_arguments_json_maps_optimizer_clipping_steps_and_a_peft_section(tmp_path: Path) -> None:
    plan = trainer_json(tmp_path)
    spec = plan.study_spec()

    assert (spec.method, spec.rank, spec.alpha, spec.target_modules) == (
        "dora",
        32,
        64.0,
        ["q_proj", "v_proj"],
    )
    assert spec.method_options.dropout == 0.1
    assert sources(plan)["rank"] == "peft.r"
    training = spec.training
    assert (training.optimizer.name, training.optimizer.betas, training.optimizer.eps) == (
        "adamw",
        (0.85, 0.98),
        1e-6,
    )
    assert "optim: 8-bit AdamW trained as AdamW" in plan.notes
    assert (training.weight_decay, training.max_grad_norm, training.seed) == (0.1, 0.5, 7)
    assert (training.lr_scheduler, training.warmup_steps) == ("cosine", 50)
    # max_steps counts optimizer steps at the real run's batch: 4 micro × 2 accumulation × 2 devices.
    assert (training.max_steps, training.batch_size, training.devices) == (500, 16, 2)
    assert (plan.devices, plan.devices_source) == (2, "world_size")
    assert (spec.dataset.format, spec.dataset.prompt_field, spec.dataset.response_field) == (
        "instruction",
        "prompt",
        "completion",
    )
    assert spec.dataset.input_field is None
    assert spec.dataset.prompt_template == "none"  # TRL joins prompt and completion as written
    assert spec.dataset.train_on_prompt is False  # TRL's completion-only loss for prompt/completion data
    assert dropped(plan) == {"output_dir": BOOKKEEPING}


def test_max_grad_norm_zero_turns_clipping_off(tmp_path: Path) -> None:
    assert trainer_json(tmp_path, max_grad_norm=0).study_spec().training.max_grad_norm is None


def test_completion_only_loss_false_trains_on_the_prompt_too(tmp_path: Path) -> None:
    plan = trainer_json(tmp_path, completion_only_loss=False)
    assert plan.study_spec().dataset.train_on_prompt is True


def test_a_warmup_steps_below_one_is_a_share_of_the_run_as_transformers_5_reads_it(tmp_path: Path) -> None:
    training = trainer_json(tmp_path, warmup_steps=0.05).study_spec().training
    assert (training.warmup_ratio, training.warmup_steps) == (0.05, None)


@pytest.mark.parametrize(
    ("launch", "devices"),
    [({"ray_num_workers": 4}, 4), ({"num_processes": 8}, 8), ({"num_devices": 3}, 3)],
)
def test_the_device_count_comes_from_the_launch_keys(
    tmp_path: Path, launch: dict[str, int], devices: int
) -> None:
    plan = trainer_json(tmp_path, world_size=None, **launch)
    (key,) = launch
    assert (plan.devices, plan.devices_source) == (devices, key)
    assert plan.study_spec().training.batch_size == 4 * 2 * devices
    assert sources(plan)["devices"] == key


def test_a_trl_4_bit_base_is_qlora_with_a_note_and_both_bit_flags_are_read(tmp_path: Path) -> None:
    write_records(tmp_path, "chats.jsonl", [{"messages": []}])
    plan = load(tmp_path, "q.yaml", TRL_SFT + "load_in_4bit: true\nload_in_8bit: false\n")
    assert f"load_in_4bit: {QLORA}" in plan.notes
    assert not {"load_in_4bit", "load_in_8bit"} & set(dropped(plan))


def test_use_peft_false_is_full_fine_tuning_whatever_lora_r_says(tmp_path: Path) -> None:
    write_records(tmp_path, "chats.jsonl", [{"messages": []}])
    plan = load(tmp_path, "full.yaml", TRL_SFT.replace("use_peft: true", "use_peft: false"))
    assert (plan.method, plan.rank) == ("full", None)
    assert {"lora_r", "lora_alpha", "lora_target_modules"} <= set(dropped(plan))
    assert "use_peft: false: TRL trains the full model and ignores lora_r" in plan.notes


def test_sft_loss_types_are_accepted_and_read(tmp_path: Path) -> None:
    for loss in ("nll", "chunked_nll"):
        plan = trainer_json(tmp_path, loss_type=loss)
        assert "loss_type" not in dropped(plan)


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        ({"optim": "sgd"}, "optim", "optimizer 'sgd' cannot be copied"),
        ({"optim": "adafactor"}, "optim", "the proxies train with AdamW"),
        (
            {"lr_scheduler_type": "cosine_with_restarts"},
            "lr_scheduler_type",
            "'cosine_with_restarts' cannot be copied",
        ),
        ({"loss_type": "sigmoid"}, "loss_type", "supervised fine-tuning only"),
        ({"loss_type": "dft"}, "loss_type", "DFT weights each token's loss"),
        ({"max_prompt_length": 512}, "max_prompt_length", "belongs to a DPO config"),
        ({"num_generations": 8}, "num_generations", "belongs to a GRPO config"),
        ({"peft": {"r": 8, "modules_to_save": ["lm_head"]}}, "peft.modules_to_save", "moves the best LR"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size", "positive integer"),
        ({"num_processes": 4}, "world_size", "2 devices contradicts num_processes: 4"),
    ],
)
def test_a_trainer_key_that_cannot_be_honoured_is_an_error_naming_it(
    tmp_path: Path, changes: dict[str, Any], key: str, message: str
) -> None:
    error = config_error(lambda: trainer_json(tmp_path, **changes))
    assert error.key == key and message in error.message
    assert str(error).startswith(f"{tmp_path / 'trainer.json'}: {key}: ")


# torchtune -----------------------------------------------------------------------------------------------

TORCHTUNE_LORA = """\
output_dir: /tmp/torchtune/llama3_2_1B/lora_single_device

model:
  _component_: torchtune.models.llama3_2.lora_llama3_2_1b
  lora_attn_modules: ['q_proj', 'v_proj', 'output_proj']
  apply_lora_to_mlp: True
  lora_rank: 64
  lora_alpha: 128
  lora_dropout: 0.0

tokenizer:
  _component_: torchtune.models.llama3.llama3_tokenizer
  path: /tmp/Llama-3.2-1B-Instruct/original/tokenizer.model
  max_seq_len: 1024

checkpointer:
  _component_: torchtune.training.FullModelHFCheckpointer
  checkpoint_dir: /tmp/Llama-3.2-1B-Instruct/
  checkpoint_files: [model.safetensors]
  recipe_checkpoint: null
  output_dir: ${output_dir}
  model_type: LLAMA3_2
resume_from_checkpoint: False
save_adapter_weights_only: False

dataset:
  _component_: torchtune.datasets.instruct_dataset
  source: json
  data_files: qa.json
  column_map:
    input: question
    output: answer
  train_on_input: False
  packed: True
  split: train
seed: 42
shuffle: True
batch_size: 4

optimizer:
  _component_: torch.optim.AdamW
  fused: True
  weight_decay: 0.05
  lr: 3e-4
  betas: [0.9, 0.95]
  eps: 1e-6
lr_scheduler:
  _component_: torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup
  num_warmup_steps: 100
loss:
  _component_: torchtune.modules.loss.LinearCrossEntropyLoss

epochs: 2
max_steps_per_epoch: 50
gradient_accumulation_steps: 8
compile: False

device: cuda
dtype: bf16
enable_activation_checkpointing: False
"""


def torchtune(folder: Path, text: str = TORCHTUNE_LORA) -> MappedConfig:
    write_records(folder, "qa.json", [{"question": "2 + 2?", "answer": "4"}])
    return load(folder, "lora.yaml", text)


def test_a_torchtune_lora_config_maps_to_its_study_field_by_field(tmp_path: Path) -> None:
    plan = torchtune(tmp_path)
    spec = plan.study_spec()

    assert (plan.format, spec.model, spec.method, spec.rank, spec.alpha) == (
        "torchtune",
        "/tmp/Llama-3.2-1B-Instruct/",
        "lora",
        64,
        128.0,
    )
    # torchtune's output_proj is Llama's o_proj; apply_lora_to_mlp adds w1, w3, w2 (gate, up, down).
    assert spec.target_modules == ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    training = spec.training
    assert (training.optimizer.betas, training.optimizer.eps, training.weight_decay) == (
        (0.9, 0.95),
        1e-6,
        0.05,
    )
    assert training.max_grad_norm is None  # clip_grad_norm absent: torchtune does not clip
    assert "clip_grad_norm: unset: unclipped" in plan.notes
    assert (training.lr_scheduler, training.warmup_steps, training.warmup_ratio) == ("cosine", 100, 0.0)
    assert (training.epochs, training.max_steps) == (2.0, 100)  # 50 steps per epoch × 2 epochs
    assert (training.max_seq_len, training.packing, training.precision, training.seed) == (
        1024,
        True,
        "bf16",
        42,
    )
    assert (training.batch_size, training.device_micro_batch_size, training.devices) == (32, 4, 1)
    dataset = spec.dataset
    assert dataset.path == str((tmp_path / "qa.json").resolve())
    # instruct_dataset reads one prompt column ("input") and "output", renamed by column_map.
    assert (dataset.format, dataset.prompt_field, dataset.input_field, dataset.response_field) == (
        "instruction",
        "question",
        None,
        "answer",
    )
    assert dataset.train_on_prompt is False
    assert any(note.startswith("devices: torchtune takes its device count") for note in plan.notes)
    assert set(dropped(plan)) == {
        "output_dir",
        "resume_from_checkpoint",
        "save_adapter_weights_only",
        "shuffle",
        "compile",
        "device",
        "enable_activation_checkpointing",
    }
    assert dropped(plan)["shuffle"] == NOT_READ


def test_torchtune_defaults_are_torchs_and_torchtunes(tmp_path: Path) -> None:
    text = TORCHTUNE_LORA.replace("  weight_decay: 0.05\n", "").replace("  max_seq_len: 1024\n", "")
    plan = torchtune(tmp_path, text)
    training = plan.study_spec().training

    assert training.weight_decay == 0.01  # torch.optim.AdamW's own default
    assert sources(plan)["training.weight_decay"] == "(torch.optim.AdamW default)"
    assert training.max_seq_len == 2048
    assert "tokenizer.max_seq_len: unset (no truncation): the proxies truncate at 2048 tokens" in plan.notes


def test_torchtune_instruct_dataset_reads_input_and_output_columns_without_a_column_map(
    tmp_path: Path,
) -> None:
    text = TORCHTUNE_LORA.replace("  column_map:\n    input: question\n    output: answer\n", "")
    dataset = torchtune(tmp_path, text).study_spec().dataset
    assert (dataset.prompt_field, dataset.input_field, dataset.response_field) == ("input", None, "output")


def test_a_torchtune_alpaca_builder_reads_instruction_input_and_output(tmp_path: Path) -> None:
    text = TORCHTUNE_LORA.replace(
        "  _component_: torchtune.datasets.instruct_dataset\n",
        "  _component_: torchtune.datasets.alpaca_dataset\n",
    )
    text = text.replace("  source: json\n  data_files: qa.json\n", "").replace(
        "  column_map:\n    input: question\n    output: answer\n", ""
    )
    dataset = torchtune(tmp_path, text).study_spec().dataset
    assert (dataset.path, dataset.prompt_field, dataset.input_field, dataset.response_field) == (
        "tatsu-lab/alpaca",
        "instruction",
        "input",
        "output",
    )


def test_a_torchtune_qlora_builder_is_lora_with_a_note(tmp_path: Path) -> None:
    plan = torchtune(tmp_path, TORCHTUNE_LORA.replace("lora_llama3_2_1b", "qlora_llama3_2_1b"))
    assert plan.method == "lora" and f"model._component_: {QLORA}" in plan.notes


def test_a_torchtune_full_builder_is_full_fine_tuning(tmp_path: Path) -> None:
    plan = torchtune(tmp_path, TORCHTUNE_LORA.replace("lora_llama3_2_1b", "llama3_2_1b"))
    assert (plan.method, plan.rank, plan.study_spec().method) == ("full", None, "full")


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        (
            "torchtune.modules.loss.LinearCrossEntropyLoss",
            "torchtune.rlhf.loss.DPOLoss",
            "loss._component_",
            "supervised fine-tuning only",
        ),
        ("torch.optim.AdamW", "torch.optim.SGD", "optimizer._component_", "cannot be copied"),
        (
            "['q_proj', 'v_proj', 'output_proj']",
            "['q_proj', 'wq']",
            "model.lora_attn_modules",
            "unknown module",
        ),
        (
            "get_cosine_schedule_with_warmup",
            "get_rex_scheduler",
            "lr_scheduler._component_",
            "cannot be copied",
        ),
    ],
)
def test_a_torchtune_component_that_cannot_be_copied_is_an_error_naming_it(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    error = config_error(lambda: torchtune(tmp_path, TORCHTUNE_LORA.replace(old, new)))
    assert error.key == key and message in error.message


# a missing rank ------------------------------------------------------------------------------------------


def test_a_lora_config_without_a_rank_names_the_rank_key_instead_of_studying_rank_8(tmp_path: Path) -> None:
    plan = load(tmp_path, "norank.yml", AXOLOTL_LORA.replace("lora_r: 16\n", ""))

    assert plan.rank is None  # the check then says "missing; ... pass --rank"
    error = config_error(plan.study_spec)
    assert error.key == "lora_r" and error.message.startswith("missing; lora needs the adapter's rank")
    assert plan.study_spec(rank=16).rank == 16  # an explicit override is not a silent default


def test_a_torchtune_lora_builder_without_lora_rank_names_model_lora_rank(tmp_path: Path) -> None:
    plan = torchtune(tmp_path, TORCHTUNE_LORA.replace("  lora_rank: 64\n", ""))
    assert config_error(plan.study_spec).key == "model.lora_rank"


# bad configs ---------------------------------------------------------------------------------------------


def test_an_unknown_format_is_an_error_listing_the_formats(tmp_path: Path) -> None:
    error = config_error(lambda: load(tmp_path, "a.yml", AXOLOTL_LORA, format="unsloth"))
    assert error.key == "format" and "unknown format 'unsloth'" in error.message
    assert "axolotl, llama-factory, hf-trainer, torchtune, study-spec" in error.message


def test_a_yaml_syntax_error_is_an_error_naming_syntax(tmp_path: Path) -> None:
    error = config_error(lambda: load(tmp_path, "a.yml", AXOLOTL_LORA + "datasets: [\n"))
    assert error.key == "syntax" and error.message.startswith("cannot parse")


def test_a_missing_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    assert config_error(lambda: load_config(tmp_path / "absent.yml")).key == "file"


def test_a_missing_model_fails_the_study_naming_the_tools_model_key(tmp_path: Path) -> None:
    plan = load(tmp_path, "nomodel.yml", AXOLOTL_LORA.replace("base_model: NousResearch/Llama-3.2-1B\n", ""))
    error = config_error(plan.study_spec)
    assert error.key == "base_model" and error.message.startswith("missing")


def test_axolotl_batch_size_contradicting_micro_batch_and_accumulation_is_an_error(tmp_path: Path) -> None:
    error = config_error(lambda: load(tmp_path, "bs.yml", AXOLOTL_LORA + "batch_size: 16\n"))
    assert error.key == "batch_size"
    assert "16 contradicts micro_batch_size × gradient_accumulation_steps = 2 × 4" in error.message


def test_an_axolotl_batch_size_the_micro_batch_does_not_divide_is_an_error(tmp_path: Path) -> None:
    odd = AXOLOTL_LORA.replace("gradient_accumulation_steps: 4", "batch_size: 7")
    error = config_error(lambda: load(tmp_path, "bs.yml", odd))
    assert error.key == "batch_size" and "not a multiple of micro_batch_size 2" in error.message


@pytest.mark.parametrize(
    ("deepspeed", "key", "message"),
    [
        (
            {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": "auto"},
            "deepspeed.train_micro_batch_size_per_gpu",
            "4 contradicts this config's 1 (per_device_train_batch_size)",
        ),
        (
            {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 2},
            "deepspeed.gradient_accumulation_steps",
            "2 contradicts this config's 8 (gradient_accumulation_steps)",
        ),
        (
            {"train_batch_size": 12},
            "deepspeed.train_batch_size",
            "12 contradicts 1 micro × 8 accumulation × 1 device (assumed)",
        ),
    ],
)
def test_a_deepspeed_batch_that_contradicts_the_config_is_an_error_naming_the_deepspeed_key(
    llama_factory_dir: Path, deepspeed: dict[str, Any], key: str, message: str
) -> None:
    """The Trainer refuses such a pair at launch; which one the user meant cannot be told from the files."""
    (llama_factory_dir / "ds_z2_config.json").write_text(json.dumps(deepspeed))
    error = config_error(lambda: load(llama_factory_dir, "sft.yaml", LLAMA_FACTORY))
    assert error.key == key and message in error.message
    assert 'set it to "auto"' in error.message
    assert error.line == LLAMA_FACTORY.splitlines().index("deepspeed: ds_z2_config.json") + 1


def test_deepspeed_train_batch_size_must_match_the_launch_keys_device_count(tmp_path: Path) -> None:
    inline = {"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4}  # 4 × 2 × 2 = 16, not 32
    error = config_error(lambda: trainer_json(tmp_path, deepspeed=inline))
    assert error.key == "deepspeed.train_batch_size" and "(from world_size)" in error.message


# write_back ----------------------------------------------------------------------------------------------


def test_write_back_uses_axolotls_keys_and_rescales_steps_to_keep_the_examples(tmp_path: Path) -> None:
    plan = load(tmp_path, "qlora.yml", AXOLOTL_QLORA)  # 2 micro × 4 accumulation = 8; 200 steps, 12 warm-up

    assert plan.write_back(32, 1.23456e-4) == {
        "format": "axolotl",
        "values": {
            "learning_rate": 1.23e-4,  # three significant digits
            "micro_batch_size": 2,  # the config's own micro-batch: it divides 32
            "gradient_accumulation_steps": 16,
            "max_steps": 50,  # 200 × 8 / 32: the same examples
            "warmup_steps": 3,  # 12 × 8 / 32
        },
        "notes": [],
    }


def test_write_back_uses_the_trainers_keys_and_splits_the_batch_over_the_devices(tmp_path: Path) -> None:
    plan = trainer_json(tmp_path)  # 4 micro × 2 accumulation × 2 devices = 16; 500 steps, 50 warm-up

    values = plan.write_back(48, 3e-4)["values"]
    assert values == {
        "learning_rate": 3e-4,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 6,  # 48 = 4 × 6 × 2
        "max_steps": 167,  # round(500 × 16 / 48)
        "warmup_steps": 17,
    }


def test_write_back_takes_the_largest_micro_batch_that_divides_when_the_configs_does_not(
    tmp_path: Path,
) -> None:
    plan = trainer_json(tmp_path, world_size=None, max_steps=None, warmup_steps=None)  # micro 4
    assert plan.write_back(6, 3e-4)["values"] == {
        "learning_rate": 3e-4,
        "per_device_train_batch_size": 3,
        "gradient_accumulation_steps": 2,
    }
    assert plan.write_back(2, 3e-4)["values"]["per_device_train_batch_size"] == 2  # never above the batch


def test_write_back_of_a_batch_that_does_not_split_over_the_devices_gives_the_lr_and_says_why(
    tmp_path: Path,
) -> None:
    answer = trainer_json(tmp_path).write_back(9, 3e-4)  # 2 devices
    assert answer["values"] == {"learning_rate": 3e-4}
    assert answer["notes"] == ["batch 9 does not split evenly over 2 devices"]


def test_write_back_uses_torchtunes_dotted_keys_and_rescales_the_per_epoch_cap(tmp_path: Path) -> None:
    plan = torchtune(tmp_path)  # 4 × 8 = 32; 50 steps per epoch, 100 warm-up

    assert plan.write_back(32, 3e-4)["values"] == {  # the same batch: the config's own numbers back
        "optimizer.lr": 3e-4,
        "batch_size": 4,
        "gradient_accumulation_steps": 8,
        "lr_scheduler.num_warmup_steps": 100,
        "max_steps_per_epoch": 50,
    }
    doubled = plan.write_back(64, 1e-4)["values"]
    assert (doubled["gradient_accumulation_steps"], doubled["max_steps_per_epoch"]) == (16, 25)
    assert doubled["lr_scheduler.num_warmup_steps"] == 50


def test_write_back_works_from_a_stored_report_alone(tmp_path: Path) -> None:
    from advisor.training_configs import write_back

    plan = load(tmp_path, "qlora.yml", AXOLOTL_QLORA)
    stored = json.loads(json.dumps(plan.report()))  # as the database keeps it
    assert write_back(stored, 16, 2e-4) == plan.write_back(16, 2e-4)


# lora-advisor's own spec ---------------------------------------------------------------------------------


def test_a_study_spec_maps_to_itself(tmp_path: Path) -> None:
    text = "model: tiny-llama\ndataset: {path: train.jsonl}\nrank: 4\nbatch_sizes: [8, 16]\n"
    plan = load(tmp_path, "spec.yaml", text)
    spec = plan.study_spec()

    assert isinstance(spec, StudySpec) and plan.format == "study-spec"
    assert (spec.model, spec.rank, spec.batch_sizes, spec.dataset.path) == (
        "tiny-llama",
        4,
        [8, 16],
        "train.jsonl",
    )
    assert plan.dropped == [] and plan.write_back(16, 1e-4)["values"] == {"learning_rate": 1e-4}
