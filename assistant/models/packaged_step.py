"""The one-token decode step compiled ahead of time into a package on disk (torch.export, then
AOTInductor): built once, and loaded by later starts in about half a second, where torch.compile
traces the model again at every start (a minute of the start's cores, and its memory).

    package = build_package(decoder, cache, path)   # minutes: export, then Inductor's C++ compile
    step = PackagedStep.load(path)                   # half a second
    logits = step(token, position, cache, seen)      # as FastDecoder's own step

The step is exported with the cache as inputs it writes in place (each layer's keys, values and
count) and one dynamic size, the filled positions (`seen`, as for torch.compile); a package serves
one length of cache (a bucket of FastDecoder's). The int8 weights' scales are stored in the
activations' type (torchao casts them there at every call anyway): Inductor packs such weights for
its own C++ GEMM, which is what makes the step fast (5 ms a token at SmolLM2-135M's size,
`python -m bench.packaged_step`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import StaticCache


def cache_tensors(cache: StaticCache) -> tuple[torch.Tensor, ...]:
    """Each layer's keys, values and count of written positions, in layer order: what the step writes."""
    return tuple(tensor for layer in cache.layers for tensor in (layer.keys, layer.values, layer.cumulative_length))


class _StepWithCacheInputs(torch.nn.Module):
    """`one_token_step(token, position, cache, seen)` with the cache's tensors as plain inputs, so that
    export sees them as inputs it mutates rather than as constants of the graph."""

    def __init__(self, language_model: torch.nn.Module, one_token_step, cache: StaticCache):
        super().__init__()
        self.language_model = language_model
        self._step = one_token_step
        self._cache = cache

    def forward(self, token: torch.Tensor, position: torch.Tensor, seen: torch.Tensor, *tensors: torch.Tensor):
        layers = self._cache.layers
        for layer, keys, values, count in zip(layers, tensors[0::3], tensors[1::3], tensors[2::3], strict=True):
            layer.keys, layer.values, layer.cumulative_length = keys, values, count
        return self._step(token, position, self._cache, seen)


def export_step(language_model, one_token_step, cache: StaticCache, example: tuple) -> torch.export.ExportedProgram:
    """Export `one_token_step` over `cache` (placed: a prompt was prefilled into it) with `example`
    = (token, position, seen) as the example inputs."""
    token, position, seen = example
    # Export records the writes to the cache; tensors made under inference mode cannot be written
    # to outside it, so the example cache is a copy.
    tensors = tuple(tensor.clone() for tensor in cache_tensors(cache))
    held = [(layer.keys, layer.values, layer.cumulative_length) for layer in cache.layers]
    # One length of cache a package (transformers sizes the mask from the cache's length, a number
    # export fixes); any count of filled positions in it.
    filled = torch.export.Dim("filled", min=2, max=cache.layers[0].max_cache_len - 1)
    try:
        return torch.export.export(
            _StepWithCacheInputs(language_model, one_token_step, cache).eval(),
            (token, position, seen, *tensors),
            dynamic_shapes=(None, None, {0: filled}, (None,) * len(tensors)),
            strict=False,
        )
    finally:
        for layer, (keys, values, count) in zip(cache.layers, held, strict=True):
            layer.keys, layer.values, layer.cumulative_length = keys, values, count


def build_package(program: torch.export.ExportedProgram, path: Path, inductor_settings: dict) -> Path:
    """Compile `program` into the package `path` (written whole or not at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial.pt2")
    torch._inductor.aoti_compile_and_package(program, package_path=str(partial), inductor_configs=inductor_settings)
    partial.replace(path)
    return path


class PackagedStep:
    """A package's step, called as FastDecoder's: (token, position, cache, seen) -> logits."""

    def __init__(self, runner):
        self._runner = runner

    @classmethod
    def load(cls, path: Path) -> PackagedStep:
        return cls(torch._inductor.aoti_load_package(str(path)))

    def __call__(self, token: torch.Tensor, position: torch.Tensor, cache: StaticCache, seen: torch.Tensor):
        return self._runner(token, position, seen, *cache_tensors(cache))
