"""Plotly figures as plain dicts, built from stored rows reduced to small records.

Figures are built here rather than in the browser so the shaping (which loss a heatmap cell shows, which
run counts as promoted) is typed Python with tests, and the page's script only hands them to Plotly.
Learning rates sit on a log axis everywhere: the optimum moves by factors, not by increments.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from advisor.records import CONFIRMATION_ROLE, EXTRA_RUN_ROLES

Figure = dict[str, Any]
FAILED_STATUSES = frozenset({"diverged", "failed", "canceled"})


@dataclasses.dataclass(frozen=True)
class RunPoint:
    """What the charts need of one proxy run."""

    id: int
    index: int
    status: str
    error: str | None
    batch_size: int
    learning_rate: float
    eval_loss: float | None
    examples_seen: int
    evals: tuple[tuple[int, float], ...]  # (examples seen, eval loss) after each evaluation
    role: str | None = None  # what the study ran it for; None on runs stored before roles were recorded
    resumed_from: int = 0  # examples seen when the run it went on from paused (0: it started afresh)

    @property
    def config(self) -> tuple[int, float]:
        return self.batch_size, self.learning_rate

    @property
    def label(self) -> str:
        return f"B={self.batch_size}, LR {self.learning_rate:.2e}, run {self.index}"


@dataclasses.dataclass(frozen=True)
class KnownAnswer:
    """One stored recommendation, for the trends page."""

    study_id: int | None
    model: str
    method: str
    rank: int
    dataset_examples: int | None
    batch_size: int
    learning_rate: float
    predicted_eval_loss: float | None


def finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _layout(title: str, x_title: str, y_title: str, *, x_log: bool = False, y_log: bool = False) -> Figure:
    return {
        "title": {"text": title},
        "xaxis": {"title": {"text": x_title}, "type": "log" if x_log else "-"},
        "yaxis": {"title": {"text": y_title}, "type": "log" if y_log else "-"},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "height": 380,
        "legend": {"orientation": "h", "y": -0.2},
    }


# one study ------------------------------------------------------------------------------------------


# Runs off the halving's schedule, or not on the proxy: the 2-step calibration, the trend and horizon runs
# (other lengths) and the target's confirmation runs (another model). Not compared at the first rung.
NOT_AT_A_RUNG = frozenset({"calibration", "trend", "horizon", CONFIRMATION_ROLE})


def first_rung_losses(runs: Sequence[RunPoint]) -> dict[tuple[int, float], float | None]:
    """Each config's eval loss at its first rung, where every config saw the same number of examples (the
    comparison successive halving itself makes); None when it diverged there. Repeats are averaged."""
    by_config: dict[tuple[int, float], list[RunPoint]] = defaultdict(list)
    for run in runs:
        if run.role not in NOT_AT_A_RUNG:
            by_config[run.config].append(run)
    out: dict[tuple[int, float], float | None] = {}
    for config, group in by_config.items():
        first = min(r.examples_seen for r in group)
        losses = [r.eval_loss for r in group if r.examples_seen == first and r.eval_loss is not None]
        out[config] = statistics.fmean(losses) if losses else None
    return out


def loss_vs_lr(runs: Sequence[RunPoint], recommendation: dict[str, Any] | None) -> Figure | None:
    losses = first_rung_losses(runs)
    batches = sorted({b for (b, _), loss in losses.items() if loss is not None})
    if not batches:
        return None
    data: list[Figure] = []
    for batch in batches:
        points = sorted((lr, loss) for (b, lr), loss in losses.items() if b == batch and loss is not None)
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"B={batch}",
                "x": [lr for lr, _ in points],
                "y": [loss for _, loss in points],
                "hovertemplate": "LR %{x:.2e}<br>eval loss %{y:.4f}",
            }
        )
    rec_loss = finite((recommendation or {}).get("predicted_eval_loss"))
    if recommendation and rec_loss is not None:
        star = _star("recommended (predicted, full budget)", [recommendation["learning_rate"]], [rec_loss])
        interval = [finite(end) for end in recommendation.get("predicted_eval_loss_interval") or ()]
        if len(interval) == 2 and interval[0] is not None and interval[1] is not None:
            # the forecast's 90% interval, as an asymmetric error bar
            star["error_y"] = {
                "type": "data",
                "symmetric": False,
                "array": [interval[1] - rec_loss],
                "arrayminus": [rec_loss - interval[0]],
            }
        data.append(star)
    missing = sum(1 for loss in losses.values() if loss is None)
    note = f" — {missing} diverged config(s) not shown" if missing else ""
    return {
        "data": data,
        "layout": _layout(
            f"Eval loss vs LR at the first rung{note}", "learning rate", "eval loss", x_log=True
        ),
    }


def _star(name: str, x: list[Any], y: list[Any]) -> Figure:
    return {
        "type": "scatter",
        "mode": "markers",
        "name": name,
        "x": x,
        "y": y,
        "marker": {"symbol": "star", "size": 18, "color": "#d62728", "line": {"color": "black", "width": 1}},
    }


def heatmap(runs: Sequence[RunPoint], recommendation: dict[str, Any] | None) -> Figure | None:
    """Batch size × LR, coloured by first-rung loss; x is log10(LR) so the recommended LR and the band's
    edges, which need not lie on the grid, can be drawn where they are."""
    losses = first_rung_losses(runs)
    if not losses:
        return None
    lrs = sorted({lr for _, lr in losses})
    batches = sorted({b for b, _ in losses})
    z = [[losses.get((b, lr)) for lr in lrs] for b in batches]
    data: list[Figure] = [
        {
            "type": "heatmap",
            "name": "eval loss",
            "x": [math.log10(lr) for lr in lrs],
            "y": [str(b) for b in batches],
            "z": z,
            "customdata": [[lr for lr in lrs] for _ in batches],
            "colorscale": "Viridis",
            "reversescale": True,
            "colorbar": {"title": {"text": "eval loss"}},
            "hovertemplate": "B=%{y}, LR %{customdata:.2e}<br>eval loss %{z:.4f}<extra></extra>",
        }
    ]
    diverged = [(b, lr) for (b, lr), loss in losses.items() if loss is None]
    if diverged:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "diverged",
                "x": [math.log10(lr) for _, lr in diverged],
                "y": [str(b) for b, _ in diverged],
                "marker": {"symbol": "x", "size": 14, "color": "#444"},
            }
        )
    if recommendation:
        data.extend(_band_segments(recommendation))
        data.append(
            _star(
                "recommended",
                [math.log10(recommendation["learning_rate"])],
                [str(recommendation["batch_size"])],
            )
        )
    layout = _layout("Batch size × LR (first-rung eval loss)", "learning rate", "batch size")
    layout["xaxis"].update(tickvals=[math.log10(lr) for lr in lrs], ticktext=[f"{lr:.1e}" for lr in lrs])
    layout["yaxis"].update(type="category", categoryorder="array", categoryarray=[str(b) for b in batches])
    return {"data": data, "layout": layout}


def _band_segments(recommendation: dict[str, Any]) -> list[Figure]:
    """The near-optimal band: one horizontal segment per batch size, from lr_low to lr_high."""
    pairs = (recommendation.get("band") or {}).get("pairs") or []
    xs: list[float | None] = []
    ys: list[str | None] = []
    for pair in pairs:
        low, high = finite(pair.get("lr_low")), finite(pair.get("lr_high"))
        if low and high:
            xs += [math.log10(low), math.log10(high), None]
            ys += [str(pair["batch_size"]), str(pair["batch_size"]), None]
    if not xs:
        return []
    line = {"color": "#d62728", "width": 4}
    return [{"type": "scatter", "mode": "lines", "name": "near-optimal band", "x": xs, "y": ys, "line": line}]


def run_outcome(run: RunPoint, runs: Sequence[RunPoint], top_examples: int) -> str:
    """promoted: the same config ran again further in the halving; pruned: it stopped below the top rung;
    top rung; or the run's role when the study ran it for something else (a second seed, a horizon run)."""
    if run.status in FAILED_STATUSES:
        return run.status
    if run.role in EXTRA_RUN_ROLES:
        return str(run.role)
    halving = [o for o in runs if o.role not in EXTRA_RUN_ROLES]
    if any(o.config == run.config and o.examples_seen > run.examples_seen for o in halving):
        return "promoted"
    return "pruned" if run.status == "pruned" or run.examples_seen < top_examples else "top rung"


