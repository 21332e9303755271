"""Loading models from local folders (the real path that hub ids also take), and clear load errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from advisor.errors import ModelLoadError
from proxy_runs.models import load_model_and_tokenizer


def test_a_causal_lm_folder_loads_with_eager_attention_and_a_pad_token(tiny_llama: Path) -> None:
    loaded = load_model_and_tokenizer(str(tiny_llama))
    assert not loaded.is_seq2seq
    assert loaded.model.config._attn_implementation == "eager"  # second derivatives for the probes
    assert loaded.tokenizer.pad_token_id is not None


def test_a_t5_folder_loads_as_seq2seq(tiny_t5: Path) -> None:
    assert load_model_and_tokenizer(str(tiny_t5)).is_seq2seq


def test_a_gpt2_folder_loads(tiny_gpt2: Path) -> None:
    assert load_model_and_tokenizer(str(tiny_gpt2)).model.config.model_type == "gpt2"


@pytest.mark.parametrize("reference", ["/no/such/model", "./missing-folder", "weights.gguf"])
def test_a_model_path_that_does_not_exist_names_the_model_field(reference: str) -> None:
    with pytest.raises(ModelLoadError) as caught:
        load_model_and_tokenizer(reference)
    assert caught.value.field == "model" and "no such file" in str(caught.value)


def test_a_hub_id_on_an_offline_machine_says_so() -> None:
    with pytest.raises(ModelLoadError) as caught:
        load_model_and_tokenizer("some-org/some-model")
    assert caught.value.field == "model" and "offline" in str(caught.value)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match="gguf"):
        load_model_and_tokenizer(str(tmp_path / "model.bin"))


def test_a_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        load_model_and_tokenizer(str(tmp_path))
    assert caught.value.field == "model"
