"""Each page's view: the stored rows it reads, reduced to an HTML body and the JSON its script draws.

Every value that reaches HTML passes through `html.escape`; every value that reaches the embedded JSON
goes through `embed_json`, which also escapes `<`, `>` and `&` so no string can close the script element.
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections import Counter
from typing import Any

from sqlalchemy.orm import Session

from advisor.records import resumed_at
from advisor.storage import repository as repo
from advisor.storage.models import ProxyRun, RecommendationRow, Study, StudyState
from api.dashboard import figures
from api.dashboard.figures import KnownAnswer, RunPoint, finite

ACTIVE_STATES = (StudyState.QUEUED, StudyState.RUNNING)
LIST_LIMIT = 200  # the most studies the list page shows (the /v1 listing's own maximum)


@dataclasses.dataclass
class View:
    title: str
    body: str
    data: dict[str, Any]


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def embed_json(data: Any) -> str:
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def study_summary(study: Study) -> dict[str, Any]:
    return {
        "id": study.id,
        "state": study.state,
        "progress": study.progress,
        "message": study.message,
        "error": study.error,
        "model": study.model.name,
        "method": study.method,
        "rank": study.rank,
        "created_at": study.created_at.isoformat(),
    }


# /dashboard ------------------------------------------------------------------------------------------


def study_list(session: Session) -> View:
    rows, total = repo.list_studies(session, state=None, model=None, method=None, limit=LIST_LIMIT, offset=0)
    body = (
        "<h1>Studies</h1>"
        f'<p class="muted" id="study-count">{total} stored</p>'
        '<p class="empty" id="no-studies" hidden>No studies yet: submit one with '
        "<code>POST /v1/studies</code> (see the README).</p>"
        '<table id="studies"><thead><tr><th>#</th><th>state</th><th>progress</th><th>model</th>'
        "<th>method</th><th>rank</th><th>message</th><th>created</th></tr></thead><tbody></tbody></table>"
    )
    data = {
        "page": "list",
        "studies": [study_summary(s) for s in rows],
        "poll": f"../v1/studies?limit={LIST_LIMIT}",
    }
    return View("Studies", body, data)


# /dashboard/studies/{id} ------------------------------------------------------------------------------


def run_point(run: ProxyRun) -> RunPoint:
    evals = tuple(
        (int(e["examples_seen"]), float(e["eval_loss"]))
        for e in (run.metrics or {}).get("evals") or []
        if finite(e.get("eval_loss")) is not None and e.get("examples_seen") is not None
    )
    return RunPoint(
        id=run.id,
        index=run.run_index,
        status=run.status,
        error=run.error,
        batch_size=run.batch_size,
        learning_rate=run.learning_rate,
        eval_loss=finite(run.eval_loss),
        examples_seen=run.examples_seen,
        evals=evals,
        role=(run.meta or {}).get("role"),
        resumed_from=resumed_at(run.meta),
    )


def study_page(session: Session, study_id: int) -> View:
    study = repo.get_study(session, study_id=study_id)
    runs = [run_point(r) for r in repo.list_runs(session, study_id=study_id)]
    row = repo.get_recommendation_for_study(session, study_id=study_id)
    stored_probes = repo.list_probes(session, study_id=study_id)
    payload = (row.payload or {}) if row is not None else {}
    rec = payload if row is not None and row.available and "learning_rate" in payload else None
    charts = {
        "chart-loss-lr": figures.loss_vs_lr(runs, rec),
        "chart-heatmap": figures.heatmap(runs, rec),
        "chart-timeline": figures.timeline(runs),
        "chart-curves": figures.loss_curves(runs),
        "chart-probes": figures.probes([p.payload for p in stored_probes], payload.get("evidence")),
    }
    body = (
        _study_header(study)
        + _answer(study, row, runs)
        + _reasoning(payload.get("reasoning") if rec else None)
        + _charts(charts)
    )
    data = {
        "page": "study",
        "study": study_summary(study),
        "figures": {k: v for k, v in charts.items() if v is not None},
        "poll": f"../v1/studies/{study.id}" if study.state in ACTIVE_STATES else None,
    }
    return View(f"Study {study.id}", body, data)


def _study_header(study: Study) -> str:
    return (
        f"<h1>Study {study.id}: {esc(study.model.name)}</h1>"
        f'<p class="muted">{esc(study.method)}, rank {study.rank} · created {esc(study.created_at)}</p>'
        f'<p>State <span class="state state-{esc(study.state)}" id="study-state">{esc(study.state)}</span> '
        f'<progress id="study-progress" max="1" value="{study.progress:.3f}"></progress> '
        f'<span id="study-message">{esc(study.message)}</span></p>'
    )


NOTICE = '<div class="notice" id="no-recommendation">{}</div>'


def _answer(study: Study, row: RecommendationRow | None, runs: list[RunPoint]) -> str:
    if row is not None and row.available and row.batch_size and row.learning_rate:
        return _recommendation_box(row.payload or {}, row)
    statuses = Counter(r.status for r in runs)
    counts = ", ".join(f"{n} {status}" for status, n in statuses.most_common())
    if row is not None:
        payload = row.payload or {}
        reason = payload.get("reason") or "the study could not recommend"
        if runs and statuses.get("diverged") == len(runs) and "diverged" not in reason:
            reason = f"every run diverged ({len(runs)} of {len(runs)}): {reason}"
        reason = reason[:1].upper() + reason[1:]
        fix = f" <b>Fix:</b> {esc(payload['fix'])}" if payload.get("fix") else ""
        return f'<div class="notice" id="no-recommendation"><b>No recommendation.</b> {esc(reason)}.{fix}' + (
            f'<br><span class="muted">Runs: {esc(counts)}</span></div>' if runs else "</div>"
        )
    if study.state in ACTIVE_STATES:
        return NOTICE.format("The recommendation appears when the study finishes.")
    why = study.error or study.message or "no recommendation was stored"
    return NOTICE.format(f"<b>No recommendation</b> ({esc(study.state)}): {esc(why)}")


def _recommendation_box(payload: dict[str, Any], row: RecommendationRow) -> str:
    band = payload.get("band") or {}
    confidence = payload.get("confidence") or {}
    rule = (payload.get("lr_rule") or {}).get("formula")
    loss = finite(payload.get("predicted_eval_loss"))
    items = [
        f"<b>Batch size</b> {row.batch_size}",
        f"<b>Learning rate</b> {row.learning_rate:.3g}",
    ]
    if finite(band.get("lr_low")) and finite(band.get("lr_high")):
        items.append(f"<b>Band</b> LR {band['lr_low']:.3g} – {band['lr_high']:.3g}")
    if confidence.get("label"):
        items.append(
            f"<b>Confidence</b> {esc(confidence['label'])} ({finite(confidence.get('score')) or 0:.2f})"
        )
    if loss is not None:
        items.append(f"<b>Predicted eval loss</b> {loss:.4f}{_interval_text(payload)}")
    if rule:
        items.append(f"<b>LR rule</b> <code>{esc(rule)}</code>")
    return '<div class="answer" id="recommendation">' + " · ".join(items) + "</div>"


def _interval_text(payload: dict[str, Any]) -> str:
    """The predicted loss's 90% interval, when the stored answer has one (older answers do not)."""
    interval = payload.get("predicted_eval_loss_interval") or ()
    ends = [finite(end) for end in interval]
    if len(ends) != 2 or ends[0] is None or ends[1] is None:
        return ""
    return f" (90%: {ends[0]:.4f} – {ends[1]:.4f}, at the real run's length)"


