"""Datasets for proxy fine-tunes: read, render, tokenise, split, subsample and fingerprint.

Three formats (`dataset.format`):
- `text`: plain language modelling; documents are joined with EOS and cut into `max_seq_len` blocks.
- `instruction`: prompt → response with the loss on the response tokens only.
- `seq2seq`: source → target. On an encoder-decoder (T5) the source feeds the encoder; on a causal LM
  the pair is trained like an instruction.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from advisor.errors import DataError
from advisor.specs import DatasetSpec

IGNORE_INDEX = -100  # label value that cross-entropy skips (prompt tokens, padding)
MAX_EVAL_EXAMPLES = 512  # a held-out split larger than this adds eval time, not ranking accuracy
TEXT_SUFFIXES = {".txt", ".text", ".md"}


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken; for seq2seq, the decoder targets


@dataclass
class PreparedData:
    train: list[Example]
    eval: list[Example]
    is_seq2seq: bool
    fingerprint: dict[str, Any] = field(default_factory=dict)


# 1. Reading records -------------------------------------------------------------------------------


def read_records(
    path: str, *, split: str = "train", revision: str | None = None, field_name: str = "dataset.path"
) -> list[dict[str, Any]]:
    """Records from a local file or folder, or a hub dataset id."""
    local = Path(path).expanduser()
    if local.is_file():
        records = _read_file(local, field_name)
    elif local.is_dir():
        records = _read_saved_dataset(local, split, field_name)
    elif path.startswith(("/", "./", "../", "~")) or local.suffix:
        raise DataError(
            field_name,
            "no such file or folder",
            value=path,
            fix="give a JSONL/JSON/CSV/parquet/text file, a save_to_disk folder or a hub id",
        )
    else:
        records = _read_hub_dataset(path, split, revision, field_name)
    if not records:
        raise DataError(field_name, "the dataset is empty", value=path, fix="point at a file with examples")
    not_object = next((i for i, record in enumerate(records, start=1) if not isinstance(record, dict)), None)
    if not_object is not None:
        raise DataError(
            field_name,
            f"record {not_object} is a JSON {type(records[not_object - 1]).__name__}, not an object",
            value=path,
            fix='write one JSON object per record, such as {"instruction": ..., "output": ...}',
        )
    return records


def _read_file(path: Path, field_name: str) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with path.open(encoding="utf-8") as lines:
                return [json.loads(line) for line in lines if line.strip()]
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, list) else _columns_to_rows(data)
        if suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as rows:
                return list(csv.DictReader(rows))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if suffix in TEXT_SUFFIXES:
            paragraphs = path.read_text(encoding="utf-8").split("\n\n")
            return [{"text": p.strip()} for p in paragraphs if p.strip()]
    except (ValueError, OSError, csv.Error) as exc:  # json.JSONDecodeError is a ValueError; csv.Error is not
        raise DataError(field_name, f"cannot read {path.name}: {exc}", value=str(path)) from None
    except RecursionError:  # Python's JSON parser recurses once per level of nesting
        raise DataError(
            field_name, f"cannot read {path.name}: it nests too deeply", value=str(path)
        ) from None
    raise DataError(
        field_name,
        f"unsupported file type {suffix!r}",
        value=str(path),
        fix="use .jsonl, .json, .csv, .parquet or .txt",
    )


def _columns_to_rows(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        return [dict(zip(data, row, strict=True)) for row in zip(*data.values(), strict=True)]
    raise ValueError("a JSON dataset must be a list of records or a mapping of equal-length columns")


def _read_saved_dataset(folder: Path, split: str, field_name: str) -> list[dict[str, Any]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except FileNotFoundError:
        raise DataError(
            field_name, "folder is not a datasets save_to_disk folder", value=str(folder)
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError("dataset.split", f"no split {split!r}; it has {sorted(loaded)}", value=split)
        loaded = loaded[split]
    return loaded.to_list()


def _read_hub_dataset(name: str, split: str, revision: str | None, field_name: str) -> list[dict[str, Any]]:
    import datasets

    try:
        return datasets.load_dataset(name, split=split, revision=revision).to_list()
    except Exception as exc:  # the hub client raises many unrelated types; all mean "not loadable"
        raise DataError(
            field_name,
            f"cannot load hub dataset: {exc.__class__.__name__}: {exc}",
            value=name,
            fix="on an offline machine give a local file or a save_to_disk folder",
            retryable=os.environ.get("HF_HUB_OFFLINE") != "1",  # online, the hub may answer next time
        ) from None


# 2. Turning records into token sequences -----------------------------------------------------------


def _require_field(records: list[dict[str, Any]], name: str, spec_field: str) -> None:
    if name not in records[0]:
        raise DataError(
            f"dataset.{spec_field}",
            f"field {name!r} is not in the data; it has {sorted(records[0])}",
            value=name,
            fix=f"set dataset.{spec_field} to one of those columns",
        )


def prompt_text(record: dict[str, Any], spec: DatasetSpec) -> str:
    prompt = str(record[spec.prompt_field])
    extra = record.get(spec.input_field) if spec.input_field else None
    return f"{prompt}\n\n{extra}" if extra else prompt


def render_chat_prompt(prompt: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """The instruct model's own chat template when it has one, else an Alpaca-style template."""
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return str(rendered)
    return f"### Instruction:\n{prompt}\n\n### Response:\n"


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def instruction_example(prompt_ids: list[int], response_ids: list[int], max_len: int) -> Example | None:
    """Prompt + response with loss on the response. Long prompts lose their start, keeping room for
    at least half the window of response; an example with no response token left is dropped."""
    room_for_prompt = max(max_len - len(response_ids), max_len // 2)
    prompt_ids = prompt_ids[-room_for_prompt:] if len(prompt_ids) > room_for_prompt else prompt_ids
    response_ids = response_ids[: max_len - len(prompt_ids)]
    if not response_ids:
        return None
    return Example(prompt_ids + response_ids, [IGNORE_INDEX] * len(prompt_ids) + response_ids)


def text_examples(token_docs: list[list[int]], max_len: int) -> list[Example]:
    """Join documents and cut into blocks of max_len (the usual LM packing); a short tail is kept."""
    stream = [token for doc in token_docs for token in doc]
    blocks = [stream[i : i + max_len] for i in range(0, len(stream), max_len)]
    return [Example(block, list(block)) for block in blocks if len(block) > 1]


def tokenize_records(
    records: list[dict[str, Any]],
    spec: DatasetSpec,
    tokenizer: PreTrainedTokenizerBase,
    *,
    is_seq2seq: bool,
    max_len: int,
) -> list[Example]:
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if spec.format == "text":
        if is_seq2seq:
            raise DataError(
                "dataset.format",
                "format 'text' needs a causal LM",
                value="text",
                fix="use format 'seq2seq' (source → target) with an encoder-decoder model",
            )
        _require_field(records, spec.text_field, "text_field")
        return text_examples([_ids(tokenizer, str(r[spec.text_field])) + eos for r in records], max_len)
    _require_field(records, spec.prompt_field, "prompt_field")
    _require_field(records, spec.response_field, "response_field")
    examples = []
    for record in records:
        prompt = prompt_text(record, spec)
        response_ids = _ids(tokenizer, str(record[spec.response_field])) + eos
        if is_seq2seq:
            examples.append(Example(_ids(tokenizer, prompt)[:max_len] or eos, response_ids[:max_len]))
            continue
        example = instruction_example(
            _ids(tokenizer, render_chat_prompt(prompt, tokenizer)), response_ids, max_len
        )
        if example is not None:
            examples.append(example)
    return examples


# 3. Split, subsample, fingerprint ------------------------------------------------------------------


def split_records(
    records: list[dict[str, Any]], eval_fraction: float, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deterministic held-out split; the same data always yields the same split, whatever the run seed."""
    if len(records) < 2:
        raise DataError(
            "dataset.path",
            "need at least 2 examples to hold one out for evaluation",
            value=len(records),
            fix="add examples or give dataset.eval_path",
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, round(eval_fraction * len(records))), MAX_EVAL_EXAMPLES, len(records) - 1)
    return [records[i] for i in order[n_eval:]], [records[i] for i in order[:n_eval]]


def subsample(records: list[Any], size: int | None, seed: int = 0) -> list[Any]:
    """The first `size` of a seeded permutation: smaller subsets nest inside larger ones, so a
    dataset-size trend compares like with like."""
    if size is None or size >= len(records):
        return records
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    return [records[i] for i in sorted(order[:size])]


def content_hash(records: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def length_stats(examples: list[Example]) -> dict[str, float]:
    lengths = sorted(len(e.input_ids) for e in examples) or [0]
    return {
        "mean": round(statistics.fmean(lengths), 2),
        "p50": float(lengths[len(lengths) // 2]),
        "p95": float(lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))]),
        "max": float(lengths[-1]),
    }


def prepare_data(
    spec: DatasetSpec, tokenizer: PreTrainedTokenizerBase, *, is_seq2seq: bool, max_seq_len: int
) -> PreparedData:
    """What a proxy run needs from the dataset: token sequences for train and eval, and a fingerprint."""
    records = read_records(spec.path, split=spec.split, revision=spec.revision)
    if spec.eval_path:
        train_records = records
        eval_records = read_records(spec.eval_path, split=spec.split, field_name="dataset.eval_path")
        eval_records = subsample(eval_records, MAX_EVAL_EXAMPLES)
    else:
        train_records, eval_records = split_records(records, spec.eval_fraction)
    train_records = subsample(train_records, spec.max_examples)
    tokenize = functools.partial(
        tokenize_records, spec=spec, tokenizer=tokenizer, is_seq2seq=is_seq2seq, max_len=max_seq_len
    )
    train, held_out = tokenize(train_records), tokenize(eval_records)
    if not train or not held_out:
        raise DataError(
            "dataset.path",
            "no usable example after tokenisation (responses truncated away?)",
            value=spec.path,
            fix="raise training.max_seq_len or shorten the prompts",
        )
    fingerprint = {
        "content_sha256": content_hash(records),
        "n_records": len(records),
        "n_train": len(train),
        "n_eval": len(held_out),
        "format": spec.format,
        "train_tokens": length_stats(train),
        "dropped": len(train_records) - len(train) if spec.format != "text" else 0,
    }
    return PreparedData(train, held_out, is_seq2seq, fingerprint)


# 4. Batches ------------------------------------------------------------------------------------------


def collate(examples: list[Example], pad_id: int, *, is_seq2seq: bool) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch; padded label positions are IGNORE_INDEX."""

    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        width = max(len(row) for row in rows)
        return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=torch.long)

    inputs = [e.input_ids for e in examples]
    batch = {
        "input_ids": pad(inputs, pad_id),
        "attention_mask": pad([[1] * len(row) for row in inputs], 0),
        "labels": pad([e.labels for e in examples], IGNORE_INDEX),
    }
    if not is_seq2seq and batch["labels"].shape != batch["input_ids"].shape:
        raise AssertionError("causal examples must have labels aligned with input_ids")
    return batch


def target_tokens(batch: dict[str, torch.Tensor], *, is_seq2seq: bool) -> int:
    """Tokens that carry loss: a causal LM predicts position t+1 from t, so its first label is never used."""
    labels = batch["labels"] if is_seq2seq else batch["labels"][:, 1:]
    return int((labels != IGNORE_INDEX).sum())
