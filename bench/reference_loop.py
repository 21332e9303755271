"""The reference fine-tune of the recipe-fidelity benchmark (`bench/recipe_fidelity.py`): the real run as a
tool's config file says to train it, written here from each tool's documented semantics in plain
transformers / PEFT / torch, never through `advisor.training_configs` nor `proxy_runs`' engine.

The config files are an Axolotl YAML and a TRL `SFTConfig` JSON that the benchmark writes beside its data
(`write_axolotl_task`, `write_trl_task`); `read_recipe` reads one back by the tool's own rules, and
`reference_finetune` trains it: PEFT LoraConfig with the config's targets, rank, α and dropout; torch AdamW
with its betas, ε and weight decay; `transformers.get_scheduler` with the config's schedule and warm-up;
clipping at its max_grad_norm (0: none, as in the Trainer); micro-batch × accumulation with the loss summed
over the effective batch's target tokens; whole examples packed into `sequence_len` rows with positions
restarting per example, or one example per row; the loss on the response (completion) only.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from proxy_runs import synthetic

IGNORE_INDEX = -100  # label value that cross-entropy skips: prompt tokens and padding


# 1. A real tool's config file, beside the task's data -------------------------------------------------------

ALPACA_FORMAT = "### Instruction:\n{instruction}\n\n{input}\n\n### Response:\n"
ALL_LINEAR_LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def write_axolotl_task(
    base: Path, folder: Path, train: list[dict[str, str]], held_out: list[dict[str, str]]
) -> Path:
    """Alpaca records and an Axolotl LoRA config. The custom instruct `type` spells out the prompt layout;
    it is the layout the proxies render for a model without a chat template, so this task measures the
    recipe fields, not a template."""
    synthetic.write_jsonl(train, folder / "train.jsonl")
    synthetic.write_jsonl(held_out, folder / "held_out.jsonl")
    config = {
        "base_model": str(base),
        "adapter": "lora",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "lora_target_linear": True,  # every linear layer: the spec's default is PEFT's q_proj, v_proj
        "datasets": [
            {
                "path": "train.jsonl",
                "type": {
                    "field_instruction": "instruction",
                    "field_input": "input",
                    "field_output": "output",
                    "format": ALPACA_FORMAT,
                    "no_input_format": "### Instruction:\n{instruction}\n\n### Response:\n",
                },
            }
        ],
        "val_set_size": 0.1,
        "train_on_inputs": False,
        "sequence_len": 128,  # an example is ~45 tokens here, so a packed row holds 2–3
        "sample_packing": True,
        "micro_batch_size": 4,
        "gradient_accumulation_steps": 4,
        "num_epochs": 2,
        "optimizer": "adamw_torch",
        "learning_rate": 2e-4,
        "weight_decay": 0.0,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.1,
        "max_grad_norm": 0.0,  # the Trainer clips only above 0: no clipping
        "output_dir": "./outputs/lora-out",
    }
    path = folder / "axolotl.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_trl_task(
    base: Path, folder: Path, train: list[dict[str, str]], held_out: list[dict[str, str]]
) -> Path:
    """Prompt/completion records and a TRL `SFTConfig` (with TRL's ModelConfig LoRA keys) as JSON. TRL joins
    prompt and completion as they are, so the prompt ends in its own separator."""

    def prompt_completion(record: dict[str, str]) -> dict[str, str]:
        return {"prompt": f"{record['instruction']}\n{record['input']}\n", "completion": record["output"]}

    synthetic.write_jsonl([prompt_completion(r) for r in train], folder / "train.jsonl")
    synthetic.write_jsonl([prompt_completion(r) for r in held_out], folder / "held_out.jsonl")
    config = {
        "model_name_or_path": str(base),
        "dataset_name": "train.jsonl",
        "use_peft": True,
        "lora_r": 16,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "lora_target_modules": ALL_LINEAR_LLAMA,
        "max_length": 128,  # an example is ~15 tokens here: a packed row holds about 8
        "packing": True,
        "completion_only_loss": True,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "num_train_epochs": 2,
        "learning_rate": 2e-4,
        "lr_scheduler_type": "linear",
        "warmup_steps": 10,
        "max_grad_norm": 0.3,  # QLoRA's clipping (arXiv 2305.14314)
        "adam_beta2": 0.95,
        "weight_decay": 0.01,
        "output_dir": "./outputs/sft",
    }
    path = folder / "sft_config.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


# 2. The recipe, read straight from the config by each tool's own rules --------------------------------------


@dataclass(frozen=True)
class Recipe:
    """What the real run does, in the terms of the loop below. `micro_batch × accumulation` is the config's
    own effective batch; at another batch B the run keeps its micro-batch and accumulates B / micro."""

    model: str
    train_file: Path
    held_out_file: Path
    layout: Literal["alpaca", "prompt_completion"]
    prompt_format: str  # alpaca: the prompt around {instruction} and {input}
    rank: int
    alpha: float
    dropout: float
    target_modules: list[str] | str
    max_seq_len: int
    packing: bool
    val_set_size: float  # share of the training file held out by the tool (Axolotl); the rest is trained
    micro_batch: int
    accumulation: int
    epochs: int
    scheduler: str
    warmup_ratio: float | None  # one of these two is set
    warmup_steps: int | None  # counted at the config's own batch
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    max_grad_norm: float | None  # None: unclipped

    @property
    def batch_size(self) -> int:
        return self.micro_batch * self.accumulation


def read_recipe(path: Path) -> Recipe:
    """The recipe of a config this benchmark wrote (an Axolotl YAML or a TRL JSON)."""
    if path.suffix == ".json":
        return trl_recipe(json.loads(path.read_text(encoding="utf-8")), path.parent)
    return axolotl_recipe(yaml.safe_load(path.read_text(encoding="utf-8")), path.parent)


def axolotl_recipe(config: dict[str, Any], folder: Path) -> Recipe:
    """Axolotl: lora_target_linear adapts every linear layer; max_grad_norm goes to the Trainer, which
    clips only above 0; warm-up is int(warmup_ratio × total steps); val_set_size is held out of the
    training file."""
    dataset = config["datasets"][0]
    clip = config.get("max_grad_norm", 1.0)
    return Recipe(
        model=config["base_model"],
        train_file=folder / dataset["path"],
        held_out_file=folder / "held_out.jsonl",
        layout="alpaca",
        prompt_format=dataset["type"]["format"],
        rank=config["lora_r"],
        alpha=float(config["lora_alpha"]),
        dropout=float(config.get("lora_dropout", 0.0)),
        target_modules="all-linear" if config.get("lora_target_linear") else config["lora_target_modules"],
        max_seq_len=config["sequence_len"],
        packing=bool(config.get("sample_packing", False)),
        val_set_size=float(config.get("val_set_size", 0.0)),
        micro_batch=config["micro_batch_size"],
        accumulation=config.get("gradient_accumulation_steps", 1),
        epochs=int(config.get("num_epochs", 1)),
        scheduler=config.get("lr_scheduler", "cosine"),
        warmup_ratio=config.get("warmup_ratio"),
        warmup_steps=config.get("warmup_steps"),
        betas=(config.get("adam_beta1", 0.9), config.get("adam_beta2", 0.999)),
        eps=config.get("adam_epsilon", 1e-8),
        weight_decay=config.get("weight_decay", 0.0),
        max_grad_norm=clip if clip and clip > 0 else None,
    )


def trl_recipe(config: dict[str, Any], folder: Path) -> Recipe:
    """TRL's SFTConfig (the Trainer's arguments) with ModelConfig's LoRA keys: the Trainer clips at
    max_grad_norm (default 1.0) when above 0; warmup_steps ≥ 1 is a count of optimizer steps; nothing is held
    out of the training file."""
    clip = config.get("max_grad_norm", 1.0)
    return Recipe(
        model=config["model_name_or_path"],
        train_file=folder / config["dataset_name"],
        held_out_file=folder / "held_out.jsonl",
        layout="prompt_completion",
        prompt_format="",
        rank=config.get("lora_r", 16),
        alpha=float(config.get("lora_alpha", 32)),
        dropout=float(config.get("lora_dropout", 0.05)),
        target_modules=config.get("lora_target_modules") or ["q_proj", "v_proj"],
        max_seq_len=config.get("max_length", 1024),
        packing=bool(config.get("packing", False)),
        val_set_size=0.0,
        micro_batch=config.get("per_device_train_batch_size", 8),
        accumulation=config.get("gradient_accumulation_steps", 1),
        epochs=int(config.get("num_train_epochs", 3)),
        scheduler=config.get("lr_scheduler_type", "linear"),
        warmup_ratio=config.get("warmup_ratio", 0.0) if "warmup_steps" not in config else None,
        warmup_steps=config.get("warmup_steps"),
        betas=(config.get("adam_beta1", 0.9), config.get("adam_beta2", 0.999)),
        eps=config.get("adam_epsilon", 1e-8),
        weight_decay=config.get("weight_decay", 0.0),
        max_grad_norm=clip if clip and clip > 0 else None,
    )


# 3. The reference fine-tune ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One training row: token ids, labels (IGNORE_INDEX where no loss is taken) and positions, which
    restart at 0 for every example packed into the row."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]


def read_jsonl(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def encode(recipe: Recipe, tokenizer: Any, record: dict[str, str]) -> Row:
    """Prompt and response as the tool lays them out, with EOS after the response and the loss on the
    response only; cut at max_seq_len."""

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    if recipe.layout == "alpaca":
        prompt, response = recipe.prompt_format.format(**record), record["output"]
    else:  # TRL: prompt + completion, joined as written
        prompt, response = record["prompt"], record["completion"]
    prompt_ids, response_ids = ids(prompt), [*ids(response), tokenizer.eos_token_id]
    input_ids = (prompt_ids + response_ids)[: recipe.max_seq_len]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[: recipe.max_seq_len]
    return Row(input_ids, labels, list(range(len(input_ids))))


def pack(rows: list[Row], max_len: int) -> list[Row]:
    """Whole examples, in order, into rows of at most max_len tokens; positions restart per example (as
    Axolotl's multipack and TRL's padding-free packing feed them)."""
    packed: list[Row] = []
    for row in rows:
        if packed and len(packed[-1].input_ids) + len(row.input_ids) <= max_len:
            last = packed[-1]
            last.input_ids += row.input_ids
            last.labels += row.labels
            last.position_ids += row.position_ids
        else:
            packed.append(Row(list(row.input_ids), list(row.labels), list(row.position_ids)))
    return packed


def training_rows(recipe: Recipe, tokenizer: Any) -> list[Row]:
    """The rows the real run trains on: the training file less the tool's held-out share, packed or not."""
    records = read_jsonl(recipe.train_file)
    if recipe.val_set_size:  # a seeded split, as the tool's train_test_split makes
        order = list(range(len(records)))
        random.Random(0).shuffle(order)
        held = math.ceil(recipe.val_set_size * len(records))
        records = [records[i] for i in sorted(order[held:])]
    rows = [encode(recipe, tokenizer, r) for r in records]
    return pack(rows, recipe.max_seq_len) if recipe.packing else rows


