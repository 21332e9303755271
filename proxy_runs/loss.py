"""The one loss every proxy computation uses: summed token cross-entropy and the token count.

Summing (instead of averaging per micro-batch) lets gradient accumulation and evaluation weight every
target token equally, however the effective batch is split into micro-batches.
"""

from __future__ import annotations

import torch
from torch import nn

from proxy_runs.data import target_tokens


def summed_token_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], *, is_seq2seq: bool
) -> tuple[torch.Tensor, int]:
    """(sum of per-token losses, number of target tokens) for one micro-batch already on the device."""
    n_tokens = target_tokens(batch, is_seq2seq=is_seq2seq)
    if "position_ids" in batch:
        # Packed examples: transformers builds the block-diagonal mask from their restarting positions, but
        # only with no attention mask and no KV cache (a cache means generation, where positions continue).
        batch = {key: value for key, value in batch.items() if key != "attention_mask"}
        output = model(**batch, use_cache=False)
        return output.loss * n_tokens, n_tokens
    output = model(**batch)  # transformers returns the mean over target tokens
    return output.loss * n_tokens, n_tokens