def _reasoning(sentences: Any) -> str:
    if not sentences:
        return ""
    items = "".join(f"<li>{esc(s)}</li>" for s in sentences)
    return f'<section><h2>Why</h2><ul id="reasoning">{items}</ul></section>'


CHART_NOTES = {
    "chart-loss-lr": "No finite eval loss was stored for any run.",
    "chart-heatmap": "No runs stored yet.",
    "chart-timeline": "No runs stored yet.",
    "chart-curves": "No run evaluated before it stopped.",
    "chart-probes": "No curvature probes were stored for this study.",
}


def _charts(charts: dict[str, dict[str, Any] | None]) -> str:
    parts = []
    for chart_id, figure in charts.items():
        if figure is None:
            parts.append(f'<p class="muted chart-note" id="{chart_id}-note">{esc(CHART_NOTES[chart_id])}</p>')
        else:
            parts.append(f'<div class="chart" id="{chart_id}"></div>')
    return '<section class="charts">' + "".join(parts) + "</section>"


# /dashboard/trends ------------------------------------------------------------------------------------


def known_answers(session: Session) -> list[KnownAnswer]:
    answers = []
    for row in repo.available_recommendations(session):
        lr = finite(row.learning_rate)
        if row.batch_size and lr:
            answers.append(
                KnownAnswer(
                    study_id=row.study_id,
                    model=row.model,
                    method=row.method,
                    rank=row.rank,
                    dataset_examples=row.dataset_examples,
                    batch_size=row.batch_size,
                    learning_rate=lr,
                    predicted_eval_loss=finite((row.payload or {}).get("predicted_eval_loss")),
                )
            )
    return answers


