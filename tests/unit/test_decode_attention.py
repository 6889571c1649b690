"""The compiled decode step's attention: it reads the filled cache positions only, and gives what
PyTorch's attention gives over exactly those positions."""

import pytest
import torch
import transformers

from assistant.models import decode_attention

QUERY_HEADS, KV_HEADS, DIM, SLOTS = 6, 2, 16, 32


class _Layer(torch.nn.Module):
    num_key_value_groups = QUERY_HEADS // KV_HEADS
    is_causal = True
    training = False


def a_half_filled_cache(filled: int):
    """Keys and values whose slots past `filled` hold what an unused slot may hold: anything."""
    torch.manual_seed(0)
    key = torch.randn(1, KV_HEADS, SLOTS, DIM)
    value = torch.randn(1, KV_HEADS, SLOTS, DIM)
    key[:, :, filled:] = 1e4
    value[:, :, filled:] = float("nan")
    return key, value


def reference(query, key, value, filled):
    """Attention of one query over the first `filled` positions, each query head reading its group's key head."""
    key = key[:, :, :filled].repeat_interleave(QUERY_HEADS // KV_HEADS, dim=1)
    value = value[:, :, :filled].repeat_interleave(QUERY_HEADS // KV_HEADS, dim=1)
    return torch.nn.functional.scaled_dot_product_attention(query, key, value).transpose(1, 2)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_one_token_attends_over_the_filled_positions_only(compiled):
    attend = decode_attention.decode_step_attention
    if compiled:
        attend = torch.compile(attend, fullgraph=True)
    query = torch.randn(1, QUERY_HEADS, 1, DIM)
    for filled in (5, 9):  # two lengths, one compiled graph (the length is dynamic)
        key, value = a_half_filled_cache(filled)
        seen = torch.arange(filled)
        torch._dynamo.mark_dynamic(seen, 0)
        output, _ = attend(_Layer(), query, key, value, None, scaling=DIM**-0.5, seen_positions=seen)
        assert output.shape == (1, 1, QUERY_HEADS, DIM)
        assert torch.allclose(output, reference(query, key, value, filled), atol=1e-5), f"{filled} filled"


def test_without_the_filled_count_it_is_pytorchs_attention():
    query = torch.randn(1, QUERY_HEADS, 3, DIM)
    key, value = a_half_filled_cache(SLOTS)
    output, _ = decode_attention.decode_step_attention(_Layer(), query, key, value, None, scaling=DIM**-0.5)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(3, dim=1), value.repeat_interleave(3, dim=1), is_causal=True
    ).transpose(1, 2)
    assert torch.allclose(output, expected, atol=1e-5)


def test_only_plain_causal_attention_models_use_it():
    assert decode_attention.suits(transformers.LlamaConfig())
    assert decode_attention.suits(transformers.Qwen2Config(use_sliding_window=False))
    assert not decode_attention.suits(transformers.Qwen2Config(use_sliding_window=True, sliding_window=64))
    assert not decode_attention.suits(transformers.MistralConfig(sliding_window=4096))
    assert not decode_attention.suits(transformers.Gemma2Config())
