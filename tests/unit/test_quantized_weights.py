"""int8 weights made of what a package keeps (models/quantized_weights.py): the very weights torchao's
quantize_ makes, in its own tensor type, without quantizing again."""

import copy

import pytest
import torch
from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

from assistant.models.quantized_weights import quantize

RECIPES = [Int8WeightOnlyConfig(), Int8DynamicActivationInt8WeightConfig()]


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    layers = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.GELU(), torch.nn.Linear(48, 16, bias=False))
    return torch.nn.ModuleDict({"mlp": layers, "head": torch.nn.Linear(16, 8)}).to(torch.bfloat16)


def run(net: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return net["head"](net["mlp"](inputs))


def kept_by_a_package(quantized: torch.nn.Module) -> dict:
    """A weight's data and scales, by the weight's name (as a package keeps them: no zero points,
    which no graph reads)."""
    return {
        f"{name}.weight": {0: layer.weight.qdata.clone(), 1: layer.weight.scale.clone()}
        for name, layer in quantized.named_modules()
        if isinstance(layer, torch.nn.Linear)
    }


@pytest.mark.parametrize("recipe", RECIPES, ids=type)
def test_weights_made_of_kept_parts_are_those_quantize_makes(recipe, monkeypatch):
    reference = model()
    quantize_(reference, recipe)
    kept = kept_by_a_package(reference)
    made = model()
    quantized_rows = []
    from_hp = type(reference["head"].weight).from_hp
    monkeypatch.setattr(
        type(reference["head"].weight),
        "from_hp",
        classmethod(lambda cls, weight, *a, **k: quantized_rows.append(weight.shape[0]) or from_hp(weight, *a, **k)),
    )
    assert quantize(made, recipe, kept) == 3
    assert set(quantized_rows) == {1}, "only one-row templates were quantized, no weight of the model"
    for name, layer in made.named_modules():
        if isinstance(layer, torch.nn.Linear):
            weight, expected = layer.weight, reference.get_submodule(name).weight
            assert type(weight) is type(expected) and weight.shape == expected.shape
            assert weight.qdata.data_ptr() == kept[f"{name}.weight"][0].data_ptr(), "the kept memory, not a copy"
            names, attributes = weight.__tensor_flatten__()
            assert (names, attributes) == expected.__tensor_flatten__()
            for part in names:
                torch.testing.assert_close(getattr(weight, part), getattr(expected, part), rtol=0, atol=0)
    inputs = torch.randn(5, 64, dtype=torch.bfloat16)
    torch.testing.assert_close(run(made, inputs), run(reference, inputs), rtol=0, atol=0)


def test_a_weight_the_package_does_not_keep_whole_is_quantized():
    recipe = Int8WeightOnlyConfig()
    reference = model()
    quantize_(reference, recipe)
    kept = kept_by_a_package(reference)
    del kept["mlp.0.weight"][1]  # its scales missing
    kept["head.weight"][0] = kept["head.weight"][0][:4]  # another shape
    made = model()
    assert quantize(made, recipe, kept) == 1, "only mlp.2's is made of kept parts"
    assert all(type(layer.weight) is type(reference["head"].weight) for layer in (made["mlp"][0], made["head"]))
    inputs = torch.randn(5, 64, dtype=torch.bfloat16)
    torch.testing.assert_close(run(made, inputs), run(reference, inputs), rtol=0, atol=0)


def test_without_kept_parts_it_is_quantize_itself():
    recipe = Int8DynamicActivationInt8WeightConfig()
    reference, made = model(), model()
    quantize_(reference, recipe)
    assert quantize(made, recipe) == 0
    inputs = torch.randn(5, 64, dtype=torch.bfloat16)
    torch.testing.assert_close(run(made, inputs), run(copy.deepcopy(reference), inputs), rtol=0, atol=0)
