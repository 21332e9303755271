"""Datasets: every input shape users bring, loss masks, splits, subsets and fingerprints."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from advisor.errors import DataError
from advisor.specs import DatasetSpec
from proxy_runs import synthetic
from proxy_runs.data import (
    IGNORE_INDEX,
    Example,
    collate,
    prepare_data,
    read_records,
    split_records,
    subsample,
    tokenize_records,
)
from proxy_runs.models import load_model_and_tokenizer


@pytest.fixture(scope="module")
def llama_tokenizer(tiny_llama: Path):
    return load_model_and_tokenizer(str(tiny_llama)).tokenizer


def test_instruction_loss_is_on_the_response_only(llama_tokenizer, instruction_jsonl: Path) -> None:
    data = prepare_data(
        DatasetSpec(path=str(instruction_jsonl)),
        llama_tokenizer,
        is_seq2seq=False,
        max_seq_len=64,
        packing=False,
    )
    example = data.train[0]
    masked = [label == IGNORE_INDEX for label in example.labels]
    prompt_length = masked.index(False)
    assert prompt_length > 0 and not any(masked[prompt_length:]), "prompt masked, then only response"
    response = llama_tokenizer.decode(example.input_ids[prompt_length:], skip_special_tokens=True)
    assert response.strip() in {r["output"] for r in synthetic.instruction_records(240, seed=1)}


def test_text_format_packs_documents_into_full_blocks(llama_tokenizer, text_jsonl: Path) -> None:
    data = prepare_data(
        DatasetSpec(path=str(text_jsonl), format="text"),
        llama_tokenizer,
        is_seq2seq=False,
        max_seq_len=32,
        packing=True,
    )
    assert all(len(e.input_ids) == 32 for e in data.train[:-1])
    assert all(e.labels == e.input_ids for e in data.train)


def test_text_unpacked_is_one_example_per_record_cut_at_max_seq_len(llama_tokenizer) -> None:
    records = synthetic.text_records(40, seed=3)
    examples = tokenize_records(
        records,
        DatasetSpec(path="x", format="text"),
        llama_tokenizer,
        is_seq2seq=False,
        max_len=20,
        packing=False,
    )
    eos = llama_tokenizer.eos_token_id
    documents = [llama_tokenizer(r["text"], add_special_tokens=False)["input_ids"] + [eos] for r in records]
    assert [e.input_ids for e in examples] == [document[:20] for document in documents]
    assert all(e.labels == e.input_ids for e in examples)
    assert any(len(d) > 20 for d in documents) and any(len(d) <= 20 for d in documents), "both kinds occur"


def test_the_fingerprint_records_packing(llama_tokenizer, text_jsonl: Path) -> None:
    def prepared(packing: bool):
        spec = DatasetSpec(path=str(text_jsonl), format="text")
        return prepare_data(spec, llama_tokenizer, is_seq2seq=False, max_seq_len=32, packing=packing)

    unpacked, packed = prepared(False), prepared(True)
    assert unpacked.fingerprint["packing"] is False and packed.fingerprint["packing"] is True
    assert unpacked.fingerprint["n_train"] + unpacked.fingerprint["n_eval"] == 120, "one example per record"


def test_instruction_with_train_on_prompt_takes_the_loss_on_every_token(llama_tokenizer) -> None:
    records = synthetic.instruction_records(20, seed=1)
    spec = DatasetSpec(path="x", train_on_prompt=True)
    examples = tokenize_records(records, spec, llama_tokenizer, is_seq2seq=False, max_len=64, packing=False)
    assert len(examples) == 20 and all(e.labels == e.input_ids for e in examples)


def test_packed_instructions_are_whole_examples_joined_up_to_max_seq_len(llama_tokenizer) -> None:
    records = synthetic.instruction_records(60, seed=1)

    def examples(packing: bool) -> list[Example]:
        return tokenize_records(
            records, DatasetSpec(path="x"), llama_tokenizer, is_seq2seq=False, max_len=160, packing=packing
        )

    unpacked, packed = examples(False), examples(True)
    assert len(packed) < len(unpacked) / 2
    assert all(len(e.input_ids) <= 160 for e in packed)
    assert [t for e in packed for t in e.labels] == [t for e in unpacked for t in e.labels]
    assert [t for e in packed for t in e.input_ids] == [t for e in unpacked for t in e.input_ids]


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_a_packed_sequence_trains_each_example_as_if_it_were_alone(arch: str, request) -> None:
    """Packed examples do not attend to each other (Axolotl's sample packing, TRL's padding-free packing):
    the loss of a packed sequence is the sum of its examples' losses, each computed on its own."""
    import torch

    from proxy_runs.loss import summed_token_loss

    setup = load_model_and_tokenizer(str(request.getfixturevalue(arch)))
    records = synthetic.instruction_records(6, seed=3)
    alone = tokenize_records(
        records, DatasetSpec(path="x"), setup.tokenizer, is_seq2seq=False, max_len=256, packing=False
    )
    packed = tokenize_records(
        records, DatasetSpec(path="x"), setup.tokenizer, is_seq2seq=False, max_len=256, packing=True
    )
    assert len(packed) < len(alone) and packed[0].position_ids is not None
    pad_id = int(setup.tokenizer.pad_token_id)

    def loss(examples: list[Example]) -> float:
        batch = collate(examples, pad_id, is_seq2seq=False)
        return float(summed_token_loss(setup.model, batch, is_seq2seq=False)[0])

    with torch.no_grad():
        packed_loss, separate = loss(packed), sum(loss([example]) for example in alone)
    assert packed_loss == pytest.approx(separate, rel=1e-4)


