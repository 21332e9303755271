"""`advisor probe SPEC`: λ_max per module at initialisation, and optionally the gradient noise scale.

Importing this module is cheap (no torch): the main CLI builds its parser on every invocation, and the
probe's heavy imports happen only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from advisor.errors import AdvisorError, SpecError

if TYPE_CHECKING:
    from proxy_runs.probes.report import ProbeReport

ESTIMATOR_HELP = (
    "lora_block (default: LoRA's block Hessian at B = 0, one gradient and a few HVPs; Lanczos elsewhere), "
    "lanczos (arXiv 2602.04998's), power (residual stop) or power_delta (naive baseline)"
)


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="study spec (YAML or JSON)")
    parser.add_argument("--estimator", default="lora_block", help=ESTIMATOR_HELP)
    parser.add_argument(
        "--modules",
        nargs="+",
        metavar="NAME",
        default=None,
        help="'all', or module names / suffixes (q_proj, layers.0.self_attn.v_proj); "
        "default: q/v projections of the first, middle and last layers",
    )
    parser.add_argument(
        "--noise-scale",
        action="store_true",
        help="also estimate the gradient noise scale B_simple (a critical-batch estimate)",
    )
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument(
        "--tol", type=float, default=1e-3, help="stop when the residual ‖Hv − λv‖ ≤ tol·|λ| (default 1e-3)"
    )
    parser.add_argument("--samples", type=int, default=32, help="training examples the loss is taken over")
    parser.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        help="examples per HVP micro-batch (default: the largest that fits 80%% of the GPU's free memory, or "
        "on CPU LORA_ADVISOR_PROBE_MEMORY_GB or a quarter of the memory available)",
    )
    parser.add_argument("--max-iter", type=int, default=100, help="HVP cap per module")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=0)


def format_report(report: ProbeReport) -> str:
    """The human-readable table: one row per module, then the method summary and the noise scale."""
    lines = [
        f"probe  {report.model}  method={report.method} r={report.rank} α={report.alpha}  "
        f"estimator={report.estimator} tol={report.tol:g}",
        f"       {report.samples} samples, {report.tokens} target tokens, "
        f"micro-batch {report.micro_batch_size}, {report.meta.get('device')}",
        "",
        f"{'module':<44} {'params':>8} {'λ_max':>11} {'HVPs':>5} {'residual':>9} {'conv':>4} {'seconds':>8}",
    ]
    for module in report.modules:
        lines.append(
            f"{module.name:<44} {module.n_params:>8} {module.eigenvalue:>11.4e} {module.iterations:>5} "
            f"{module.residual:>9.2e} {'yes' if module.converged else 'NO':>4} {module.seconds:>8.2f}"
        )
    lines += [
        "",
        f"{report.method}: median λ_max {report.median_eigenvalue:.4e}, max {report.max_eigenvalue:.4e} over "
        f"{len(report.modules)} modules; one HVP {report.seconds_per_hvp:.3f} s = "
        f"{report.hvp_over_gradient:.2f}× a gradient; total {report.seconds:.1f} s",
    ]
    if any(not m.converged for m in report.modules):
        lines.append("warning: some modules did not converge within --max-iter; their λ_max is not reliable")
    if report.noise is not None:
        noise = report.noise
        if noise.resolved:
            low, high = (f"{v:.3g}" if v is not None else "∞" for v in noise.interval)
            lines.append(
                f"gradient noise scale B_simple ≈ {noise.b_simple:.3g} examples "
                f"({noise.confidence:.0%} interval {low} … {high}; B_s={noise.small_batch}, "
                f"B_b={noise.big_batch}, {noise.draws} draws)"
            )
        else:
            lines.append(
                "gradient noise scale: not resolved (the |G|² estimate is ≤ 0: noise dominates; "
                "use more draws)"
            )
    return "\n".join(lines)


def run_probe(args: argparse.Namespace) -> int:
    """Run the probe for `args.spec`; 0 on success, 2 for a bad spec or flag, 1 when the probe fails."""
    from advisor.specs import load_spec
    from proxy_runs.probes.report import probe_spec

    modules = args.modules
    if modules == ["all"]:
        modules = "all"
    try:
        spec = load_spec(args.spec)
        report = probe_spec(
            spec,
            estimator=args.estimator,
            modules=modules,
            noise_scale=args.noise_scale,
            tol=args.tol,
            device=args.device,
            samples=args.samples,
            micro_batch_size=args.micro_batch,
            max_iter=args.max_iter,
            seed=args.seed,
        )
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except AdvisorError as error:  # ProbeError and friends: the spec is fine, the probe cannot run
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        print(format_report(report))
    return 0
