"""Products of a few rows with int8 weights, without widening the weights first.

Run eagerly, torchao's weight-only Int8Tensor converts its whole weight matrix to bfloat16 at every
call and then multiplies. For many rows (a long prompt) that conversion is paid once for all of them;
for a few (a follow-up's new tokens, an eager decode step, the one row of logits a prefill keeps) it is
most of the time. ATen's int8 kernel (`_weight_int8pack_mm`, the one gpt-fast and torchao's own older
layouts call) reads the int8 weights as they are. The compiled steps need none of this: Inductor writes
their kernels. Timings per shape: bench/results/int8-rows.md (`python -m bench.int8_rows`).

    with few_rows_int8():
        logits = language_model(inputs_embeds=new_tokens, ...)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# Rows up to which ATen's kernel beats widening the weights (SmolLM2-360M's shapes on a 2-core CPU:
# ahead up to 8 rows, behind from 16; bench/results/int8-rows.md).
MOST_ROWS = 8


class few_rows_int8(TorchFunctionMode):  # noqa: N801 - used as a context manager, named like one
    """Within it (in this thread only: the mode stack is thread-local), `F.linear` of at most
    MOST_ROWS rows by a weight-only, per-row Int8Tensor goes to ATen's int8 kernel; everything else
    as usual."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and _fits(*args, **kwargs):
            return int8_linear(*args, **kwargs)
        return func(*args, **kwargs)


def _fits(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    from torchao.quantization import Int8Tensor

    if not isinstance(weight, Int8Tensor) or isinstance(input, Int8Tensor):
        return False
    weight_only = weight.act_quant_kwargs is None and weight.act_pre_scale is None
    per_row = list(weight.block_size) == [1, weight.qdata.shape[-1]]
    rows = input.numel() // input.shape[-1]
    return weight_only and per_row and rows <= MOST_ROWS and input.dtype in (torch.bfloat16, torch.float32)


def int8_linear(input: torch.Tensor, weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """input [..., K] @ weight [N, K] (int8, one scale per row) -> [..., N] in input's dtype."""
    rows = input.reshape(-1, input.shape[-1]).contiguous()
    output = torch._weight_int8pack_mm(rows, weight.qdata, weight.scale.flatten().to(input.dtype))
    if bias is not None:
        output = output + bias
    return output.reshape(*input.shape[:-1], weight.qdata.shape[0])