def test_prompt_template_none_joins_prompt_and_response_as_written(llama_tokenizer) -> None:
    """TRL's prompt/completion data: no instruction layout between them, loss on the completion and EOS."""
    record = {"prompt": "2 + 2 =", "completion": " 4"}
    spec = DatasetSpec(
        path="x", prompt_field="prompt", response_field="completion", input_field=None, prompt_template="none"
    )
    (example,) = tokenize_records(
        [record], spec, llama_tokenizer, is_seq2seq=False, max_len=64, packing=False
    )
    prompt = llama_tokenizer("2 + 2 =", add_special_tokens=False)["input_ids"]
    response = llama_tokenizer(" 4", add_special_tokens=False)["input_ids"] + [llama_tokenizer.eos_token_id]
    assert example.input_ids == prompt + response
    assert example.labels == [IGNORE_INDEX] * len(prompt) + response
    templated = DatasetSpec(path="x", prompt_field="prompt", response_field="completion", input_field=None)
    (laid_out,) = tokenize_records(
        [record], templated, llama_tokenizer, is_seq2seq=False, max_len=64, packing=False
    )
    assert len(laid_out.input_ids) > len(example.input_ids)  # `### Instruction: … ### Response:` around it


def test_packing_is_refused_for_an_encoder_decoder(llama_tokenizer, seq2seq_jsonl: Path) -> None:
    spec = DatasetSpec(
        path=str(seq2seq_jsonl), format="seq2seq", prompt_field="source", response_field="target"
    )
    with pytest.raises(DataError, match="packing to false") as caught:
        prepare_data(spec, llama_tokenizer, is_seq2seq=True, max_seq_len=64, packing=True)
    assert caught.value.field == "training.packing"


def test_seq2seq_keeps_source_and_target_apart(tiny_t5: Path, seq2seq_jsonl: Path) -> None:
    tokenizer = load_model_and_tokenizer(str(tiny_t5)).tokenizer
    spec = DatasetSpec(
        path=str(seq2seq_jsonl), format="seq2seq", prompt_field="source", response_field="target"
    )
    example = prepare_data(spec, tokenizer, is_seq2seq=True, max_seq_len=64, packing=False).train[0]
    assert IGNORE_INDEX not in example.labels
    assert example.labels[-1] == tokenizer.eos_token_id
    assert "Reverse" in tokenizer.decode(example.input_ids) or "capitals" in tokenizer.decode(
        example.input_ids
    )


def test_long_prompts_lose_their_start_but_keep_the_response(llama_tokenizer, tmp_path: Path) -> None:
    path = synthetic.write_jsonl(
        [{"instruction": "word " * 200, "input": "", "output": "done"}] * 4, tmp_path / "long.jsonl"
    )
    data = prepare_data(
        DatasetSpec(path=str(path)), llama_tokenizer, is_seq2seq=False, max_seq_len=32, packing=False
    )
    example = data.train[0]
    assert len(example.input_ids) <= 32
    assert (
        llama_tokenizer.decode(
            [t for t in example.labels if t != IGNORE_INDEX], skip_special_tokens=True
        ).strip()
        == "done"
    )


# Chat: OpenAI or ShareGPT turns, the loss on the assistant's replies.

CONVERSATION = [
    ("system", "Answer briefly."),
    ("user", "Reverse the word.\n\nkalo"),
    ("assistant", "olak"),
    ("user", "Add the two numbers.\n\n3 + 4"),
    ("assistant", "7"),
]
SHAREGPT_SPEAKERS = {"system": "system", "user": "human", "assistant": "gpt"}
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def openai_record(turns: list[tuple[str, str]]) -> dict[str, object]:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def sharegpt_record(turns: list[tuple[str, str]]) -> dict[str, object]:
    return {"conversations": [{"from": SHAREGPT_SPEAKERS[role], "value": text} for role, text in turns]}


