"""Load on loopback: p50/p99 latency and throughput of GET /v1/recommendations (cached) and POST /v1/studies.

Starts `uvicorn` with the real app on 127.0.0.1 (SQLite in a temporary folder, no embedded workers so the
server's CPU goes to requests), seeds one finished study so the GET has an answer, then sends requests at
a fixed arrival rate (open loop: a slow server cannot slow the offered load down) with httpx.

    .venv/bin/python -m bench.api_load [--rate 200] [--seconds 10] [--post-rate 50]

Target (issue 5): p99 ≤ 20 ms at 200 req/s for the cached GET on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from advisor.jobs.queue import submit_study
from advisor.jobs.worker import Worker
from advisor.specs import parse_spec
from api import testing

SERVER = (
    "import uvicorn; from api.app import create_app; "
    "uvicorn.run(create_app(), host='127.0.0.1', port={port}, log_level='warning', access_log=False)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Connection:
    """A keep-alive HTTP/1.1 connection written by hand: httpx's async pool costs more CPU per request than
    the server spends answering, and on 2 shared cores the load generator must stay out of the way."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> None:
        self.reader, self.writer = reader, writer
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "127.0.0.1", **headers}.items())

    async def request(self, method: str, path: str, body: bytes = b"", extra: str = "") -> int:
        head = f"{method} {path} HTTP/1.1\r\n{self.headers}{extra}Content-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])


async def open_loop(
    port: int,
    headers: dict[str, str],
    send: Callable[[Connection, int], Awaitable[int]],
    rate: float,
    seconds: float,
    connections: int = 32,
) -> tuple[list[float], int, float]:
    """`rate` requests per second for `seconds` over a pool of connections. Latency is measured from each
    request's scheduled time, so queueing behind a slow server counts (no coordinated omission)."""
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    schedule = iter(range(total))
    latencies: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        connection = Connection(*await asyncio.open_connection("127.0.0.1", port), headers)
        for i in schedule:
            at = start + i / rate
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            status = await send(connection, i)
            latencies.append((time.perf_counter() - at) * 1000)
            errors += status >= 400
        connection.writer.close()

    await asyncio.gather(*[client() for _ in range(connections)])
    return latencies, errors, total / (time.perf_counter() - start)


def summary(
    name: str, rate: float, latencies: list[float], errors: int, achieved: float
) -> dict[str, object]:
    ordered = sorted(latencies)
    return {
        "endpoint": name,
        "offered_rps": rate,
        "achieved_rps": round(achieved, 1),
        "requests": len(ordered),
        "errors": errors,
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
        "max_ms": round(ordered[-1], 2),
    }


async def run(
    args: argparse.Namespace, port: int, headers: dict[str, str], spec: dict[str, object], model: str
) -> list[dict[str, object]]:
    query = "/v1/recommendations?" + urllib.parse.urlencode({"model": model, "method": "lora", "rank": 8})
    body = json.dumps(spec).encode()

    async def get(connection: Connection, i: int) -> int:
        return await connection.request("GET", query)

    async def post(connection: Connection, i: int) -> int:
        return await connection.request("POST", "/v1/studies", body, f"Idempotency-Key: bench-{i}\r\n")

    await open_loop(port, headers, get, args.rate, 1.0)  # warm-up: connections, caches
    results = [
        summary(
            "GET /v1/recommendations",
            args.rate,
            *await open_loop(port, headers, get, args.rate, args.seconds),
        )
    ]
    results.append(
        summary(
            "POST /v1/studies",
            args.post_rate,
            *await open_loop(port, headers, post, args.post_rate, args.seconds),
        )
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="GET requests per second")
    parser.add_argument("--post-rate", type=float, default=50.0, help="POST requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="advisor-bench-"))
    settings = testing.make_settings(root, rate_limit_per_second=1e6, rate_limit_burst=10**6)
    db = testing.migrated(settings.url)
    headers = testing.token(db)
    spec = testing.example_spec(root)
    study_id, _ = submit_study(
        db,
        spec=parse_spec(testing.example_spec(root)).model_copy(
            update={"model": str(settings.model_roots[0] / "tiny-llama")}
        ),
        function="synthetic",
        max_attempts=1,
        token_id=None,
        dataset_fingerprint=None,
        idempotency=None,
        options=testing.FAST_JOB,
    )
    Worker(db, options=testing.worker_options()).run_once()
    model = str((settings.model_roots[0] / "tiny-llama").resolve())

    port = free_port()
    env = {
        **os.environ,
        "LORA_ADVISOR_DATA_DIR": str(settings.data_dir),
        "LORA_ADVISOR_DATABASE_URL": settings.url,
        "LORA_ADVISOR_MODEL_ROOTS": str(settings.model_roots[0]),
        "LORA_ADVISOR_DATASET_ROOTS": str(settings.dataset_roots[0]),
        "LORA_ADVISOR_WORKERS": "0",
        "LORA_ADVISOR_JOB_FUNCTION": "synthetic",
        "LORA_ADVISOR_RATE_LIMIT_PER_SECOND": "1000000",
        "LORA_ADVISOR_RATE_LIMIT_BURST": "1000000",
        # Every POST is a new study on one token with no worker: this measures latency, not the quotas.
        "LORA_ADVISOR_MAX_ACTIVE_STUDIES_PER_TOKEN": "1000000",
        "LORA_ADVISOR_MAX_DAILY_STUDIES_PER_TOKEN": "1000000",
        "LORA_ADVISOR_MAX_QUEUED_JOBS": "1000000",
        "LORA_ADVISOR_READYZ_REQUIRES_WORKERS": "false",
    }
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(port=port)], env=env, cwd=Path(__file__).resolve().parents[1]
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert (
            httpx.get(f"{base}/v1/recommendations", params={"model": model}, headers=headers).json()["status"]
            == "ready"
        )
        results = asyncio.run(run(args, port, headers, spec, model))
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        json.dumps(
            {"cores": os.cpu_count(), "database": "sqlite", "seeded_study": study_id, "results": results},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
