"""Datasets for proxy fine-tunes: read, render, tokenise, split, subsample and fingerprint.

Four formats (`dataset.format`):
- `text`: plain language modelling, each document ending in EOS.
- `instruction`: prompt → response with the loss on the response tokens only.
- `seq2seq`: source → target. On an encoder-decoder (T5) the source feeds the encoder; on a causal LM
  the pair is trained like an instruction.
- `chat`: a list of turns (OpenAI or ShareGPT) with the loss on the assistant's replies.
`dataset.train_on_prompt` takes the loss on every token of instruction and chat examples instead.

Packing (`training.packing`) is the real run's: off, one record is one sequence, cut at `max_seq_len`;
on, text documents are joined and cut into `max_seq_len` blocks, and whole instruction and chat examples
are concatenated into sequences of at most `max_seq_len` tokens.
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

import jinja2
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
    # Packed supervised examples: each one's positions restart at 0, so that it attends only to itself
    # (transformers builds a block-diagonal causal mask from restarting position ids when no attention mask
    # is passed), as Axolotl's sample packing and TRL's padding-free packing train. None: 0, 1, 2, …
    position_ids: list[int] | None = None


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

# ShareGPT names its speakers; chat templates expect OpenAI's roles.
CHAT_ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
}
# Without a chat template, a conversation is laid out like `render_chat_prompt`'s Alpaca-style fallback, so
# that a one-exchange conversation trains on exactly the tokens of the same instruction record.
PLAIN_HEADERS = {"system": "### System:\n", "user": "### Instruction:\n"}
PLAIN_REPLY_HEADER = "### Response:\n"

Turn = dict[str, str]  # {"role": system | user | assistant, "content": ...}, what chat templates take
ChatPiece = tuple[list[int], bool]  # token ids, and whether the loss is taken on them (an assistant reply)


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


def _has_targets(labels: list[int]) -> bool:
    # A causal LM predicts token t + 1 from token t, so the first label never carries loss.
    return any(label != IGNORE_INDEX for label in labels[1:])


def instruction_example(
    prompt_ids: list[int], response_ids: list[int], max_len: int, *, train_on_prompt: bool = False
) -> Example | None:
    """Prompt + response with loss on the response (on both with `train_on_prompt`). Long prompts lose their
    start, keeping room for at least half the window of response; an example with no response token left is
    dropped."""
    room_for_prompt = max(max_len - len(response_ids), max_len // 2)
    prompt_ids = prompt_ids[-room_for_prompt:] if len(prompt_ids) > room_for_prompt else prompt_ids
    response_ids = response_ids[: max_len - len(prompt_ids)]
    if not response_ids:
        return None
    input_ids = prompt_ids + response_ids
    if train_on_prompt:
        return Example(input_ids, list(input_ids))
    return Example(input_ids, [IGNORE_INDEX] * len(prompt_ids) + response_ids)


def text_examples(token_docs: list[list[int]], max_len: int) -> list[Example]:
    """One example per document, cut at max_len (a cut document loses its EOS, as in a real run that
    truncates); a document of one token has nothing to predict and is dropped."""
    return [Example(doc[:max_len], doc[:max_len]) for doc in token_docs if len(doc) > 1]


def text_blocks(token_docs: list[list[int]], max_len: int) -> list[Example]:
    """Join documents and cut into blocks of max_len (the usual LM packing); a short tail is kept."""
    stream = [token for doc in token_docs for token in doc]
    blocks = [stream[i : i + max_len] for i in range(0, len(stream), max_len)]
    return [Example(block, list(block)) for block in blocks if len(block) > 1]


def pack_examples(examples: list[Example], max_len: int) -> list[Example]:
    """Whole examples concatenated in their order into sequences of at most max_len tokens (TRL's and
    Axolotl's packing); labels are kept, so prompts stay without loss. Each example already fits max_len.
    Positions restart at every example, so no example attends to another (`Example.position_ids`)."""
    packed: list[Example] = []
    for example in examples:
        positions = list(range(len(example.input_ids)))
        if packed and len(packed[-1].input_ids) + len(example.input_ids) <= max_len:
            last = packed[-1]
            last.input_ids.extend(example.input_ids)
            last.labels.extend(example.labels)
            assert last.position_ids is not None
            last.position_ids.extend(positions)
        else:
            packed.append(Example(list(example.input_ids), list(example.labels), positions))
    return packed


# 2a. Chat -----------------------------------------------------------------------------------------------


def _turn_text(content: Any) -> str:
    # OpenAI's content is a string or a list of parts such as {"type": "text", "text": ...}.
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


def chat_turns(record: dict[str, Any], spec: DatasetSpec, number: int) -> list[Turn]:
    """The record's turns with OpenAI roles, from OpenAI ({role, content}) or ShareGPT ({from, value}) turns;
    `number` counts records from 1, for the error message."""
    name = spec.messages_field
    if name not in record:
        raise DataError(
            "dataset.messages_field",
            f"record {number} has no field {name!r}; it has {sorted(record)}",
            value=name,
            fix="set dataset.messages_field to the column that holds the turns (OpenAI: messages, "
            "ShareGPT: conversations)",
        )
    turns = record[name]
    if not isinstance(turns, list) or not turns:
        raise DataError(
            "dataset.messages_field",
            f"record {number}: {name!r} is not a non-empty list of turns",
            value=name,
            fix='write turns as [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]',
        )
    return [_chat_turn(turn, number, index) for index, turn in enumerate(turns, start=1)]


def _chat_turn(turn: Any, record_number: int, turn_number: int) -> Turn:
    speaker = turn.get("role", turn.get("from")) if isinstance(turn, dict) else None
    content = turn.get("content", turn.get("value")) if isinstance(turn, dict) else None
    role = CHAT_ROLES.get(str(speaker).lower())
    if role is None or content is None:
        raise DataError(
            "dataset.messages_field",
            f"record {record_number}, turn {turn_number} is not a turn with a known role and its text",
            value=turn,
            fix=f"give each turn role/content (OpenAI) or from/value (ShareGPT), the role one of "
            f"{', '.join(CHAT_ROLES)}",
        )
    return {"role": role, "content": _turn_text(content)}


def _render(turns: list[Turn], tokenizer: PreTrainedTokenizerBase, *, generation_prompt: bool) -> str | None:
    """The conversation through the model's chat template; None when the template refuses it."""
    if not turns and not generation_prompt:
        return ""
    try:
        return str(
            tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)
        )
    except jinja2.TemplateError:  # templates raise on shapes they do not take (a system turn, no user turn)
        return None


