"""`advisor.check.decide` (the band verdict) and `advisor.training_configs` (every supported config format).

The stored recommendation used throughout: B* = 16, LR* = 4e-4, band 2e-4…8e-4 at batch 16 over batch
sizes 8…32, LR rule κ = 0.5. At batch 32 the band moves by (32/16)^0.5 = √2 to 2.83e-4…1.13e-3.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from advisor import check
from advisor.check import BATCH_TOLERANCE, LR_TOLERANCE, decide
from advisor.science import fits
from advisor.training_configs import ConfigError
from advisor.training_configs import load_config as load_plan

RECOMMENDATION = {
    "batch_size": 16,
    "learning_rate": 4e-4,
    "band": {"batch_sizes": [8, 16, 32], "lr_low": 2e-4, "lr_high": 8e-4, "epsilon": 0.01},
    "lr_rule": {"kappa": 0.5, "reference_batch": 16, "reference_lr": 4e-4, "formula": "LR(B) = …"},
}
READY = {"status": "ready", "batch_size": 16, "learning_rate": 4e-4, "details": RECOMMENDATION}


# decide ------------------------------------------------------------------------------------------------


def test_the_recommended_point_and_any_lr_inside_the_band_pass() -> None:
    assert decide(READY, batch_size=16, learning_rate=4e-4).outcome == "pass"
    assert decide(READY, batch_size=16, learning_rate=7.9e-4).outcome == "pass"
    assert decide(READY, batch_size=8, learning_rate=2e-4).outcome == "pass"


def test_an_lr_above_the_band_fails_saying_how_far_and_where_the_band_is() -> None:
    decision = decide(READY, batch_size=16, learning_rate=2e-3)
    assert decision.outcome == "fail" and (decision.lr_low, decision.lr_high) == (2e-4, 8e-4)
    assert [f.message for f in decision.errors] == [
        "learning_rate 0.002 is 2.5× above the band's top 0.0008 at effective batch 16 "
        "(recommended 0.0004, band 0.0002…0.0008)"
    ]
    low = decide(READY, batch_size=16, learning_rate=5e-5)
    assert low.outcome == "fail" and "4× below the band's bottom 0.0002" in low.errors[0].message


def test_the_band_moves_with_the_lr_rule_at_another_effective_batch() -> None:
    decision = decide(READY, batch_size=32, learning_rate=1e-3)  # above 8e-4 at 16, inside √2 × that at 32
    assert decision.outcome == "pass"
    assert decision.lr_high == pytest.approx(8e-4 * math.sqrt(2))
    assert decision.rescaled_learning_rate == pytest.approx(4e-4 * math.sqrt(2))
    too_high = decide(READY, batch_size=32, learning_rate=2e-3)
    assert "1.8× above the band's top 0.0011 at effective batch 32" in too_high.errors[0].message


def test_a_rule_stored_with_kappa_past_linear_scaling_moves_the_band_at_most_linearly() -> None:
    """Answers stored before κ was bounded may say B^1.6; the band then moves as B^1 (the linear scaling
    rule, the science's upper bound), as the study would say today."""
    wild = {**RECOMMENDATION, "lr_rule": {**RECOMMENDATION["lr_rule"], "kappa": 1.6}}
    decision = decide({**READY, "details": wild}, batch_size=32, learning_rate=8e-4)
    assert decision.rescaled_learning_rate == pytest.approx(8e-4) and decision.kappa == 1.0


def test_checks_bounds_and_fallback_are_the_sciences_own() -> None:
    assert (check.KAPPA_BOUNDS, check.KAPPA_FALLBACK) == (fits.KAPPA_BOUNDS, fits.KAPPA_PRIOR)


def test_an_effective_batch_outside_the_bands_batch_sizes_fails() -> None:
    decision = decide(READY, batch_size=64, learning_rate=8e-4)
    assert decision.outcome == "fail"
    assert decision.errors[0].key == "batch_size"
    assert "effective batch 64 is outside the band's batch sizes 8…32 (recommended 16)" in (
        decision.errors[0].message
    )


def test_a_changed_batch_with_the_lr_left_at_the_recommendation_for_b_star_is_flagged() -> None:
    decision = decide(READY, batch_size=32, learning_rate=4e-4)
    assert decision.outcome == "pass" and decision.lr_not_rescaled  # still inside the band: a warning
    (warning,) = [f for f in decision.findings if f.level == "warning"]
    assert warning.message.startswith("effective batch changed from 16 to 32 but the LR was not rescaled")
    assert "at 32 use 0.00057" in warning.message
    assert not decide(READY, batch_size=16, learning_rate=4e-4).lr_not_rescaled
    assert not decide(READY, batch_size=32, learning_rate=5.7e-4).lr_not_rescaled  # rescaled: fine


def test_nothing_stored_is_indeterminate_with_the_lookups_reason() -> None:
    decision = decide({"status": "none", "detail": "no study for m"}, batch_size=16, learning_rate=1e-4)
    assert decision.outcome == "indeterminate" and decision.findings[0].message == "no study for m"


def test_an_answer_without_a_band_uses_the_documented_tolerances() -> None:
    bare = {"status": "ready", "batch_size": 16, "learning_rate": 4e-4, "details": {"source": "synthetic"}}
    assert decide(bare, batch_size=16, learning_rate=4e-4 * LR_TOLERANCE).outcome == "pass"
    assert decide(bare, batch_size=16, learning_rate=4e-4 * LR_TOLERANCE * 1.1).outcome == "fail"
    assert decide(bare, batch_size=int(16 * BATCH_TOLERANCE), learning_rate=5.2e-4).outcome == "pass"
    assert decide(bare, batch_size=int(16 * BATCH_TOLERANCE * 2), learning_rate=7e-4).outcome == "fail"


def test_a_one_batch_band_never_reaches_a_batch_size_the_study_measured_worse() -> None:
    # B* = 16 alone in the band; the study also ran 8 and 32 and found both worse than ε.
    band = {**RECOMMENDATION["band"], "batch_sizes": [16], "compared_batch_sizes": [8, 16, 32]}
    alone = {**READY, "details": {**RECOMMENDATION, "band": band}}
    assert decide(alone, batch_size=16, learning_rate=4e-4).outcome == "pass"
    assert decide(alone, batch_size=24, learning_rate=4.9e-4).outcome == "pass"  # between: not measured
    measured_worse = decide(alone, batch_size=32, learning_rate=5.7e-4)  # the LR rescaled as it should be
    assert measured_worse.outcome == "fail" and (measured_worse.batch_low, measured_worse.batch_high) == (
        9,
        31,
    )
    assert "outside the band's batch sizes 9…31" in measured_worse.errors[0].message
    # Without the comparison (an older answer), the tolerance reaches one doubling either side.
    uncompared = {**READY, "details": {**RECOMMENDATION, "band": {**band, "compared_batch_sizes": []}}}
    assert decide(uncompared, batch_size=32, learning_rate=5.7e-4).outcome == "pass"


def test_an_alpha_rescaled_lookup_moves_the_band_with_lr_star() -> None:
    # lookup halves LR* when α doubles (lr·α/r constant); the stored band must follow.
    doubled_alpha = {**READY, "learning_rate": 2e-4}
    decision = decide(doubled_alpha, batch_size=16, learning_rate=3e-4)
    assert (decision.lr_low, decision.lr_high) == pytest.approx((1e-4, 4e-4)) and decision.outcome == "pass"


# config formats --------------------------------------------------------------------------------------

AXOLOTL = """\
base_model: NousResearch/Meta-Llama-3-8B
load_in_4bit: true
adapter: qlora
lora_r: 16
lora_alpha: 32
lora_dropout: 0.05
lora_target_linear: true
datasets:
  - path: mhenrichsen/alpaca_2k_test
    type: alpaca
sequence_len: 2048
micro_batch_size: 2
gradient_accumulation_steps: 4
num_epochs: 1
optimizer: adamw_bnb_8bit
lr_scheduler: cosine
learning_rate: 2e-4
"""

LLAMA_FACTORY = """\
### model
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
use_dora: true

### dataset
dataset: identity,alpaca_en_demo
template: llama3
cutoff_len: 2048

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
"""

HF_TRAINER_JSON = """\
{
  "output_dir": "out",
  "model_name_or_path": "Qwen/Qwen2.5-0.5B",
  "per_device_train_batch_size": 4,
  "gradient_accumulation_steps": 2,
  "learning_rate": 0.0003,
  "num_train_epochs": 1,
  "world_size": 2,
  "peft": {"r": 32, "lora_alpha": 64, "target_modules": "all-linear", "use_rslora": true}
}
"""

TRL_YAML = """\
model_name_or_path: Qwen/Qwen2.5-0.5B
dataset_name: trl-lib/Capybara
use_peft: true
lora_r: 16
lora_alpha: 32
per_device_train_batch_size: 8
gradient_accumulation_steps: 1
learning_rate: 2.0e-4
"""

TORCHTUNE = """\
model:
  _component_: torchtune.models.llama3_2.lora_llama3_2_1b
  lora_attn_modules: ['q_proj', 'v_proj', 'output_proj']
  apply_lora_to_mlp: True
  lora_rank: 64
  lora_alpha: 128
  lora_dropout: 0.0
checkpointer:
  _component_: torchtune.training.FullModelHFCheckpointer
  checkpoint_dir: /tmp/Llama-3.2-1B-Instruct/
  checkpoint_files: [model.safetensors]
  model_type: LLAMA3_2
optimizer:
  _component_: torch.optim.AdamW
  fused: True
  weight_decay: 0.01
  lr: 3e-4
batch_size: 4
gradient_accumulation_steps: 8
epochs: 1
"""

STUDY_SPEC = """\
model: tiny-llama
dataset: {path: train.jsonl}
method: lora
rank: 8
batch_sizes: [8, 16]
lr_range: [1.0e-5, 1.0e-2]
budget: {proxy_seconds: 60}
"""

EXPECTED = {  # file → (format, model, method, rank, alpha, micro, accumulation, devices, devices from, LR)
    "axolotl.yaml": (
        AXOLOTL,
        "axolotl",
        "NousResearch/Meta-Llama-3-8B",
        "lora",
        16,
        32,
        2,
        4,
        1,
        "default",
        2e-4,
    ),
    "llamafactory.yaml": (
        LLAMA_FACTORY,
        "llama-factory",
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "dora",
        8,
        16,
        1,
        8,
        1,
        "default",
        1e-4,
    ),
    "trainer.json": (
        HF_TRAINER_JSON,
        "hf-trainer",
        "Qwen/Qwen2.5-0.5B",
        "rslora",
        32,
        64,
        4,
        2,
        2,
        "world_size",
        3e-4,
    ),
    "trl.yaml": (TRL_YAML, "hf-trainer", "Qwen/Qwen2.5-0.5B", "lora", 16, 32, 8, 1, 1, "default", 2e-4),
    "torchtune.yaml": (
        TORCHTUNE,
        "torchtune",
        "/tmp/Llama-3.2-1B-Instruct/",
        "lora",
        64,
        128,
        4,
        8,
        1,
        "default",
        3e-4,
    ),
    "spec.yaml": (STUDY_SPEC, "study-spec", "tiny-llama", "lora", 8, 8, None, 1, 1, "default", None),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_every_supported_format_is_detected_and_read(tmp_path: Path, name: str) -> None:
    text, *expected = EXPECTED[name]
    (tmp_path / name).write_text(text)
    plan = load_plan(tmp_path / name)
    got = [
        plan.format,
        plan.model,
        plan.method,
        plan.rank,
        plan.alpha,
        plan.micro_batch_size,
        plan.accumulation_steps,
        plan.devices,
        plan.devices_source,
        plan.learning_rate,
    ]
    assert got == expected


def test_the_effective_batch_multiplies_micro_batch_accumulation_and_devices(tmp_path: Path) -> None:
    (tmp_path / "trainer.json").write_text(HF_TRAINER_JSON)
    assert load_plan(tmp_path / "trainer.json").effective_batch_size == 4 * 2 * 2


def test_plan_values_know_their_line_for_annotations(tmp_path: Path) -> None:
    (tmp_path / "tt.yaml").write_text(TORCHTUNE)
    lines = load_plan(tmp_path / "tt.yaml").lines
    assert TORCHTUNE.splitlines()[lines["learning_rate"] - 1].strip() == "lr: 3e-4"
    assert TORCHTUNE.splitlines()[lines["micro_batch_size"] - 1] == "batch_size: 4"


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (AXOLOTL.replace("learning_rate: 2e-4", "learning_rate: fast"), "learning_rate", "must be a number"),
        (AXOLOTL.replace("micro_batch_size: 2", "micro_batch_size: -2"), "micro_batch_size", "positive"),
        (AXOLOTL.replace("adapter: qlora", "adapter: ia3"), "adapter", "lora or qlora"),
        (TORCHTUNE + "loss:\n  _component_: torchtune.rlhf.loss.DPOLoss\n", "loss._component_", "supervised"),
        ("epochs: 3\n", "format", "cannot tell the format"),
        ("a: [1, 2\n", "syntax", "cannot parse"),
        (STUDY_SPEC.replace("rank: 8", "rank: -1"), "rank", "positive"),
    ],
)
def test_a_bad_config_names_the_file_and_the_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_plan(tmp_path / "bad.yaml")
    assert caught.value.key == key and message in caught.value.message
    assert str(caught.value).startswith(f"{tmp_path / 'bad.yaml'}: {key}: ")