def held_out_rows(recipe: Recipe, tokenizer: Any) -> list[Row]:
    """What every run is scored on: held-out records, one per row, never packed."""
    return [encode(recipe, tokenizer, r) for r in read_jsonl(recipe.held_out_file)]


def collate(rows: list[Row]) -> dict[str, torch.Tensor]:
    """Right-padded tensors; padding takes no attention and no loss."""
    width = max(len(r.input_ids) for r in rows)

    def padded(values: list[list[int]], fill: int) -> torch.Tensor:
        return torch.tensor([v + [fill] * (width - len(v)) for v in values])

    return {
        "input_ids": padded([r.input_ids for r in rows], 0),
        "attention_mask": padded([[1] * len(r.input_ids) for r in rows], 0),
        "position_ids": padded([r.position_ids for r in rows], 0),
        "labels": padded([r.labels for r in rows], IGNORE_INDEX),
    }


def summed_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(the sum of next-token cross-entropies over the labelled tokens, their count)."""
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
    ).logits
    targets = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, int((targets != IGNORE_INDEX).sum())


@torch.no_grad()
def eval_loss(model: torch.nn.Module, rows: list[Row], micro: int = 32) -> float:
    """Token-weighted mean cross-entropy over `rows`."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(rows), micro):
        loss, count = summed_loss(model, collate(rows[start : start + micro]))
        total, tokens = total + float(loss), tokens + count
    model.train()
    return total / max(tokens, 1)