def _pieces_by_difference(
    turns: list[Turn], tokenizer: PreTrainedTokenizerBase
) -> list[tuple[str, bool]] | None:
    """Assistant turn i's reply is what rendering turns[:i + 1] adds to turns[:i] rendered with the generation
    prompt (the assistant's header): its text and the template's end-of-turn tokens. None when the template
    rewrites earlier turns as the conversation grows (Qwen3 drops the reasoning of all but the last reply)."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, turn in enumerate(turns):
        if turn["role"] == "assistant":
            header = _render(turns[:i], tokenizer, generation_prompt=True)
            if header is None or not header.startswith(done):
                return None
            pieces.append((header[len(done) :], False))
            done = header
        text = _render(turns[: i + 1], tokenizer, generation_prompt=False)
        if text is None or not text.startswith(done):
            return None
        pieces.append((text[len(done) :], turn["role"] == "assistant"))
        done = text
    return pieces


def _pieces_by_search(
    turns: list[Turn], tokenizer: PreTrainedTokenizerBase, number: int
) -> list[tuple[str, bool]]:
    """For templates that rewrite earlier turns: the whole conversation rendered once, with the loss on each
    reply's text, found in it in order. The end-of-turn tokens then take no loss, nor a reply the template
    changed."""
    text = _render(turns, tokenizer, generation_prompt=False)
    if text is None:
        raise DataError(
            "dataset.messages_field",
            f"record {number}: the model's chat template refuses this conversation",
            fix="order the turns as the model's chat template expects (e.g. user and assistant alternating; "
            "some templates take no system turn)",
        )
    pieces: list[tuple[str, bool]] = []
    cursor = 0
    for turn in turns:
        reply = turn["content"].strip()
        start = text.find(reply, cursor) if turn["role"] == "assistant" and reply else -1
        if start >= 0:
            pieces += [(text[cursor:start], False), (reply, True)]
            cursor = start + len(reply)
    return [*pieces, (text[cursor:], False)]


def _plain_pieces(turns: list[Turn], tokenizer: PreTrainedTokenizerBase) -> list[ChatPiece]:
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    pieces: list[ChatPiece] = []
    prompt = ""
    for turn in turns:
        if turn["role"] != "assistant":
            prompt += f"{PLAIN_HEADERS[turn['role']]}{turn['content']}\n\n"
            continue
        pieces.append((_ids(tokenizer, prompt + PLAIN_REPLY_HEADER), False))
        pieces.append((_ids(tokenizer, turn["content"]) + eos, True))
        prompt = ""
    return [*pieces, (_ids(tokenizer, prompt), False)] if prompt else pieces


def chat_pieces(turns: list[Turn], tokenizer: PreTrainedTokenizerBase, number: int) -> list[ChatPiece]:
    """The conversation as the model trains on it, in pieces that take the loss (assistant replies) or not:
    through the model's chat template where it has one, else the plain layout of PLAIN_HEADERS."""
    if not getattr(tokenizer, "chat_template", None):
        return _plain_pieces(turns, tokenizer)
    texts = _pieces_by_difference(turns, tokenizer)
    if texts is None:
        texts = _pieces_by_search(turns, tokenizer, number)
    merged: list[tuple[str, bool]] = []
    for text, loss in texts:  # neighbours without loss in one piece, so their tokens merge as in one text
        if merged and merged[-1][1] == loss:
            merged[-1] = (merged[-1][0] + text, loss)
        elif text:
            merged.append((text, loss))
    return [(_ids(tokenizer, text), loss) for text, loss in merged]


