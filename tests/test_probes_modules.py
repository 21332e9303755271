"""Which modules a probe looks at: representative by default, all on request, or by name."""

from __future__ import annotations

import pytest
from peft import LoraConfig, get_peft_model

from advisor.errors import SpecError
from proxy_runs.probes.modules import select_modules, trainable_groups
from proxy_runs.tiny import build_tiny_model


@pytest.fixture(scope="module")
def five_layer_dora():
    model = build_tiny_model("llama", 300, seed=0, hidden=16, layers=5, heads=4)
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj", "o_proj"], use_dora=True)
    return get_peft_model(model, config)


def test_default_is_query_and_value_of_the_first_middle_and_last_layers(five_layer_dora) -> None:
    names = [group.name for group in select_modules(five_layer_dora)]

    assert names == [f"model.layers.{i}.self_attn.{m}" for i in (0, 2, 4) for m in ("q_proj", "v_proj")]


def test_each_module_carries_its_own_trainable_parameters(five_layer_dora) -> None:
    group = select_modules(five_layer_dora, ["layers.0.self_attn.q_proj"])[0]

    # DoRA trains A (2×16), B (16×2) and a magnitude vector (16)
    assert [name.split(".q_proj.")[1] for name in group.param_names] == [
        "lora_A.default.weight",
        "lora_B.default.weight",
        "lora_magnitude_vector.default.weight",
    ]
    assert group.n_params == 2 * 16 + 16 * 2 + 16
    assert all(p.requires_grad for p in group.params)


def test_all_returns_every_module_with_trainable_parameters(five_layer_dora) -> None:
    assert len(select_modules(five_layer_dora, "all")) == 15
    assert select_modules(five_layer_dora, ["all"]) == trainable_groups(five_layer_dora)


def test_a_suffix_selects_that_module_in_every_layer(five_layer_dora) -> None:
    names = [group.name for group in select_modules(five_layer_dora, ["o_proj", "layers.1.self_attn.v_proj"])]

    every_o_proj = [f"model.layers.{i}.self_attn.o_proj" for i in range(5)]
    assert names == [*every_o_proj, "model.layers.1.self_attn.v_proj"]


def test_an_unknown_module_name_is_a_spec_error_with_suggestions(five_layer_dora) -> None:
    with pytest.raises(SpecError) as caught:
        select_modules(five_layer_dora, ["k_proj"])

    assert caught.value.field == "modules" and caught.value.value == "k_proj"
    assert "q_proj" in str(caught.value)


def test_full_fine_tuning_groups_parameters_by_the_module_that_holds_them() -> None:
    model = build_tiny_model("llama", 300, seed=0, hidden=16, layers=3, heads=4)  # everything trains

    names = [group.name for group in select_modules(model)]

    assert names == [f"model.layers.{i}.self_attn.{m}" for i in (0, 1, 2) for m in ("q_proj", "v_proj")]


def test_a_model_with_nothing_trainable_cannot_be_probed() -> None:
    model = build_tiny_model("llama", 300, seed=0, hidden=16, layers=1, heads=4).requires_grad_(False)

    with pytest.raises(SpecError, match="no trainable parameters"):
        select_modules(model)
