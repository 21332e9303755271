"""Probe micro-batches sized to the machine: the largest whose Hessian-vector products fit the memory
budget, measured on the probe's longest samples; the curvature does not depend on the choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from advisor.errors import SpecError
from advisor.specs import parse_spec
from proxy_runs.probes.report import probe_spec
from proxy_runs.probes.sizing import PROBE_MEMORY_ENV
from tests.conftest import make_spec

MODULE = ["layers.0.self_attn.q_proj"]


def test_without_a_micro_batch_the_probe_fits_as_many_samples_as_the_memory_allows_and_says_how(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, rank=8))
    report = probe_spec(spec, modules=MODULE, samples=8)

    sizing = report.micro_batch_sizing
    assert sizing is not None and sizing["measured_on"] == "cpu saved tensors"
    assert sizing["bytes_per_sample"] > 0 and sizing["budget_bytes"] > 0
    # a tiny model's HVP takes kilobytes to megabytes per sample: all 8 go through at once
    assert report.micro_batch_size == 8 == sizing["micro_batch_size"]


def test_a_memory_cap_below_one_samples_hvp_gives_micro_batches_of_one_and_the_same_curvature(
    tiny_llama: Path, instruction_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, rank=8))
    roomy = probe_spec(spec, modules=MODULE, samples=8)
    monkeypatch.setenv(PROBE_MEMORY_ENV, "1e-9")  # one byte
    capped = probe_spec(spec, modules=MODULE, samples=8)

    assert capped.micro_batch_size == 1 and roomy.micro_batch_size == 8
    # token-weighted over the same samples: the micro-batches change the arithmetic's order, nothing else
    assert capped.modules[0].eigenvalue == pytest.approx(roomy.modules[0].eigenvalue, rel=1e-4)


@pytest.mark.parametrize("value", ["lots", "0", "-2"])
def test_a_bad_memory_cap_is_an_error_naming_the_setting(
    value: str, tiny_llama: Path, instruction_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PROBE_MEMORY_ENV, value)
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, rank=8))
    with pytest.raises(SpecError, match=PROBE_MEMORY_ENV):
        probe_spec(spec, modules=MODULE, samples=8)


def test_a_given_micro_batch_is_used_as_given(tiny_llama: Path, instruction_jsonl: Path) -> None:
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, rank=8))
    report = probe_spec(spec, modules=MODULE, samples=8, micro_batch_size=2)
    assert report.micro_batch_size == 2 and report.micro_batch_sizing is None