def chat_example(pieces: list[ChatPiece], max_len: int, *, train_on_prompt: bool) -> Example | None:
    """The pieces joined and cut at max_len; None when no token left takes the loss."""
    tokens = [(token, loss or train_on_prompt) for ids, loss in pieces for token in ids][:max_len]
    labels = [token if takes_loss else IGNORE_INDEX for token, takes_loss in tokens]
    return Example([token for token, _ in tokens], labels) if _has_targets(labels) else None


# 2b. Every format ------------------------------------------------------------------------------------------


def _refuse_encoder_decoder(spec: DatasetSpec, *, is_seq2seq: bool, packing: bool) -> None:
    if is_seq2seq and spec.format in ("text", "chat"):
        raise DataError(
            "dataset.format",
            f"format {spec.format!r} needs a causal LM",
            value=spec.format,
            fix="use format 'seq2seq' (source → target) with an encoder-decoder model",
        )
    if is_seq2seq and packing:
        raise DataError(
            "training.packing",
            "an encoder-decoder model trains on source → target pairs, which do not pack",
            value=True,
            fix="set training.packing to false",
        )


def _text_documents(
    records: list[dict[str, Any]], spec: DatasetSpec, tokenizer: PreTrainedTokenizerBase
) -> list[list[int]]:
    _require_field(records, spec.text_field, "text_field")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return [_ids(tokenizer, str(r[spec.text_field])) + eos for r in records]


def _supervised_examples(
    records: list[dict[str, Any]],
    spec: DatasetSpec,
    tokenizer: PreTrainedTokenizerBase,
    *,
    is_seq2seq: bool,
    max_len: int,
) -> list[Example]:
    """Instruction, seq2seq and chat records, one example each (none for a record with no loss token left)."""
    if spec.format == "chat":
        examples = [
            chat_example(
                chat_pieces(chat_turns(record, spec, number), tokenizer, number),
                max_len,
                train_on_prompt=spec.train_on_prompt,
            )
            for number, record in enumerate(records, start=1)
        ]
        return [example for example in examples if example is not None]
    _require_field(records, spec.prompt_field, "prompt_field")
    _require_field(records, spec.response_field, "response_field")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    kept = []
    for record in records:
        prompt = prompt_text(record, spec)
        response_ids = _ids(tokenizer, str(record[spec.response_field])) + eos
        if is_seq2seq:  # the prompt feeds the encoder, so it takes no loss whatever train_on_prompt says
            kept.append(Example(_ids(tokenizer, prompt)[:max_len] or eos, response_ids[:max_len]))
            continue
        laid_out = prompt if spec.prompt_template == "none" else render_chat_prompt(prompt, tokenizer)
        prompt_ids = _ids(tokenizer, laid_out)
        example = instruction_example(prompt_ids, response_ids, max_len, train_on_prompt=spec.train_on_prompt)
        if example is not None:
            kept.append(example)
    return kept