def chat(tokenizer, record: dict[str, object], **fields: object) -> Example:
    spec = DatasetSpec(path="x", format="chat", **fields)  # type: ignore[arg-type]
    (example,) = tokenize_records([record], spec, tokenizer, is_seq2seq=False, max_len=256, packing=False)
    return example


def loss_spans(tokenizer, example: Example) -> list[str]:
    """The decoded runs of tokens that take the loss."""
    runs = itertools.groupby(example.labels, key=lambda label: label != IGNORE_INDEX)
    return [
        tokenizer.decode(list(run), clean_up_tokenization_spaces=False)
        for takes_loss, run in runs
        if takes_loss
    ]


def with_template(tiny_llama: Path, template: str):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    tokenizer.chat_template = template
    return tokenizer


def test_chat_loss_is_on_the_assistant_replies_only(llama_tokenizer) -> None:
    example = chat(llama_tokenizer, openai_record(CONVERSATION))
    eos = llama_tokenizer.eos_token_id
    replies = [llama_tokenizer(text, add_special_tokens=False)["input_ids"] + [eos] for text in ("olak", "7")]
    assert [label for label in example.labels if label != IGNORE_INDEX] == replies[0] + replies[1]
    assert "Answer briefly." in llama_tokenizer.decode(example.input_ids), "the system turn is in the input"


def test_sharegpt_turns_train_like_the_same_openai_turns(llama_tokenizer) -> None:
    openai = chat(llama_tokenizer, openai_record(CONVERSATION))
    assert chat(llama_tokenizer, sharegpt_record(CONVERSATION), messages_field="conversations") == openai


def test_one_exchange_trains_on_the_tokens_of_the_same_instruction(llama_tokenizer) -> None:
    """Without a chat template, a conversation is laid out as an instruction is."""
    conversation = chat(llama_tokenizer, openai_record([("user", "Say hi."), ("assistant", "hi")]))
    (instruction,) = tokenize_records(
        [{"instruction": "Say hi.", "output": "hi"}],
        DatasetSpec(path="x"),
        llama_tokenizer,
        is_seq2seq=False,
        max_len=256,
        packing=False,
    )
    assert conversation == instruction


def test_chat_with_train_on_prompt_takes_the_loss_on_every_token(llama_tokenizer) -> None:
    example = chat(llama_tokenizer, openai_record(CONVERSATION), train_on_prompt=True)
    assert example.labels == example.input_ids


def test_chat_through_the_models_template_takes_the_loss_on_reply_and_end_of_turn(tiny_llama: Path) -> None:
    tokenizer = with_template(tiny_llama, CHATML)
    example = chat(tokenizer, openai_record(CONVERSATION))
    assert loss_spans(tokenizer, example) == ["olak<|im_end|>\n", "7<|im_end|>\n"]
    assert tokenizer.decode(
        example.input_ids, clean_up_tokenization_spaces=False
    ) == tokenizer.apply_chat_template(openai_record(CONVERSATION)["messages"], tokenize=False)


def test_a_template_that_rewrites_earlier_turns_still_puts_the_loss_on_the_replies(tiny_llama: Path) -> None:
    """As Qwen3's drops the reasoning of all but the last reply: the text rendered for a turn changes when
    a later turn comes, so the replies are found in the rendering of the whole conversation."""
    marks_the_last_reply = CHATML.replace(
        "{{ m['content'] }}",
        "{% if loop.last and m['role'] == 'assistant' %}<think></think>{% endif %}{{ m['content'] }}",
    )
    tokenizer = with_template(tiny_llama, marks_the_last_reply)
    assert loss_spans(tokenizer, chat(tokenizer, openai_record(CONVERSATION))) == ["olak", "7"]


def test_a_conversation_the_template_refuses_names_the_messages_field(tiny_llama: Path) -> None:
    no_system = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}" + CHATML
    )
    with pytest.raises(DataError, match="chat template refuses") as caught:
        chat(with_template(tiny_llama, no_system), openai_record(CONVERSATION))
    assert caught.value.field == "dataset.messages_field"


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ({"conversations": []}, "no field 'messages'"),
        ({"messages": "hello"}, "not a non-empty list of turns"),
        ({"messages": [{"role": "narrator", "content": "Once"}]}, "turn 1 is not a turn with a known role"),
        ({"messages": [{"role": "user"}]}, "turn 1 is not a turn with a known role"),
    ],
)
def test_a_record_without_usable_turns_names_the_messages_field(
    llama_tokenizer, record: dict[str, object], says: str
) -> None:
    with pytest.raises(DataError, match=says) as caught:
        chat(llama_tokenizer, record)
    assert caught.value.field == "dataset.messages_field"


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet", "saved"])
def test_every_file_shape_reads_the_same_records(suffix: str, tmp_path: Path) -> None:
    records = synthetic.instruction_records(12, seed=5)
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        synthetic.write_jsonl(records, path)
    elif suffix == ".json":
        path.write_text(json.dumps(records))
    elif suffix == ".csv":
        with path.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        import datasets

        datasets.DatasetDict({"train": datasets.Dataset.from_list(records)}).save_to_disk(str(path))
    assert read_records(str(path)) == records