OUTCOME_COLOURS = {
    "promoted": "#2ca02c",
    "pruned": "#9e9e9e",
    "top rung": "#1f77b4",
    "diverged": "#d62728",
    "failed": "#ff7f0e",
    "canceled": "#8c564b",
    "calibration": "#c7c7c7",
    "second seed": "#17becf",
    "edge": "#9467bd",
    "trend": "#bcbd22",
    "horizon": "#e377c2",
    "target confirmation": "#393b79",
}


def timeline(runs: Sequence[RunPoint]) -> Figure | None:
    """Successive halving as it ran: examples seen by each run in order, coloured by what became of it. A
    promoted config that resumed its paused run floats from where it paused: the bar is what it trained."""
    if not runs:
        return None
    top = max((r.examples_seen for r in runs if r.role not in EXTRA_RUN_ROLES), default=0)
    grouped: dict[str, list[RunPoint]] = defaultdict(list)
    for run in runs:
        grouped[run_outcome(run, runs, top)].append(run)
    data = [
        {
            "type": "bar",
            "name": outcome,
            "x": [r.index for r in group],
            "y": [r.examples_seen - r.resumed_from for r in group],
            "base": [r.resumed_from for r in group],
            "text": [r.label for r in group],
            "marker": {"color": OUTCOME_COLOURS.get(outcome, "#17becf")},
            "hovertemplate": "%{text}<br>from %{base} examples seen, %{y} trained",
            "textposition": "none",
        }
        for outcome, group in grouped.items()
    ]
    layout = _layout(
        "Successive halving: examples trained per run (a resumed run starts where it paused)",
        "run (in order)",
        "examples seen",
    )
    return {"data": data, "layout": layout}


