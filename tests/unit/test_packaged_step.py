"""The decode step compiled ahead of time into a package (models/packaged_step.py): it decodes as the
eager step, writes the cache in place as the eager step does, and a package loaded again from disk (a
later start) answers the same."""

import copy

import pytest
import torch
from torchao.quantization import Int8WeightOnlyConfig, quantize_
from transformers import StaticCache

from assistant.models.fast_decode import INDUCTOR_SETTINGS, DecodeSpeed, convert_weights
from assistant.models.loader import ensure_tiny_model, load_pretrained
from assistant.models.packaged_step import PackagedStep, build_package, cache_tensors, export_step

# Autotuning the GEMMs would time every choice for minutes; these tests check what the step computes.
SETTINGS = dict(INDUCTOR_SETTINGS, max_autotune=False)
PROMPT = [[1, 2, 3, 4]]


@pytest.fixture(scope="module")
def decoder(cache_dir):
    directory = str(ensure_tiny_model("smolvlm", cache_dir))
    model = load_pretrained(directory, torch.device("cpu"), torch.float32, speed=DecodeSpeed("float32", True, 1))
    return model.decoder


def prefilled(decoder, length: int = 1024) -> StaticCache:
    cache = StaticCache(config=decoder.language_model.config, max_cache_len=length)
    with torch.inference_mode():
        decoder._prefill(decoder.language_model.get_input_embeddings()(torch.tensor(PROMPT)), cache)
    return cache


def steps(step, cache, positions) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [
            step(torch.tensor([[position * 7 % 50]]), torch.tensor([position]), cache, torch.empty(position + 1))
            for position in positions
        ]


@pytest.mark.slow
def test_a_packaged_step_decodes_as_the_eager_step_and_survives_a_restart(decoder, tmp_path):
    first = len(PROMPT[0])
    example = (torch.tensor([[5]]), torch.tensor([first]), prefilled(decoder), torch.empty(first + 1))
    program = export_step(decoder.language_model, decoder._one_token, example)
    path = build_package(program, tmp_path / "step.pt2", SETTINGS)
    assert path.is_file() and not list(tmp_path.glob("*.partial.pt2")), "written whole, under its own name"

    eager_cache, packaged_cache = prefilled(decoder), prefilled(decoder)
    expected = steps(decoder._one_token, eager_cache, range(first, first + 8))
    answered = steps(PackagedStep.load(path), packaged_cache, range(first, first + 8))
    for want, got in zip(expected, answered, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert [int(logits.argmax()) for logits in answered] == [int(logits.argmax()) for logits in expected]
    for want, got in zip(cache_tensors(eager_cache), cache_tensors(packaged_cache), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)  # written in place, as the eager step

    later = steps(PackagedStep.load(path), packaged_cache, [first + 8])  # loaded afresh: a later start
    torch.testing.assert_close(later[0], steps(decoder._one_token, eager_cache, [first + 8])[0], rtol=1e-4, atol=1e-4)


def test_int8_weights_keep_their_scales_in_the_activations_type_and_answer_the_same():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 16))
    with_float32_scales = copy.deepcopy(model).to(torch.bfloat16)
    quantize_(with_float32_scales, Int8WeightOnlyConfig())
    converted = convert_weights(model, "int8")
    assert {layer.weight.scale.dtype for layer in with_float32_scales} == {torch.float32}
    assert {layer.weight.scale.dtype for layer in converted} == {torch.bfloat16}
    inputs = torch.randn(3, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        torch.testing.assert_close(converted(inputs), with_float32_scales(inputs), rtol=0, atol=0)
