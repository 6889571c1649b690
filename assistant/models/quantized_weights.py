"""Linear layers given int8 weights: torchao's `quantize_`, except where a package built by an earlier
start keeps them already.

A package keeps the int8 weights its program was exported with (packaged_step.SharedConstants), and
the folder it is in is named by the weights before quantization and the recipe, so on a later start
they are the very weights `quantize_` would make again (0.6 s for SmolVLM2-256M's language model and
vision tower on 2 cores, and a second copy of them until the eager model is lent the package's). Each
is made of the package's parts instead, in torchao's own tensor type, with the attributes torchao
gives it (taken from a one-row weight quantized with the same recipe).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torchao.quantization import quantize_
from torchao.quantization.quant_api import _is_linear  # quantize_'s own choice of layers

# parts of a weight, by their place in its tensor type's flattening (how export names them)
Parts = Mapping[int, torch.Tensor]


def quantize(module: torch.nn.Module, config, kept: Mapping[str, Parts] | None = None) -> int:
    """`quantize_(module, config)`, each linear layer whose weight's parts are in `kept` (by the
    weight's name in `module`) given a weight made of them rather than quantized again; returns how
    many were."""
    kept = kept or {}
    made = set()
    templates: dict[tuple, torch.Tensor] = {}
    for name, layer in module.named_modules():
        parts = kept.get(f"{name}.weight")
        if parts is None or not _is_linear(layer):
            continue
        weight = _made_of(parts, layer.weight, config, templates)
        if weight is not None:
            layer.weight = torch.nn.Parameter(weight, requires_grad=False)
            made.add(name)
    quantize_(module, config, filter_fn=lambda layer, name: name not in made and _is_linear(layer))
    return len(made)


def _made_of(parts: Parts, weight: torch.Tensor, config, templates: dict) -> torch.Tensor | None:
    """A weight of `weight`'s shape, of `parts`, as `config` quantizes it; None where the parts do not
    make one (then it is quantized)."""
    template = _template(weight, config, templates)
    names, attributes = template.__tensor_flatten__()
    inner = {}
    for place, name in enumerate(names):
        part = parts.get(place)
        if part is None and name == "zero_point" and not getattr(template, name).any():
            # Symmetric int8 has zero points of zeros for any weight; no graph reads them, so no
            # package keeps them.
            part = torch.zeros((weight.shape[0], *getattr(template, name).shape[1:]), dtype=torch.int8)
        if part is None or part.dim() != weight.dim() or part.shape[0] != weight.shape[0]:
            return None
        inner[name] = part
    if inner[names[0]].shape != weight.shape:
        return None
    return type(template).__tensor_unflatten__(inner, attributes, weight.shape, weight.stride())


def _template(weight: torch.Tensor, config, templates: dict) -> torch.Tensor:
    """A one-row weight of `weight`'s width and type, quantized by `config`: the tensor type and the
    attributes (the block size among them) that `weight` gets."""
    key = (weight.shape[1:], weight.dtype)
    if key not in templates:
        layer = torch.nn.Sequential(torch.nn.Linear(weight.shape[1], 1, bias=False, dtype=weight.dtype))
        quantize_(layer, config)
        templates[key] = layer[0].weight
    return templates[key]