def training_sequences(
    records: list[dict[str, Any]],
    spec: DatasetSpec,
    tokenizer: PreTrainedTokenizerBase,
    *,
    is_seq2seq: bool,
    max_len: int,
    packing: bool,
) -> tuple[list[Example], int]:
    """(the sequences a proxy trains on, how many records gave none): one per record, or packed."""
    _refuse_encoder_decoder(spec, is_seq2seq=is_seq2seq, packing=packing)
    if spec.format == "text":
        documents = _text_documents(records, spec, tokenizer)
        if packing:
            return text_blocks(documents, max_len), 0
        examples = text_examples(documents, max_len)
        return examples, len(records) - len(examples)
    examples = _supervised_examples(records, spec, tokenizer, is_seq2seq=is_seq2seq, max_len=max_len)
    dropped = len(records) - len(examples)
    return (pack_examples(examples, max_len) if packing else examples), dropped


def tokenize_records(
    records: list[dict[str, Any]],
    spec: DatasetSpec,
    tokenizer: PreTrainedTokenizerBase,
    *,
    is_seq2seq: bool,
    max_len: int,
    packing: bool,
) -> list[Example]:
    """The sequences a proxy trains on (see `training_sequences`)."""
    sequences, _ = training_sequences(
        records, spec, tokenizer, is_seq2seq=is_seq2seq, max_len=max_len, packing=packing
    )
    return sequences


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
    spec: DatasetSpec,
    tokenizer: PreTrainedTokenizerBase,
    *,
    is_seq2seq: bool,
    max_seq_len: int,
    packing: bool,
) -> PreparedData:
    """What a proxy run needs from the dataset: token sequences for train and eval, and a fingerprint.
    `packing` is the real run's `training.packing`: it decides what one training sequence is."""
    records = read_records(spec.path, split=spec.split, revision=spec.revision)
    if spec.eval_path:
        train_records = records
        eval_records = read_records(spec.eval_path, split=spec.split, field_name="dataset.eval_path")
        eval_records = subsample(eval_records, MAX_EVAL_EXAMPLES)
    else:
        train_records, eval_records = split_records(records, spec.eval_fraction)
    train_records = subsample(train_records, spec.max_examples)
    sequences = functools.partial(
        training_sequences,
        spec=spec,
        tokenizer=tokenizer,
        is_seq2seq=is_seq2seq,
        max_len=max_seq_len,
        packing=packing,
    )
    (train, dropped), (held_out, _) = sequences(train_records), sequences(eval_records)
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
        "packing": packing,
        "train_tokens": length_stats(train),
        "dropped": dropped,
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
    if any(e.position_ids is not None for e in examples):
        # Padding continues the last example's positions: it joins that example, after every real token,
        # so under the causal mask no real token sees it (and its labels carry no loss).
        width = batch["input_ids"].shape[1]
        rows = [
            e.position_ids if e.position_ids is not None else list(range(len(e.input_ids))) for e in examples
        ]
        batch["position_ids"] = torch.tensor(
            [row + list(range(row[-1] + 1, row[-1] + 1 + width - len(row))) for row in rows], dtype=torch.long
        )
    if not is_seq2seq and batch["labels"].shape != batch["input_ids"].shape:
        raise AssertionError("causal examples must have labels aligned with input_ids")
    return batch


def target_tokens(batch: dict[str, torch.Tensor], *, is_seq2seq: bool) -> int:
    """Tokens that carry loss: a causal LM predicts position t+1 from t, so its first label is never used."""
    labels = batch["labels"] if is_seq2seq else batch["labels"][:, 1:]
    return int((labels != IGNORE_INDEX).sum())