@dataclass
class RunResult:
    eval_loss: float | None  # None: the training loss went non-finite (diverged)
    seconds: float
    steps: int
    tokens: int  # tokens trained on, padding excluded


def load_base(recipe: Recipe) -> tuple[Any, Any]:
    """The base model in fp32 and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(recipe.model), AutoTokenizer.from_pretrained(recipe.model)


def adapted_model(recipe: Recipe, seed: int) -> torch.nn.Module:
    """The base model with the config's LoRA adapter; `seed` draws the adapter's initialisation."""
    from peft import LoraConfig, get_peft_model

    model, _ = load_base(recipe)
    torch.manual_seed(seed)
    adapter = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,
        lora_dropout=recipe.dropout,
        target_modules=recipe.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, adapter)


def warmup_steps(recipe: Recipe, batch_size: int, total_steps: int) -> int:
    """A ratio is of this run's steps (int(), as Axolotl rounds); a count was written for the config's own
    batch, so at batch B it keeps its share of the run: steps × the config's batch / B (what the advisor's
    write-back writes)."""
    if recipe.warmup_steps is not None:
        return round(recipe.warmup_steps * recipe.batch_size / batch_size)
    return int((recipe.warmup_ratio or 0.0) * total_steps)


def reference_finetune(
    recipe: Recipe, batch_size: int, lr: float, seed: int, train: list[Row], held_out: list[Row]
) -> RunResult:
    """The real run at effective batch `batch_size` and peak LR `lr`, as the config trains it."""
    from transformers import get_scheduler

    started = time.perf_counter()
    # 1. Adapter and optimizer: the config's LoRA, AdamW over the adapter with its betas, ε and decay.
    model = adapted_model(recipe, seed)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=lr, betas=recipe.betas, eps=recipe.eps, weight_decay=recipe.weight_decay
    )
    # 2. Batches: micro-batches of the config's size (smaller when B is), B / micro accumulated per step;
    #    the Trainer's epoch ends with a shorter step when its micro-batches do not divide evenly.
    micro = min(recipe.micro_batch, batch_size)
    accumulation = max(1, batch_size // micro)
    micro_per_epoch = math.ceil(len(train) / micro)
    steps_per_epoch = math.ceil(micro_per_epoch / accumulation)
    total_steps = steps_per_epoch * recipe.epochs
    schedule = get_scheduler(
        recipe.scheduler,
        optimizer,
        num_warmup_steps=warmup_steps(recipe, batch_size, total_steps),
        num_training_steps=total_steps,
    )
    limit = recipe.max_grad_norm if recipe.max_grad_norm is not None else math.inf
    shuffle, tokens = random.Random(seed), 0
    for _ in range(recipe.epochs):
        order = list(range(len(train)))
        shuffle.shuffle(order)
        chunks = [[train[i] for i in order[s : s + micro]] for s in range(0, len(order), micro)]
        for first in range(0, len(chunks), accumulation):
            step = [collate(chunk) for chunk in chunks[first : first + accumulation]]
            # 3. The loss of the effective batch: summed over its target tokens, divided by their count.
            targets = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in step)
            for batch in step:
                loss, _ = summed_loss(model, batch)
                if not torch.isfinite(loss):
                    return RunResult(None, time.perf_counter() - started, schedule.last_epoch, tokens)
                (loss / targets).backward()
                tokens += int(batch["attention_mask"].sum())
            # 4. Clip (or not), step, schedule.
            torch.nn.utils.clip_grad_norm_(trainable, limit)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    loss_at_end = eval_loss(model, held_out)
    result = loss_at_end if math.isfinite(loss_at_end) else None
    return RunResult(result, time.perf_counter() - started, total_steps, tokens)
