"""Shared fixtures: tiny models saved as real local folders, and generated datasets.

Everything runs offline on CPU. Session-scoped fixtures are read-only for tests: a test that trains
builds its own ProxySetup from the saved folder, so no test sees another's weights.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a hub from a test
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from proxy_runs import synthetic, tiny


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def instruction_jsonl(data_dir: Path) -> Path:
    return synthetic.write_jsonl(synthetic.instruction_records(240, seed=1), data_dir / "instructions.jsonl")


@pytest.fixture(scope="session")
def seq2seq_jsonl(data_dir: Path) -> Path:
    return synthetic.write_jsonl(synthetic.seq2seq_records(120, seed=2), data_dir / "pairs.jsonl")


@pytest.fixture(scope="session")
def text_jsonl(data_dir: Path) -> Path:
    return synthetic.write_jsonl(synthetic.text_records(120, seed=3), data_dir / "text.jsonl")


@pytest.fixture(scope="session")
def tokenizer_corpus() -> list[str]:
    return synthetic.corpus_of(
        synthetic.instruction_records(400, seed=0) + synthetic.text_records(200, seed=0)
    )


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, tokenizer_corpus: list[str]) -> Path:
    return tiny.save_tiny_model(tmp_path_factory.mktemp("llama"), "llama", tokenizer_corpus)


@pytest.fixture(scope="session")
def pretrained_llama(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, text_jsonl: Path) -> Path:
    """The tiny Llama after 150 full fine-tuning steps on plain text: a base model of another domain."""
    return tiny.pretrain_tiny_model(
        tiny_llama, text_jsonl, tmp_path_factory.mktemp("pretrained"), steps=150, learning_rate=1e-2
    )


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory, tokenizer_corpus: list[str]) -> Path:
    return tiny.save_tiny_model(tmp_path_factory.mktemp("t5"), "t5", tokenizer_corpus)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory, tokenizer_corpus: list[str]) -> Path:
    return tiny.save_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2", tokenizer_corpus)


def make_spec(model: Path | str, data: Path | str, **fields: object) -> dict[str, object]:
    """A small study spec as a dict (what a user writes); `fields` override or extend it."""
    spec: dict[str, object] = {
        "model": str(model),
        "dataset": {"path": str(data)},
        "method": "lora",
        "rank": 4,
        "training": {"max_seq_len": 64},
    }
    spec.update(fields)
    return spec


# A PostgreSQL server of a test's own ---------------------------------------------------------------------

POSTGRES_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "start_postgres.sh"
PG_ENV = "LORA_ADVISOR_TEST_PG_URL"  # set by .ci/run, which installs and starts PostgreSQL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, Path]]:
    """(url, data folder) of a PostgreSQL server on a free loopback port that only this test uses, so it may
    stop and start it (scripts/start_postgres.sh <port> <folder>, and `stop <folder>`)."""
    if not os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} is not set; .ci/run starts PostgreSQL and sets it")
    base = Path(tempfile.mkdtemp(prefix="advisor-pg-own-"))
    base.chmod(0o755)  # the server runs as `postgres` when we are root and must reach its folder
    folder = base / "pg"
    started = subprocess.run(
        [str(POSTGRES_SCRIPT), str(free_port()), str(folder)], check=True, capture_output=True, text=True
    )
    try:
        yield started.stdout.strip().splitlines()[-1], folder
    finally:
        subprocess.run([str(POSTGRES_SCRIPT), "stop", str(folder)], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture(scope="module")
def one_intra_op_thread() -> Iterator[None]:
    """One torch thread for a module's tests (`pytestmark = pytest.mark.usefixtures(...)`): probes of
    hidden-16 to hidden-64 models gain nothing from intra-op threads, while OpenMP barriers on a busy 2-core
    machine (other jobs running) made them 15× slower. Probes themselves never change the thread count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
