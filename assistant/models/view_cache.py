"""Photos seen once: the vision tower's output for each view of a photo, kept by the view's content.

Every prompt of a conversation holds all of its photos. The KV cache spares a follow-up when the prompt
only grows (fast_decode.Prompt), but a photo added in a later turn, an edited turn or another
conversation in between makes the VLM's forward run its tower again on every photo. A ViT sees each
view alone (attention stays within an image, and the int8 layers scale each token's row by itself),
so the tower's output for a batch of views is each view's output side by side: here each view's share
is kept, under a digest of its pixels and of whatever else the tower was asked, and a call runs the
tower on the views not kept only. Bounded in bytes, the least recently used going first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

# A view's share of one output field: a tensor [1, ...]; for a tuple field (hidden_states), the kept
# layers' tensors, None for the others.
Field = torch.Tensor | tuple[torch.Tensor | None, ...]


@dataclass(frozen=True)
class _Share:
    """One view's part of the tower's output."""

    output_type: type[ModelOutput]
    fields: dict[str, Field]

    @property
    def bytes(self) -> int:
        values = [v for value in self.fields.values() for v in (value if isinstance(value, tuple) else (value,))]
        return sum(t.numel() * t.element_size() for t in values if t is not None)


class ViewCache:
    """The tower outputs of the views seen last, up to `max_bytes`. `wrap(tower)` puts it in front of
    a tower's forward; of tuple fields (hidden_states) only the layers in `kept_layers` are kept (what
    the VLM reads: its `vision_feature_layer`), the others come back as None."""

    def __init__(self, max_bytes: int, kept_layers: Iterable[int] = ()):
        self.max_bytes = max_bytes
        self.kept_layers = tuple(kept_layers)
        self.hits = 0  # views answered from the cache
        self.misses = 0  # views the tower ran on
        self._views: OrderedDict[bytes, _Share] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def wrap(self, tower: torch.nn.Module) -> None:
        inner = tower.forward

        def forward(*args, **kwargs):
            if "pixel_values" not in kwargs and len(args) == 1:
                kwargs["pixel_values"], args = args[0], ()
            if args or torch.is_grad_enabled():  # a call this does not know, or training: not cached
                return inner(*args, **kwargs)
            return self.run(inner, **kwargs)

        tower.forward = forward

    def run(self, tower_forward, pixel_values: torch.Tensor, **kwargs):
        """`tower_forward(pixel_values, **kwargs)`, run on the views not kept only."""
        views = pixel_values.shape[0]
        keys = [_view_key(i, pixel_values, kwargs) for i in range(views)]
        with self._lock:
            shares = [self._take(key) for key in keys]
            missing = [i for i, share in enumerate(shares) if share is None]
            self.hits += views - len(missing)
            self.misses += len(missing)
        if not missing:
            return _assembled(shares)
        subset = torch.tensor(missing, device=pixel_values.device)
        output = tower_forward(pixel_values=pixel_values[subset], **_rows(kwargs, views, subset))
        if not isinstance(output, ModelOutput):  # a plain tuple, no field names to put back together by
            return output if len(missing) == views else tower_forward(pixel_values=pixel_values, **kwargs)
        fresh = [self._share_of(output, row) for row in range(len(missing))]
        with self._lock:
            for i, share in zip(missing, fresh):
                shares[i] = share
                self._keep(keys[i], share)
        return _assembled(shares)

    def _share_of(self, output: ModelOutput, row: int) -> _Share:
        fields = {}
        for name, value in output.items():
            if isinstance(value, torch.Tensor):
                fields[name] = value[row : row + 1].clone()  # a copy: the batch's output is not kept alive
            elif isinstance(value, tuple):
                kept = {layer % len(value) for layer in self.kept_layers}
                fields[name] = tuple(v[row : row + 1].clone() if i in kept else None for i, v in enumerate(value))
        return _Share(type(output), fields)

    def _take(self, key: bytes) -> _Share | None:
        share = self._views.get(key)
        if share is not None:
            self._views.move_to_end(key)
        return share

    def _keep(self, key: bytes, share: _Share) -> None:
        if share.bytes > self.max_bytes or key in self._views:
            return
        self._views[key] = share
        self._bytes += share.bytes
        while self._bytes > self.max_bytes:
            _, dropped = self._views.popitem(last=False)
            self._bytes -= dropped.bytes


def _assembled(shares: list[_Share]) -> ModelOutput:
    """The views' shares side by side, as the tower returns them."""
    fields = {}
    for name, first in shares[0].fields.items():
        column = [share.fields[name] for share in shares]
        if isinstance(first, torch.Tensor):
            fields[name] = torch.cat(column)
        else:
            fields[name] = tuple(None if layer[0] is None else torch.cat(layer) for layer in zip(*column, strict=True))
    return shares[0].output_type(**fields)


def remember_views(vlm, tower: torch.nn.Module, max_bytes: int) -> ViewCache | None:
    """Put a ViewCache of `max_bytes` in front of the VLM's vision tower; None when `max_bytes` is 0."""
    if max_bytes <= 0:
        return None
    layers = getattr(vlm.config, "vision_feature_layer", None)
    kept = [] if layers is None else [layers] if isinstance(layers, int) else list(layers)
    cache = ViewCache(max_bytes, kept)
    cache.wrap(tower)
    return cache


def _view_key(view: int, pixel_values: torch.Tensor, kwargs: dict) -> bytes:
    """A digest of view `view`'s pixels and of what the tower was asked: other per-view tensors (e.g.
    a patch mask) by their row, other tensors whole, the rest by value."""
    digest = hashlib.blake2b(digest_size=16)
    for value in (pixel_values, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            part = value[view] if value.dim() and value.shape[0] == pixel_values.shape[0] else value
            add_tensor(digest, part)
    digest.update(repr(sorted((k, v) for k, v in kwargs.items() if not isinstance(v, torch.Tensor))).encode())
    return digest.digest()


def add_tensor(digest, tensor: torch.Tensor) -> None:
    """Feed `tensor` (its type, shape and bytes) to a hashlib digest."""
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.detach().contiguous().cpu().view(torch.uint8).numpy().data)


def _rows(kwargs: dict, views: int, subset: torch.Tensor) -> dict:
    """`kwargs` for the views in `subset`: per-view tensors cut to their rows."""
    return {
        name: value[subset] if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == views else value
        for name, value in kwargs.items()
    }
