"""Stored text-format specs keep training packed: `training.packing` set to true where it is missing.

Before `training.packing` existed, format `text` was always packed (documents joined with EOS and cut into
max_seq_len blocks); a spec stored then now reads as packing false, one document per sequence. This data
migration writes down what those specs meant, wherever a spec is stored: `studies.spec`, the spec a job
runs (`jobs.payload["spec"]`) and the spec a run record carries (`proxy_runs.meta["spec"]`). Specs of the
other formats were never packed and read right as they are.

Downgrade removes `training.packing: true` from text-format specs. It cannot tell the keys this upgrade
added from ones a user set after it, and need not: revision 0001's code packs every text spec, so removing
`packing: true` from one changes nothing it means. A text spec with `packing: false` (stored after the
upgrade) has no meaning at revision 0001 and is left as it is.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 16:00:00
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
# (table, JSON column, key of the spec inside the column's document; None: the document is the spec)
SPEC_COLUMNS = [("studies", "spec", None), ("jobs", "payload", "spec"), ("proxy_runs", "meta", "spec")]
PAGE_ROWS = 500  # rows read at a time: a database may hold many thousands of run records

SpecChange = Callable[[dict[str, Any]], bool]  # edits a spec in place; True when it changed it


def _is_text_format(spec: dict[str, Any]) -> bool:
    dataset = spec.get("dataset")
    return isinstance(dataset, dict) and dataset.get("format") == "text"


def add_packing(spec: dict[str, Any]) -> bool:
    if not _is_text_format(spec):
        return False
    training = spec.setdefault("training", {})  # a spec without one trained on the defaults
    if not isinstance(training, dict) or "packing" in training:
        return False
    training["packing"] = True
    return True


def drop_packing(spec: dict[str, Any]) -> bool:
    training = spec.get("training")
    if not _is_text_format(spec) or not isinstance(training, dict) or training.get("packing") is not True:
        return False
    del training["packing"]
    return True


def _spec_in(document: Any, key: str | None) -> dict[str, Any] | None:
    spec = document.get(key) if key is not None and isinstance(document, dict) else document
    return spec if isinstance(spec, dict) else None


def rewrite_specs(table_name: str, column: str, key: str | None, change: SpecChange) -> None:
    """Apply `change` to the spec in every row of `table_name`, a page of rows at a time (keyset by id)."""
    connection = op.get_bind()
    table = sa.table(table_name, sa.column("id", sa.Integer), sa.column(column, JSON_TYPE))
    last_id = 0
    while True:
        page = connection.execute(
            sa.select(table.c.id, table.c[column])
            .where(table.c.id > last_id)
            .order_by(table.c.id)
            .limit(PAGE_ROWS)
        ).all()
        if not page:
            return
        for row_id, document in page:
            spec = _spec_in(document, key)
            if spec is not None and change(spec):  # `spec` lies inside `document`, so that changed too
                connection.execute(table.update().where(table.c.id == row_id).values({column: document}))
        last_id = page[-1][0]


def upgrade() -> None:
    for table_name, column, key in SPEC_COLUMNS:
        rewrite_specs(table_name, column, key, add_packing)


def downgrade() -> None:
    for table_name, column, key in SPEC_COLUMNS:
        rewrite_specs(table_name, column, key, drop_packing)
