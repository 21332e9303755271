"""POST /datasets: upload a JSONL or CSV file (size-limited by the middleware) and get its fingerprint.

The file is stored as <sha256>.<ext> under DATA_DIR/datasets, which is always a dataset root, so the
returned path can go straight into a study spec's dataset.path.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from advisor.storage import repository as repo
from api.deps import Service, ServiceDep, Submitter
from api.problems import ApiProblem
from api.schemas import DatasetOut

router = APIRouter(prefix="/v1", tags=["datasets"])
UPLOAD_PATH = "/v1/datasets"


@router.post(
    "/datasets",
    status_code=201,
    response_model=DatasetOut,
    summary="Upload JSONL or CSV as the raw request body; returns its fingerprint and stored path",
)
async def upload_dataset(
    request: Request,
    _: Submitter,
    service: ServiceDep,
    format: Annotated[Literal["jsonl", "csv"], Query(description="how to parse the body")] = "jsonl",
) -> DatasetOut:
    data = await request.body()
    return await run_in_threadpool(store_dataset, service, data, format)


def count_rows(data: bytes, fmt: str) -> int:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"the file is not UTF-8 (byte {exc.start})") from None
    if fmt == "csv":
        try:
            rows = list(csv.DictReader(io.StringIO(text)))
        except csv.Error as exc:  # a field past the csv module's limit (128 KiB), a NUL byte, …
            raise _bad(f"the CSV does not parse: {exc}") from None
        if not rows:
            raise _bad("a CSV needs a header line and at least one row")
        return len(rows)
    count = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _bad(f"line {number} is not JSON: {exc.msg}") from None
        except RecursionError:  # Python's parser recurses once per level of nesting
            raise _bad(f"line {number} nests too deeply to parse") from None
        if not isinstance(record, dict):
            raise _bad(f"line {number} is not a JSON object")
        count += 1
    if count == 0:
        raise _bad("the file holds no records")
    return count


def _bad(message: str) -> ApiProblem:
    return ApiProblem(
        422, "unreadable dataset", message, errors=[{"field": "body", "message": message, "value": None}]
    )


def store_dataset(service: Service, data: bytes, fmt: str) -> DatasetOut:
    rows = count_rows(data, fmt)
    fingerprint = hashlib.sha256(data).hexdigest()
    folder = service.settings.upload_dir
    folder.mkdir(parents=True, exist_ok=True)
    target = (folder / f"{fingerprint}.{fmt}").resolve()
    is_new = not target.exists()
    if is_new:  # write then rename: a crash never leaves a half-written file under the final name
        with tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".part") as tmp:
            tmp.write(data)
        os.replace(tmp.name, target)
    try:
        with service.db.transaction() as session:
            row = repo.upsert_dataset(
                session, fingerprint=fingerprint, path=str(target), fmt=fmt, rows=rows, size=len(data)
            )
            return DatasetOut(
                fingerprint=row.fingerprint, path=row.path, format=row.format, rows=row.rows, bytes=row.bytes
            )
    except Exception:
        if is_new:  # nothing half-stored: no file without its row
            Path(target).unlink(missing_ok=True)
        raise
