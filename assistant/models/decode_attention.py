"""Attention for the compiled one-token decode step: it reads only the cached positions in use.

A static KV cache has room for a whole conversation (at least 1,024 tokens), and transformers'
attention reads all of it at every step, the empty slots masked out. For a short chat that is a large
share of a small model's step. Here the step is told how many positions are filled (`seen_positions`, a
tensor whose length is that count, so that torch.compile makes it one dynamic size instead of a graph
per length), and attends over those alone, written as a product and a sum that Inductor fuses into one
pass over the keys and one over the values: faster, on a short chat, than the masked whole cache and
than a batched matrix product over the same slice (what the compiled step gains in all:
bench/results/bench-decode.md).

Prompts (several query positions) and batches go to PyTorch's scaled-dot-product attention, as in
transformers' default.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "assistant_decode_step"

# Plain causal attention, no sliding window, soft-capping or sinks: the families this is right for.
_PLAIN_ATTENTION = {"llama", "qwen2", "qwen3", "mistral"}


def suits(config) -> bool:
    """Whether this attention computes what the model's own does."""
    windowed = getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    return config.model_type in _PLAIN_ATTENTION and not windowed


def decode_step_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    seen_positions: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    if seen_positions is None or query.shape[2] != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    # One new token a row: every filled slot comes before it, so slicing is the causal mask (the
    # attention mask still hides a batch's left padding).
    seen = seen_positions.shape[0]
    key, value = key[:, :, :seen], value[:, :, :seen]
    if attention_mask is not None:
        attention_mask = attention_mask[..., :seen]
    if not torch.compiler.is_compiling():  # the eager fallback: PyTorch's kernel, no big temporaries
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, is_causal=False, **kwargs
        )
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    return _fused_one_query(query, key, value, attention_mask, scaling), None


def _fused_one_query(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    """query [B, Hq, 1, D], key and value [B, Hkv, S, D], mask [B, 1, 1, S] (True or 0: attend) ->
    [B, 1, Hq, D]; each group of query heads shares its key-value head without copying it."""
    rows, query_heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(rows, kv_heads, query_heads // kv_heads, 1, dim).float()
    scores = (grouped * key[:, :, None].float()).sum(-1) * scaling  # [B, Hkv, G, S]
    value = value.float()
    if mask is not None:
        attend = (mask if mask.dtype == torch.bool else mask == 0).reshape(rows, 1, 1, -1)
        scores = scores.masked_fill(~attend, float("-inf"))
        # A padding slot's value may be NaN (its own query saw no key in the prompt's pass), and a
        # zero weight times NaN is NaN: such slots are zeroed, in the same pass over the values.
        value = value.masked_fill(~attend.reshape(rows, 1, -1, 1), 0.0)
    weights = torch.softmax(scores, dim=-1)
    mixed = (weights[..., None] * value[:, :, None]).sum(-2)  # [B, Hkv, G, D]
    return mixed.reshape(rows, 1, query_heads, dim).to(query.dtype)


AttentionInterface.register(NAME, decode_step_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)
