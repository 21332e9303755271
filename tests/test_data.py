"""Datasets: every input shape users bring, loss masks, splits, subsets and fingerprints."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from advisor.errors import DataError
from advisor.specs import DatasetSpec
from proxy_runs import synthetic
from proxy_runs.data import IGNORE_INDEX, collate, prepare_data, read_records, split_records, subsample
from proxy_runs.models import load_model_and_tokenizer


@pytest.fixture(scope="module")
def llama_tokenizer(tiny_llama: Path):
    return load_model_and_tokenizer(str(tiny_llama)).tokenizer


def test_instruction_loss_is_on_the_response_only(llama_tokenizer, instruction_jsonl: Path) -> None:
    data = prepare_data(
        DatasetSpec(path=str(instruction_jsonl)), llama_tokenizer, is_seq2seq=False, max_seq_len=64
    )
    example = data.train[0]
    masked = [label == IGNORE_INDEX for label in example.labels]
    prompt_length = masked.index(False)
    assert prompt_length > 0 and not any(masked[prompt_length:]), "prompt masked, then only response"
    response = llama_tokenizer.decode(example.input_ids[prompt_length:], skip_special_tokens=True)
    assert response.strip() in {r["output"] for r in synthetic.instruction_records(240, seed=1)}


def test_text_format_packs_documents_into_full_blocks(llama_tokenizer, text_jsonl: Path) -> None:
    data = prepare_data(
        DatasetSpec(path=str(text_jsonl), format="text"), llama_tokenizer, is_seq2seq=False, max_seq_len=32
    )
    assert all(len(e.input_ids) == 32 for e in data.train[:-1])
    assert all(e.labels == e.input_ids for e in data.train)


def test_seq2seq_keeps_source_and_target_apart(tiny_t5: Path, seq2seq_jsonl: Path) -> None:
    tokenizer = load_model_and_tokenizer(str(tiny_t5)).tokenizer
    spec = DatasetSpec(
        path=str(seq2seq_jsonl), format="seq2seq", prompt_field="source", response_field="target"
    )
    example = prepare_data(spec, tokenizer, is_seq2seq=True, max_seq_len=64).train[0]
    assert IGNORE_INDEX not in example.labels
    assert example.labels[-1] == tokenizer.eos_token_id
    assert "Reverse" in tokenizer.decode(example.input_ids) or "capitals" in tokenizer.decode(
        example.input_ids
    )


def test_long_prompts_lose_their_start_but_keep_the_response(llama_tokenizer, tmp_path: Path) -> None:
    path = synthetic.write_jsonl(
        [{"instruction": "word " * 200, "input": "", "output": "done"}] * 4, tmp_path / "long.jsonl"
    )
    data = prepare_data(DatasetSpec(path=str(path)), llama_tokenizer, is_seq2seq=False, max_seq_len=32)
    example = data.train[0]
    assert len(example.input_ids) <= 32
    assert (
        llama_tokenizer.decode(
            [t for t in example.labels if t != IGNORE_INDEX], skip_special_tokens=True
        ).strip()
        == "done"
    )


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
            DatasetSpec(path=str(path)), llama_tokenizer, is_seq2seq=False, max_seq_len=64
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