def trends_page(session: Session) -> View:
    answers = known_answers(session)
    charts: dict[str, dict[str, Any] | None] = {
        f"trend-{y}-{x}": figures.trend(answers, x, y)
        for x in figures.TREND_AXES
        for y in figures.TREND_VALUES
    }
    charts["trend-methods"] = figures.methods_side_by_side(answers)
    present = {k: v for k, v in charts.items() if v is not None}
    if not answers:
        body = '<h1>Trends</h1><p class="empty" id="no-trends">No recommendations stored yet.</p>'
    else:
        body = (
            "<h1>Trends</h1>"
            f'<p class="muted">{len(answers)} stored recommendation(s) across studies.</p>'
            + _methods_table(figures.method_summary(answers))
            + '<section class="charts grid">'
            + "".join(f'<div class="chart" id="{chart_id}"></div>' for chart_id in present)
            + "</section>"
            + _answers_table(answers)
        )
    return View("Trends", body, {"page": "trends", "figures": present})


def _methods_table(rows: list[dict[str, Any]]) -> str:
    cells = "".join(
        f"<tr><td>{esc(r['method'])}</td><td>{r['studies']}</td><td>{r['median_batch_size']:g}</td>"
        f"<td>{r['median_learning_rate']:.3g}</td></tr>"
        for r in rows
    )
    return (
        '<h2>Methods side by side</h2><table id="methods"><thead><tr><th>method</th><th>studies</th>'
        f"<th>median B*</th><th>median LR*</th></tr></thead><tbody>{cells}</tbody></table>"
    )


def _answers_table(answers: list[KnownAnswer]) -> str:
    cells = "".join(
        f"<tr><td>{_study_link(a.study_id)}</td><td>{esc(a.model)}</td><td>{esc(a.method)}</td>"
        f"<td>{a.rank}</td><td>{esc(a.dataset_examples or '?')}</td><td>{a.batch_size}</td>"
        f"<td>{a.learning_rate:.3g}</td></tr>"
        for a in answers
    )
    return (
        '<h2>All recommendations</h2><table id="answers"><thead><tr><th>study</th><th>model</th>'
        "<th>method</th><th>rank</th><th>examples</th><th>B*</th><th>LR*</th></tr></thead>"
        f"<tbody>{cells}</tbody></table>"
    )


def _study_link(study_id: int | None) -> str:
    return "—" if study_id is None else f'<a data-nav href="studies/{study_id}">{study_id}</a>'
