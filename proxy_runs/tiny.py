"""Tiny models built from configs, with a tokenizer trained on the spot, saved as ordinary local folders.

Tests and benchmarks use them so that the real loading path (`from_pretrained` on a folder) is what runs,
with no hub access. Architectures: Llama (nn.Linear projections, what PEFT's methods all support), GPT-2
(Conv1D projections) and T5 (encoder-decoder).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
)

TinyArch = Literal["llama", "gpt2", "t5"]
# T5 convention: pad = 0 doubles as the decoder start token, eos = 1.
SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>", "<s>"]


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `corpus` (a few KB train in milliseconds)."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>"
    )


def tiny_config(arch: TinyArch, vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 4):
    """Configs small enough for a dense Hessian of a LoRA adapter, big enough to learn simple tasks."""
    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=1024,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=3,
            tie_word_embeddings=True,
        )
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=1024,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=3,
        )
    if arch == "t5":
        t5 = T5Config(
            vocab_size=vocab_size,
            d_model=hidden,
            d_kv=hidden // heads,
            d_ff=2 * hidden,
            num_layers=layers,
            num_decoder_layers=layers,
            num_heads=heads,
            pad_token_id=0,
            eos_token_id=1,
            feed_forward_proj="relu",
        )
        t5.decoder_start_token_id = 0  # generic config attributes, not in T5Config's typed signature
        t5.tie_word_embeddings = True
        return t5
    raise ValueError(f"unknown tiny architecture {arch!r}; choose llama, gpt2 or t5")


def build_tiny_model(arch: TinyArch, vocab_size: int, seed: int = 0, **sizes: int) -> PreTrainedModel:
    torch.manual_seed(seed)
    config = tiny_config(arch, vocab_size, **sizes)
    auto = AutoModelForSeq2SeqLM if arch == "t5" else AutoModelForCausalLM
    return auto.from_config(config)


def save_tiny_model(
    folder: str | Path,
    arch: TinyArch,
    corpus: Iterable[str],
    vocab_size: int = 512,
    seed: int = 0,
    **sizes: int,
) -> Path:
    """Train a tokenizer on `corpus`, build a tiny model of `arch`, and save both into `folder`."""
    folder = Path(folder)
    tokenizer = train_tokenizer(corpus, vocab_size)
    model = build_tiny_model(arch, len(tokenizer), seed=seed, **sizes)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def pretrain_tiny_model(
    folder: str | Path,
    text_path: str | Path,
    out: str | Path,
    *,
    steps: int = 60,
    learning_rate: float = 3e-3,
    batch_size: int = 16,
    seq_len: int = 64,
) -> Path:
    """Full fine-tune a tiny model on plain text with the proxy engine itself, and save the result.

    A randomly initialised model has near-zero logits that a low-rank adapter cannot move far, so LoRA
    on it learns almost nothing; after a short pretraining its embeddings and head carry the token
    statistics and an adapter has something to adapt, as with a real base model.
    """
    from advisor.specs import parse_spec
    from proxy_runs.engine import RunBudget, setup_proxy, train_proxy

    spec = parse_spec(
        {
            "model": str(folder),
            "dataset": {"path": str(text_path), "format": "text"},
            "method": "full",
            "training": {"max_seq_len": seq_len, "epochs": 100, "packing": True},
        }
    )
    setup = setup_proxy(spec)
    record = train_proxy(
        spec,
        batch_size=batch_size,
        learning_rate=learning_rate,
        budget=RunBudget(max_steps=steps),
        setup=setup,
        eval_at_start=False,
    )
    if record.status != "success":
        raise RuntimeError(f"pretraining the tiny model failed: {record.status} {record.error}")
    out = Path(out)
    model = setup.model
    assert isinstance(model, PreTrainedModel)  # full fine-tuning wraps nothing
    model.save_pretrained(out)
    setup.tokenizer.save_pretrained(out)
    return out
