"""How many probe samples one Hessian-vector product takes at once: the largest micro-batch that fits.

An HVP keeps the graph of a gradient alive for a second backward, so its memory grows with the micro-batch
(SmolLM2-135M at 128 tokens: 2.8 GiB at 2 samples, 8.9 GiB at 8, the 49,152-wide logits dominating). Small
micro-batches are safe but slow where per-call overhead dominates: on a tiny model, 32 samples in
micro-batches of 2 cost 16 double backwards per HVP instead of one.

So the probe measures once, per (model, sequence length, method, device), the peak memory of one HVP over
its two longest samples, takes half of it as the cost of one sample (an upper bound: part of the peak is the
same at any micro-batch), and fits as many samples as the memory budget allows:
- on CUDA the peak is the allocator's own (`max_memory_allocated`), the budget 80% of the free memory;
- on CPU, where PyTorch keeps no allocator statistics (and the process's resident memory does not shrink
  when tensors are freed, so its growth undercounts an HVP that reuses freed memory), it is the bytes of
  every tensor the two backward passes save (deduplicated by storage, the model's own weights left out: they
  are in memory already), times CPU_TRANSIENT_MARGIN for the buffers that live only within one operation and
  the gradients; the budget is LORA_ADVISOR_PROBE_MEMORY_GB or else a quarter
  of the memory available (other runs and the OS need the rest).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from advisor.errors import SpecError
from proxy_runs.probes.hvp import HessianOperator
from proxy_runs.resume import available_memory_bytes

PROBE_MEMORY_ENV = "LORA_ADVISOR_PROBE_MEMORY_GB"
CPU_SHARE = 0.25  # of the memory available, when LORA_ADVISOR_PROBE_MEMORY_GB is not set
CUDA_SHARE = 0.8  # of the free GPU memory: the allocator fragments, and the model's weights stay
# Saved tensors are most of an HVP's memory; operations also hold their outputs and workspaces while they run
# (the widest: a softmax over the vocabulary and its gradient). SmolLM2-135M, one HVP over 2 and over 4
# samples of 35 tokens, each in a fresh process: resident memory grew by 192 MB per added sample, the saved
# tensors (weights left out) by 110 MB: 1.75×.
CPU_TRANSIENT_MARGIN = 2.0
MEASURED_SAMPLES = 2


@dataclass(frozen=True)
class MicroBatchSizing:
    """The micro-batch chosen, and what it was chosen from (stored with the probe's report)."""

    micro_batch_size: int
    bytes_per_sample: float  # measured peak of one HVP over MEASURED_SAMPLES samples, divided by them
    budget_bytes: float
    measured_on: str  # "cuda allocator peak" or "cpu saved tensors"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Bytes one sample's HVP takes, measured once per process and (model, length, method, rank, device); the
# budget is read again every time (free memory changes).
_BYTES_PER_SAMPLE: dict[tuple[str, ...], float] = {}


def memory_budget_bytes(device: torch.device) -> float:
    """What one HVP may use: 80% of the GPU's free memory, or the CPU cap (see the module docstring)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return CUDA_SHARE * free
    text = os.environ.get(PROBE_MEMORY_ENV)
    if text is not None:
        try:
            gigabytes = float(text)
        except ValueError:
            gigabytes = -1.0
        if not gigabytes > 0:
            raise SpecError(PROBE_MEMORY_ENV, "must be a positive number of GB", value=text, fix="e.g. 8")
        return gigabytes * 1e9
    available = available_memory_bytes()  # the container's limit too (proxy_runs.resume)
    return CPU_SHARE * (available if available is not None else _physical_memory_bytes())


def _physical_memory_bytes() -> float:
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def peak_bytes(
    device: torch.device, work: Callable[[], object], resident: Iterable[torch.Tensor] = ()
) -> float:
    """Peak memory `work` adds on `device` (CUDA: the allocator's own peak above what was in use before; CPU:
    the saved tensors' bytes with a margin, not counting those of `resident`, see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        work()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - before)
    return CPU_TRANSIENT_MARGIN * saved_tensor_bytes(work, resident)


def saved_tensor_bytes(work: Callable[[], object], resident: Iterable[torch.Tensor] = ()) -> float:
    """Bytes of the distinct storages autograd saves for backward while `work` runs, but those of `resident`
    (tensors allocated before it, e.g. the model's weights). The storages are held until it returns, so a
    freed one's address is never counted again for another."""
    already = {tensor.untyped_storage().data_ptr() for tensor in resident}
    storages: dict[int, torch.UntypedStorage] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages.setdefault(storage.data_ptr(), storage)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        work()
    return float(sum(storage.nbytes() for ptr, storage in storages.items() if ptr not in already))


def size_micro_batch(
    key: tuple[str, ...],
    operator: HessianOperator,
    *,
    samples: int,
    resident: Iterable[torch.Tensor] = (),
) -> MicroBatchSizing:
    """The micro-batch for `samples` probe samples, from the memory of one HVP on `operator` (whose one
    micro-batch holds the longest samples; `resident`: the model's tensors, in memory already), measured
    unless this key was measured before in this process."""
    if key not in _BYTES_PER_SAMPLE:
        (measured_batch,) = operator.batches
        unit = torch.ones(operator.dim, dtype=operator.dtype, device=operator.device)
        measured = peak_bytes(operator.device, lambda: operator.matvec(unit / unit.norm()), resident)
        _BYTES_PER_SAMPLE[key] = max(measured, 1.0) / len(next(iter(measured_batch.values())))
    per_sample = _BYTES_PER_SAMPLE[key]
    budget = memory_budget_bytes(operator.device)
    fitting = max(1, int(budget // per_sample))
    where = "cuda allocator peak" if operator.device.type == "cuda" else "cpu saved tensors"
    return MicroBatchSizing(min(fitting, samples), per_sample, budget, where)
