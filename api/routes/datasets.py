"""POST /datasets: upload a JSONL or CSV file and get its fingerprint.

The body is streamed into a temporary file in the upload folder and hashed on the way, so the server holds
one chunk of it at a time (reading it whole, one 63 MB upload took 243 MB of memory, and four at once
1.2 GB); past LORA_ADVISOR_MAX_UPLOAD_BYTES it stops with a 413. Rows are counted from the file, a line at
a time. The file is then stored as <sha256>.<ext> under DATA_DIR/datasets, which is always a dataset root,
so the returned path can go straight into a study spec's dataset.path.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from advisor.storage import repository as repo
from api.deps import Service, ServiceDep, Submitter
from api.problems import AUTHENTICATED_PROBLEMS, ApiProblem, problem_responses
from api.schemas import DatasetOut

router = APIRouter(prefix="/v1", tags=["datasets"], responses=AUTHENTICATED_PROBLEMS)
UPLOAD_PATH = "/v1/datasets"


@dataclasses.dataclass(frozen=True)
class ReceivedUpload:
    """A request body on disk, not yet under its final name: where, its SHA-256 and its size in bytes."""

    path: Path
    sha256: str
    size: int


@router.post(
    "/datasets",
    status_code=201,
    response_model=DatasetOut,
    summary="Upload JSONL or CSV as the raw request body; returns its fingerprint and stored path",
    responses=problem_responses(413),
    # The body is read raw, whatever its Content-Type; documented as bytes so that clients (and the fuzz
    # test) know to send the file itself, not JSON or a form.
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the file's bytes: JSON Lines or CSV with a header (see `format`)",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_dataset(
    request: Request,
    _: Submitter,
    service: ServiceDep,
    format: Annotated[Literal["jsonl", "csv"], Query(description="how to parse the body")] = "jsonl",
) -> DatasetOut:
    folder = service.settings.upload_dir
    folder.mkdir(parents=True, exist_ok=True)
    upload = await receive_upload(request, folder, limit=service.settings.max_upload_bytes)
    try:
        return await run_in_threadpool(store_dataset, service, upload, format)
    finally:
        upload.path.unlink(missing_ok=True)  # moved into place, a copy already stored, or refused


async def receive_upload(request: Request, folder: Path, *, limit: int) -> ReceivedUpload:
    """The body streamed into a `.part` file in `folder`, hashed as it arrives; 413 once more than `limit`
    bytes have (a chunked body declares no length), leaving no file behind. The writes run on the event loop:
    each is one received chunk (64 KiB from uvicorn) into the page cache, microseconds."""
    digest, size = hashlib.sha256(), 0
    with tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".part") as part:
        path = Path(part.name)
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                digest.update(chunk)
                part.write(chunk)
        except BaseException:  # too large, a client gone mid-body, a full disk: nothing half-stored
            path.unlink(missing_ok=True)
            raise
    return ReceivedUpload(path, digest.hexdigest(), size)


def _too_large(limit: int) -> ApiProblem:
    message = f"the upload exceeds the limit of {limit} bytes (the server's LORA_ADVISOR_MAX_UPLOAD_BYTES)"
    return ApiProblem(
        413, "request too large", message, errors=[{"field": "body", "message": message, "value": None}]
    )


def count_rows(path: Path, fmt: str) -> int:
    """Records in the file (JSON objects, one a line; or CSV rows under a header), read a line at a time;
    422 naming the first problem."""
    with path.open("rb") as file:
        lines = _utf8_lines(file)
        return _count_csv_rows(lines) if fmt == "csv" else _count_jsonl_records(lines)


def _utf8_lines(file: IO[bytes]) -> Iterator[str]:
    """The file's lines (split at \\n, which they keep), decoded; 422 at the first byte that is not UTF-8."""
    offset = 0
    for raw in file:
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad(f"the file is not UTF-8 (byte {offset + exc.start})") from None
        offset += len(raw)


def _count_csv_rows(lines: Iterable[str]) -> int:
    try:
        rows = sum(1 for _ in csv.DictReader(lines))
    except csv.Error as exc:  # a field past the csv module's limit (128 KiB), a NUL byte, …
        raise _bad(f"the CSV does not parse: {exc}") from None
    if rows == 0:
        raise _bad("a CSV needs a header line and at least one row")
    return rows


def _count_jsonl_records(lines: Iterable[str]) -> int:
    count, number = 0, 0
    for text in lines:
        for line in text.splitlines():  # as str.splitlines numbers them: \r and \u2028 end a line too
            number += 1
            if line.strip():
                _check_record(line, number)
                count += 1
    if count == 0:
        raise _bad("the file holds no records")
    return count


def _check_record(line: str, number: int) -> None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _bad(f"line {number} is not JSON: {exc.msg}") from None
    except RecursionError:  # Python's parser recurses once per level of nesting
        raise _bad(f"line {number} nests too deeply to parse") from None
    if not isinstance(record, dict):
        raise _bad(f"line {number} is not a JSON object")


def _bad(message: str) -> ApiProblem:
    return ApiProblem(
        422, "unreadable dataset", message, errors=[{"field": "body", "message": message, "value": None}]
    )


def store_dataset(service: Service, upload: ReceivedUpload, fmt: str) -> DatasetOut:
    """Count the upload's rows, move it to <sha256>.<fmt> (unless that is stored already) and record it."""
    rows = count_rows(upload.path, fmt)
    target = (service.settings.upload_dir / f"{upload.sha256}.{fmt}").resolve()
    is_new = not target.exists()
    if is_new:  # a rename: a crash never leaves a half-written file under the final name
        os.replace(upload.path, target)
    try:
        with service.db.transaction() as session:
            row = repo.upsert_dataset(
                session, fingerprint=upload.sha256, path=str(target), fmt=fmt, rows=rows, size=upload.size
            )
            return DatasetOut(
                fingerprint=row.fingerprint, path=row.path, format=row.format, rows=row.rows, bytes=row.bytes
            )
    except Exception:
        if is_new:  # nothing half-stored: no file without its row
            target.unlink(missing_ok=True)
        raise
