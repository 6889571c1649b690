"""Few rows by int8 weights go to ATen's int8 kernel (models/int8_rows.py): the same products as
torchao's own eager path, without widening the weights; many rows stay on torchao's path."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torchao.quantization import Int8WeightOnlyConfig, quantize_

from assistant.models.int8_rows import MOST_ROWS, few_rows_int8


def int8_linear(bias: bool, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 96, bias=bias).to(dtype)
    quantize_(layer, Int8WeightOnlyConfig())
    return layer


def aten_ops(run) -> tuple[torch.Tensor, set[str]]:
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        result = run()
    return result, {event.key for event in profiler.key_averages()}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 64), (1, 1, 64), (2, 3, 64), (MOST_ROWS, 64)])
def test_few_rows_give_torchaos_products_through_atens_int8_kernel(shape, dtype):
    layer = int8_linear(bias=True, dtype=dtype)
    rows = torch.randn(shape, dtype=dtype)
    with torch.inference_mode():
        expected = layer(rows)
        with few_rows_int8():
            got, ops = aten_ops(lambda: layer(rows))
    assert "aten::_weight_int8pack_mm" in ops, f"ATen's int8 kernel was not called: {sorted(ops)}"
    assert got.shape == expected.shape and got.dtype == expected.dtype
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-5  # bfloat16 sums in another order
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance * expected.abs().max().item())


def test_many_rows_stay_on_torchaos_path():
    layer = int8_linear(bias=False, dtype=torch.bfloat16)
    rows = torch.randn(MOST_ROWS + 1, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        expected = layer(rows)
        with few_rows_int8():
            got, ops = aten_ops(lambda: layer(rows))
    assert "aten::_weight_int8pack_mm" not in ops
    assert torch.equal(got, expected)


def test_other_weights_are_left_alone():
    layer = torch.nn.Linear(64, 96)
    rows = torch.randn(2, 64)
    with torch.inference_mode(), few_rows_int8():
        got, ops = aten_ops(lambda: layer(rows))
    assert "aten::_weight_int8pack_mm" not in ops
    assert torch.equal(got, torch.nn.functional.linear(rows, layer.weight, layer.bias))