def loss_curves(runs: Sequence[RunPoint]) -> Figure | None:
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": run.label,
            "legendgroup": f"B={run.batch_size}",
            "x": [examples for examples, _ in run.evals],
            "y": [loss for _, loss in run.evals],
        }
        for run in runs
        if run.evals
    ]
    if not data:
        return None
    layout = _layout("Eval loss curves", "examples seen", "eval loss")
    layout.update(height=460, showlegend=len(data) <= 24)
    return {"data": data, "layout": layout}


def probes(stored: Iterable[dict[str, Any]], evidence: dict[str, Any] | None) -> Figure | None:
    """λ_max per module for each stored probe report (one trace per method), and the study's own median
    λ_max of proxy and target when it measured them."""
    data: list[Figure] = []
    for payload in stored:
        modules = [m for m in payload.get("modules") or [] if finite(m.get("eigenvalue")) is not None]
        if modules:
            name = f"{payload.get('method', payload.get('kind', 'probe'))} r{payload.get('rank', '?')}"
            if payload.get("model"):  # a sibling study probes its proxy and its target: say which is which
                name += f" · {payload['model']}"
            data.append(_bar(name, [m["name"] for m in modules], [m["eigenvalue"] for m in modules]))
    measured = {
        f"{side}: {probe.get('model', '')}": finite(probe.get("median_lambda_max"))
        for side, probe in ((evidence or {}).get("probes") or {}).items()
        if isinstance(probe, dict)
    }
    measured = {k: v for k, v in measured.items() if v is not None}
    if measured:
        data.append(_bar("median λ_max (study)", list(measured), list(measured.values())))
    if not data:
        return None
    layout = _layout("Top Hessian eigenvalue λ_max at initialisation", "module", "λ_max", y_log=True)
    layout["barmode"] = "group"
    return {"data": data, "layout": layout}


def _bar(name: str, x: list[Any], y: list[Any]) -> Figure:
    return {"type": "bar", "name": name, "x": x, "y": y}


# across studies ---------------------------------------------------------------------------------------

TREND_AXES = {
    "rank": ("LoRA rank", True),
    "dataset_examples": ("training examples", True),
    "model": ("model", False),
}
TREND_VALUES = {"batch_size": ("B* (batch size)", True), "learning_rate": ("LR* (learning rate)", True)}


def trend(answers: Sequence[KnownAnswer], x_key: str, y_key: str) -> Figure | None:
    """One chart of y (B* or LR*) against x (rank, dataset size, model), one trace per method, so methods
    sit side by side on every chart."""
    x_title, x_log = TREND_AXES[x_key]
    y_title, y_log = TREND_VALUES[y_key]
    usable = [a for a in answers if getattr(a, x_key) is not None]
    if not usable:
        return None
    data = []
    for method in sorted({a.method for a in usable}):
        mine = sorted((a for a in usable if a.method == method), key=lambda a: str(getattr(a, x_key)))
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": method,
                "x": [getattr(a, x_key) for a in mine],
                "y": [getattr(a, y_key) for a in mine],
                "customdata": [a.study_id for a in mine],
                "marker": {"size": 11},
                "hovertemplate": "study %{customdata}<br>%{x}: %{y:.3g}",
            }
        )
    layout = _layout(f"{y_title.split(' ')[0]} vs {x_title}", x_title, y_title, x_log=x_log, y_log=y_log)
    if not x_log:
        layout["xaxis"]["type"] = "category"
    layout["height"] = 320
    return {"data": data, "layout": layout}


def methods_side_by_side(answers: Sequence[KnownAnswer]) -> Figure | None:
    """LR* per method for each context (model, rank, dataset size) that more than one method answered."""
    by_context: dict[str, dict[str, float]] = defaultdict(dict)
    for a in answers:
        by_context[f"{a.model} · r{a.rank} · {a.dataset_examples or '?'} ex"][a.method] = a.learning_rate
    shared = {context: lrs for context, lrs in by_context.items() if len(lrs) > 1}
    if not shared:
        return None
    methods = sorted({m for lrs in shared.values() for m in lrs})
    data = [
        _bar(m, [c for c in shared if m in shared[c]], [lrs[m] for lrs in shared.values() if m in lrs])
        for m in methods
    ]
    layout = _layout("LR* by method, same context", "context", "LR*", y_log=True)
    layout["barmode"] = "group"
    return {"data": data, "layout": layout}


def method_summary(answers: Sequence[KnownAnswer]) -> list[dict[str, Any]]:
    rows = []
    for method in sorted({a.method for a in answers}):
        mine = [a for a in answers if a.method == method]
        rows.append(
            {
                "method": method,
                "studies": len(mine),
                "median_batch_size": statistics.median(a.batch_size for a in mine),
                "median_learning_rate": statistics.median(a.learning_rate for a in mine),
            }
        )
    return rows