def test_plain_text_files_become_one_record_per_paragraph(tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text("First paragraph.\nStill first.\n\nSecond one.\n\n\n")
    assert read_records(str(path)) == [{"text": "First paragraph.\nStill first."}, {"text": "Second one."}]


def test_split_is_deterministic_and_disjoint() -> None:
    records = [{"i": i} for i in range(100)]
    train, held_out = split_records(records, 0.2)
    assert (train, held_out) == split_records(records, 0.2)
    assert len(held_out) == 20 and not {r["i"] for r in train} & {r["i"] for r in held_out}


def test_smaller_subsamples_nest_inside_larger_ones() -> None:
    records = list(range(1000))
    small, large = subsample(records, 100), subsample(records, 400)
    assert len(small) == 100 and set(small) <= set(large)


def test_fingerprint_is_stable_and_tracks_content(llama_tokenizer, tmp_path: Path) -> None:
    first = synthetic.write_jsonl(synthetic.instruction_records(50, seed=1), tmp_path / "a.jsonl")
    other = synthetic.write_jsonl(synthetic.instruction_records(50, seed=2), tmp_path / "b.jsonl")

    def fingerprint(path: Path) -> dict:
        return prepare_data(
            DatasetSpec(path=str(path)), llama_tokenizer, is_seq2seq=False, max_seq_len=64, packing=False
        ).fingerprint

    assert fingerprint(first) == fingerprint(first)
    assert fingerprint(first)["content_sha256"] != fingerprint(other)["content_sha256"]
    assert fingerprint(first)["n_train"] + fingerprint(first)["n_eval"] == 50
    assert set(fingerprint(first)["train_tokens"]) == {"mean", "p50", "p95", "max"}


def test_max_examples_subsamples_the_training_split(llama_tokenizer, instruction_jsonl: Path) -> None:
    data = prepare_data(
        DatasetSpec(path=str(instruction_jsonl), max_examples=30),
        llama_tokenizer,
        is_seq2seq=False,
        max_seq_len=64,
        packing=False,
    )
    assert len(data.train) == 30


def test_collate_pads_inputs_and_masks_padded_labels() -> None:
    from proxy_runs.data import Example

    batch = collate([Example([5, 6, 7], [5, 6, 7]), Example([8], [8])], pad_id=0, is_seq2seq=False)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]


# Bad input: each error names the spec field to fix.


def test_a_missing_dataset_file_names_dataset_path(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        read_records(str(tmp_path / "nope.jsonl"))
    assert caught.value.field == "dataset.path"


def test_an_empty_dataset_names_dataset_path(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty") as caught:
        read_records(str(tmp_path / "empty.jsonl"))
    assert caught.value.field == "dataset.path"


def test_a_field_missing_from_the_data_is_named(llama_tokenizer, instruction_jsonl: Path) -> None:
    with pytest.raises(DataError) as caught:
        prepare_data(
            DatasetSpec(path=str(instruction_jsonl), prompt_field="question"),
            llama_tokenizer,
            is_seq2seq=False,
            max_seq_len=64,
            packing=False,
        )
    assert caught.value.field == "dataset.prompt_field"
    assert "instruction" in str(caught.value)  # the columns that do exist are listed


def test_malformed_jsonl_is_reported_not_crashed(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"instruction": "x"}\n{not json\n')
    with pytest.raises(DataError, match="cannot read"):
        read_records(str(tmp_path / "bad.jsonl"))


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("scalars.jsonl", '{"instruction": "x"}\n7\n', "record 2 is a JSON int, not an object"),
        ("list.json", '[["a", "b"]]', "record 1 is a JSON list, not an object"),
        ("deep.jsonl", '{"a": ' * 5000 + "1" + "}" * 5000 + "\n", "nests too deeply"),
        ("huge_field.csv", "instruction,output\n" + "x" * 200_000 + ",y\n", "field larger than field limit"),
    ],
)
def test_files_that_parse_into_no_records_are_named_not_crashed(
    tmp_path: Path, name: str, content: str, says: str
) -> None:
    """Shapes Python's parsers accept or fail on in their own way (a bare number on a line, nesting past
    the recursion limit, a CSV field over 128 KiB) end as an error naming dataset.path."""
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=says) as caught:
        read_records(str(tmp_path / name))
    assert caught.value.field == "dataset.path"


def test_a_hub_dataset_offline_fails_with_a_clear_message() -> None:
    with pytest.raises(DataError) as caught:
        read_records("some-org/some-dataset")
    assert caught.value.field == "dataset.path"
    assert "local file" in str(caught.value)
