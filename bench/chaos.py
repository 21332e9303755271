"""Chaos benchmark (issue 35): does the service keep every study, once, through worker kills, database
outages and a server kill?

Everything is real and local: a PostgreSQL server of the bench's own on a free loopback port
(scripts/start_postgres.sh), `advisor serve` (no embedded workers) and `advisor worker` processes started as
a user starts them. Studies run the `synthetic` job (no model: each "run" sleeps `--seconds-per-run` and
leaves a trace file, so every execution of every run is counted).

Three phases:
1. **Server kill during idempotent POSTs.** `--posts` POSTs over `--studies` Idempotency-Keys from 8 threads;
   the server is `kill -9`ed a third of the way through and started again; the POSTs retry until answered.
   Shown: studies created (must equal the keys: 0 lost, 0 duplicated).
2. **Database outages.** Workers run the studies while the database is stopped `--outages` times for 10 to
   60 s. Shown: studies that ran a run twice (must be 0: an outage must cost no work).
3. **Worker kills.** The same studies again (new keys), while workers are `kill -9`ed `--kills` times at
   random and restarted. Shown: recomputed work, the proxy-run seconds executed beyond one execution per
   stored run (a killed attempt's runs are lost: the study restarts from its start).

Every phase ends when all its studies have finished; the figures: every study succeeded, exactly one stored
result per run, and the recomputed work. Phase 2's runs take `--outage-seconds-per-run` (4 s), so that its
studies are mid-run when the database goes down; phase 3's `--seconds-per-run` (1 s), its studies
submitted one by one over the kill phase.

    python -m bench.chaos [--quick] [--json bench/out/chaos.json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from advisor.jobs.functions import spec_tag

ROOT = Path(__file__).resolve().parents[1]
PG_SCRIPT = ROOT / "scripts" / "start_postgres.sh"
ADVISOR = [sys.executable, "-m", "advisor.cli"]
LEASE_SECONDS = 4.0  # short, so a killed worker's job is taken over within seconds
MAX_ATTEMPTS = 12  # a study may lose several workers; each death uses an attempt


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """The bench's PostgreSQL, server and workers, and how to break them."""

    folder: Path
    port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    url: str = ""
    server: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    traces: Path = field(init=False)

    def __post_init__(self) -> None:
        self.traces = self.folder / "traces"

    def env(self, seconds_per_run: float) -> dict[str, str]:
        options = {"seconds_per_run": seconds_per_run, "trace_dir": str(self.traces)}
        return {
            **os.environ,
            "LORA_ADVISOR_DATABASE_URL": self.url,
            "LORA_ADVISOR_DATA_DIR": str(self.folder / "data"),
            "LORA_ADVISOR_AUTH_DISABLED": "1",  # loopback only
            "LORA_ADVISOR_PORT": str(self.api_port),
            "LORA_ADVISOR_WORKERS": "0",
            "LORA_ADVISOR_JOB_FUNCTION": "synthetic",
            "LORA_ADVISOR_JOB_OPTIONS": json.dumps(options),
            "LORA_ADVISOR_LEASE_SECONDS": str(LEASE_SECONDS),
            "LORA_ADVISOR_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "LORA_ADVISOR_RETRY_BASE_SECONDS": "0.5",
            "LORA_ADVISOR_RATE_LIMIT_PER_SECOND": "10000",
            "LORA_ADVISOR_RATE_LIMIT_BURST": "10000",
        }

    def start_database(self) -> None:
        out = subprocess.run(
            [str(PG_SCRIPT), str(self.port), str(self.folder / "pg")],
            check=True,
            capture_output=True,
            text=True,
        )
        self.url = out.stdout.strip().splitlines()[-1]

    def stop_database(self) -> None:
        subprocess.run([str(PG_SCRIPT), "stop", str(self.folder / "pg")], check=True, capture_output=True)

    def start_server(self, env: dict[str, str]) -> None:
        self.server = subprocess.Popen(
            [*ADVISOR, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: _answers(f"{self.base}/healthz"), 60, "the server to start")

    def kill_server(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()

    def start_worker(self, env: dict[str, str]) -> None:
        self.workers.append(
            subprocess.Popen(
                [*ADVISOR, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )

    def kill_worker(self, env: dict[str, str], rng: random.Random) -> None:
        """kill -9 a random worker and start another in its place."""
        victim = self.workers.pop(rng.randrange(len(self.workers)))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.start_worker(env)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def stop_all(self) -> None:
        for process in [*self.workers, *([self.server] if self.server else [])]:
            if process.poll() is None:
                process.kill()
                process.wait()
        self.workers.clear()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {seconds:.0f} s")
        time.sleep(0.2)


def study_spec(data_dir: Path, seed: int) -> dict[str, Any]:
    """A small spec, unique per seed (so each study's trace files are its own), naming a model folder and a
    dataset file inside the service's roots (the synthetic job reads neither)."""
    return {
        "model": str(data_dir / "models" / "chaos-tiny"),
        "dataset": {"path": str(data_dir / "datasets" / "chaos.jsonl")},
        "rank": 8,
        "batch_sizes": [8, 16],
        "lr_range": [1e-5, 1e-2],
        "training": {"seed": seed},
    }


# phases -------------------------------------------------------------------------------------------------


def post_studies(
    cluster: Cluster, env: dict[str, str], keys: list[str], posts: int, kill_at: int
) -> set[int]:
    """`posts` POSTs spread over `keys`, retried until answered; the server killed and restarted after
    `kill_at` of them. The study ids the answers named."""
    ids: set[int] = set()

    def post(index: int) -> int:
        key = keys[index % len(keys)]
        seed = int(key.rsplit("-", 1)[1])
        while True:
            try:
                response = httpx.post(
                    f"{cluster.base}/v1/studies",
                    json=study_spec(cluster.folder / "data", seed),
                    headers={"Idempotency-Key": key},
                    timeout=10,
                )
                if response.status_code in (200, 202):
                    return int(response.json()["id"])
            except httpx.HTTPError:
                pass
            time.sleep(0.2)  # the server is down or restarting: the client retries, as a pipeline would

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, i) for i in range(posts)]
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            ids.add(future.result())
            if done == kill_at:
                cluster.kill_server()
                cluster.start_server(env)
    return ids


def study_states(cluster: Cluster, ids: set[int]) -> dict[int, dict[str, Any]]:
    states = {}
    for study_id in ids:
        states[study_id] = httpx.get(f"{cluster.base}/v1/studies/{study_id}", timeout=10).json()
    return states


def unfinished(cluster: Cluster) -> int:
    """Studies queued or running, from the list's totals (one request each, cheap enough to ask per kill)."""
    total = 0
    for state in ("queued", "running"):
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            answer = httpx.get(f"{cluster.base}/v1/studies", params={"state": state, "limit": 1}, timeout=10)
            total += int(answer.json()["total"])
    return total


def all_finished(cluster: Cluster, ids: set[int]) -> bool:
    try:
        states = study_states(cluster, ids)
    except (httpx.HTTPError, ValueError):
        return False  # the database (or server) is down: not known yet
    return all(s.get("state") in ("succeeded", "failed", "canceled") for s in states.values())


@dataclass
class PhaseResult:
    phase: str
    studies: int
    succeeded: int
    failed: int
    stored_runs: int
    executions: int
    runs_executed_twice: int
    recomputed_proxy_seconds: float
    max_attempt: int
    attempts_lost: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def phase_figures(
    cluster: Cluster, phase: str, ids: set[int], seconds_per_run: float, started: float
) -> PhaseResult:
    states = study_states(cluster, ids)
    traces = [p.name for p in cluster.traces.iterdir()] if cluster.traces.is_dir() else []
    per_run = Counter(name.split("-pid")[0] for name in traces)  # "<spec tag>-run<i>"
    stored, executions, twice, attempts, lost = 0, 0, 0, 0, 0
    for study_id, study in states.items():
        tag = spec_tag(study["spec"])
        runs = httpx.get(f"{cluster.base}/v1/studies/{study_id}/runs", timeout=10).json()
        stored += len(runs)
        attempt = max([0, *(int(r["attempt"]) for r in runs)])  # the attempt whose result was stored
        attempts, lost = max(attempts, attempt), lost + max(attempt - 1, 0)
        for run in runs:
            count = per_run.get(f"{tag}-run{run['run_index']}", 0)
            executions += count
            twice += count > 1
    return PhaseResult(
        phase=phase,
        studies=len(ids),
        succeeded=sum(s["state"] == "succeeded" for s in states.values()),
        failed=sum(s["state"] == "failed" for s in states.values()),
        stored_runs=stored,
        executions=executions,
        runs_executed_twice=twice,
        recomputed_proxy_seconds=(executions - stored) * seconds_per_run,
        max_attempt=attempts,
        attempts_lost=lost,
        seconds=time.monotonic() - started,
    )


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="advisor-chaos-"))
    folder.chmod(0o755)  # PostgreSQL runs as `postgres` when we are root and must reach its folder
    cluster = Cluster(folder)
    results: list[PhaseResult] = []
    try:
        cluster.start_database()
        (folder / "data" / "models" / "chaos-tiny").mkdir(parents=True)
        (folder / "data" / "datasets").mkdir(parents=True)
        (folder / "data" / "datasets" / "chaos.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
        # Phase 1 and 2's studies run long (their runs span the outages); phase 3's are short.
        env = cluster.env(args.outage_seconds_per_run)
        subprocess.run([*ADVISOR, "db", "upgrade"], env=env, check=True, capture_output=True)
        cluster.start_server(env)

        # 1. A server kill during idempotent POSTs.
        started = time.monotonic()
        keys = [f"chaos-a-{seed}" for seed in range(args.studies)]
        ids = post_studies(cluster, env, keys, args.posts, kill_at=args.posts // 3)
        with_keys = PhaseResult("server kill during POSTs", len(keys), 0, 0, 0, 0, 0, 0.0, 0, 0, 0.0)
        with_keys.notes.append(f"{args.posts} POSTs over {len(keys)} keys gave {len(ids)} distinct studies")

        # 2. Outages: workers run phase 1's studies while the database goes down and comes back.
        for _ in range(args.workers):
            cluster.start_worker(env)
        wait_until(
            lambda: _answers(f"{cluster.base}/readyz"), 120, "a worker to poll"
        )  # /readyz: a worker seen
        time.sleep(5.0)  # the others, a few seconds behind
        started = time.monotonic()
        for outage in sorted(rng.uniform(10, 60) for _ in range(args.outages)):
            time.sleep(rng.uniform(1.0, 3.0))
            cluster.stop_database()
            time.sleep(outage)
            cluster.start_database()
            with_keys.notes.append(f"database down {outage:.0f} s")
        wait_until(lambda: all_finished(cluster, ids), 1800, "phase 2's studies")
        outages = phase_figures(cluster, "database outages", ids, args.outage_seconds_per_run, started)
        outages.notes = with_keys.notes[1:]
        with_keys.notes = with_keys.notes[:1]
        with_keys.succeeded, with_keys.studies = outages.succeeded, len(ids)
        results += [with_keys, outages]

        # 3. Worker kills, on a new set of studies (submitted to a server that gives them short runs).
        cluster.kill_server()
        env = cluster.env(args.seconds_per_run)
        cluster.start_server(env)
        started = time.monotonic()
        # The studies arrive over the kill phase, one every kills/studies kills, so there is work to lose
        # throughout; a kill lands on a random worker, busy or idle.
        keys = [f"chaos-b-{seed}" for seed in range(args.studies, 2 * args.studies)]
        killed_ids: set[int] = set()
        busy_kills, every = 0, max(1, args.kills // args.studies)
        for kill in range(args.kills):
            if kill % every == 0 and len(killed_ids) < len(keys):
                killed_ids |= post_studies(cluster, env, [keys[len(killed_ids)]], 1, kill_at=-1)
            time.sleep(rng.uniform(0.3, 1.5))
            busy_kills += unfinished(cluster) > 0
            cluster.kill_worker(env, rng)
        killed_ids |= post_studies(cluster, env, keys[len(killed_ids) :], len(keys) - len(killed_ids), -1)
        wait_until(lambda: all_finished(cluster, killed_ids), 1800, "phase 3's studies")
        killed = phase_figures(cluster, "worker kill -9s", killed_ids, args.seconds_per_run, started)
        killed.notes.append(
            f"{args.kills} workers killed, {busy_kills} of them while studies were unfinished; "
            f"{killed.attempts_lost} attempts lost (a killed attempt's runs are run again)"
        )
        results.append(killed)
    finally:
        cluster.stop_all()
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop_database()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
        "date": time.strftime("%Y-%m-%d"),
        "settings": {**vars(args), "lease_seconds": LEASE_SECONDS, "max_attempts": MAX_ATTEMPTS},
        "phases": [asdict(r) for r in results],
    }


def print_table(report: dict[str, Any]) -> None:
    columns = (
        "phase",
        "studies",
        "succeeded",
        "failed",
        "stored_runs",
        "executions",
        "runs_executed_twice",
        "recomputed_proxy_seconds",
        "max_attempt",
        "attempts_lost",
        "seconds",
    )
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for phase in report["phases"]:
        cells = [f"{phase[c]:.1f}" if isinstance(phase[c], float) else str(phase[c]) for c in columns]
        print("| " + " | ".join(cells) + " |")
    for phase in report["phases"]:
        for note in phase["notes"]:
            print(f"- {phase['phase']}: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--posts", type=int, default=400)
    parser.add_argument("--outages", type=int, default=5)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds-per-run", type=float, default=1.0, help="phase 3's runs")
    parser.add_argument(
        "--outage-seconds-per-run",
        type=float,
        default=4.0,
        help="phase 2's runs: long enough to span outages",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4 studies, 40 POSTs, 1 outage, 10 kills")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "chaos.json")
    args = parser.parse_args()
    if args.quick:
        args.studies, args.posts, args.outages, args.kills = 4, 40, 1, 10
        args.outage_seconds_per_run = 2.0
    report = run_bench(args)
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
