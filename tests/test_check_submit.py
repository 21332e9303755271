"""`advisor check --submit` closes the CI loop on a real service: a config nothing answers submits a study of
exactly its recipe, the study runs on a real worker, and the same check then judges the plan by it.

A real uvicorn serves the app on 127.0.0.1 with a worker thread running the `study` job (a tiny Llama on
CPU, a budget in examples so the plan is the same on any machine). The config's dataset lies outside the
service's dataset roots: the check uploads it, as a CI runner's checkout would have to.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import uvicorn

from advisor.cli import main as advisor_main
from advisor.storage.db import default_sqlite_url
from api import testing
from api.app import create_app
from proxy_runs.synthetic import corpus_of, instruction_records, write_jsonl
from proxy_runs.tiny import save_tiny_model

# The real run: LoRA rank 4 on q/v, micro-batch 2 × accumulation 2 = effective batch 4, no clipping.
CONFIG = """\
base_model: {model}
adapter: lora
lora_r: 4
lora_alpha: 8
lora_target_modules: [q_proj, v_proj]
datasets:
  - path: {data}
    type: alpaca
sequence_len: 32
micro_batch_size: {micro}
gradient_accumulation_steps: 2
num_epochs: 1
max_grad_norm: 0.0
warmup_ratio: 0.1
learning_rate: {lr}
output_dir: ./outputs/{run}
"""
STUDY_FLAGS = ("--budget-examples", "600", "--batch-sizes", "4", "8")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    torch.set_num_threads(1)  # 2 shared cores: the worker thread and the server share them
    root = tmp_path_factory.mktemp("check-submit")
    testing.make_roots(root)
    records = instruction_records(160, seed=0)
    model = save_tiny_model(
        root / "model-root" / "tiny-llama-16", "llama", corpus_of(records), vocab_size=256, hidden=16
    )
    checkout = root / "ci-checkout"  # not a dataset root: only an upload reaches the service
    data = write_jsonl(records, checkout / "train.jsonl")
    url = default_sqlite_url(root / "db")
    db = testing.migrated(url)
    settings = testing.make_settings(
        root, database_url=url, job_function="study", job_options={}, lease_seconds=6.0
    )
    token = testing.token(db)["Authorization"].removeprefix("Bearer ")
    app = create_app(settings, db=db, start_workers=False)
    with _serving(app) as server_url, testing.worker_thread(db, testing.worker_options(lease_seconds=6.0)):
        yield {"url": server_url, "token": token, "model": model, "data": data, "dir": checkout}
    db.dispose()


@contextlib.contextmanager
def _serving(app: Any) -> Iterator[str]:
    """A real uvicorn on a free loopback port, in a thread, until the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def check(
    capsys: pytest.CaptureFixture[str],
    service: dict[str, Any],
    *flags: str,
    lr: float = 2e-4,
    micro: int = 2,
    run: str = "a",
    extra: str = "",
) -> tuple[int, dict[str, Any]]:
    """`advisor check` of the real run's config (written into the CI checkout), with --format json."""
    config = service["dir"] / f"axolotl-{run}.yaml"
    text = CONFIG.format(model=service["model"], data=service["data"], micro=micro, lr=lr, run=run)
    config.write_text(text + extra)
    code = advisor_main(
        [
            "check",
            str(config),
            "--server",
            service["url"],
            "--token",
            service["token"],
            "--format",
            "json",
            *flags,
        ]
    )
    return code, json.loads(capsys.readouterr().out)


def errors(verdict: dict[str, Any]) -> list[str]:
    return [f["message"] for f in verdict["decision"]["findings"] if f["level"] == "error"]


def test_submit_then_wait_then_judge_by_the_study_of_exactly_this_recipe(capsys, service) -> None:
    # 1. Nothing answers the config: --submit starts a study of its recipe and exits 3 with its URL.
    code, verdict = check(capsys, service, "--submit", *STUDY_FLAGS)
    assert code == 3, verdict
    (pending,) = errors(verdict)
    assert "(submitted) is queued" in pending or "(submitted) is running" in pending
    study_url = pending.split(": ", 1)[1].split(";")[0]
    assert study_url.startswith(service["url"] + "/v1/studies/")

    # A pipeline rerun (another output_dir: a key the study does not read) submits nothing new.
    code, verdict = check(capsys, service, "--submit", *STUDY_FLAGS, run="rerun")
    assert code == 3 and "submitted earlier for this recipe) is" in errors(verdict)[0]
    assert study_url in errors(verdict)[0]

    # 2. --wait follows the same study to its end and judges the plan by its answer.
    code, verdict = check(capsys, service, "--submit", "--wait", "300", *STUDY_FLAGS)
    decision = verdict["decision"]
    assert code in (0, 1), verdict
    assert str(decision["study"]["id"]) == study_url.rsplit("/", 1)[1]
    assert decision["mismatches"] == [] and decision["study"]["recipe"]["max_grad_norm"] is None
    assert decision["study"]["budget"]["examples_seen"] > 0

    # 3. The recommended values pass; an LR 10× off fails, naming how far.
    batch, lr = decision["recommended_batch_size"], decision["recommended_learning_rate"]
    assert batch in (4, 8)
    micro = batch // 2  # accumulation 2 on 1 device
    code, verdict = check(capsys, service, lr=lr, micro=micro)
    assert code == 0, verdict
    code, verdict = check(capsys, service, lr=10 * lr, micro=micro)
    assert code == 1 and any("above the band's top" in message for message in errors(verdict))

    # 4. The same plan with packing on is another recipe: the verdict names the field and fails closed,
    #    or only warns when asked to.
    code, verdict = check(capsys, service, lr=lr, micro=micro, extra="sample_packing: true\n")
    assert code == 1
    assert any("packing: the config plans on, the study trained off" in m for m in errors(verdict))
    code, verdict = check(
        capsys, service, "--on-mismatch", "warn", lr=lr, micro=micro, extra="sample_packing: true\n"
    )
    assert code == 0 and [m["field"] for m in verdict["decision"]["mismatches"]] == ["packing"]


def test_submit_without_a_server_or_with_flags_the_study_cannot_honour_is_a_usage_error(
    capsys, service, tmp_path: Path
) -> None:
    config = tmp_path / "axolotl.yaml"
    config.write_text(CONFIG.format(model=service["model"], data=service["data"], micro=2, lr=2e-4, run="x"))
    assert advisor_main(["check", str(config), "--offline", "--submit"]) == 2
    assert "--submit: submits to a service" in capsys.readouterr().err
    assert advisor_main(["check", str(config), "--server", service["url"], "--submit", "--rank", "8"]) == 2
    assert "--rank: --submit studies the config as written" in capsys.readouterr().err
    assert advisor_main(["check", str(config), "--server", service["url"], "--wait", "10"]) == 2
    assert "--wait: only means something with --submit" in capsys.readouterr().err
