"""The processor's work on a photo, done once per conversation rather than at every turn.

Every turn renders the whole conversation again, so its photos go through the image processor again
(resized, cut into views, normalised): a tenth of a second for one view of a phone photo, more at `high`
detail, which a follow-up question would otherwise pay for a photo it has already seen. The processor's
own image processor is wrapped: same inputs (the photos' pixels and the keyword arguments), same output,
remembered for the few photo sets seen last.

    processor.image_processor = RememberingImageProcessor(processor.image_processor)
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict

import PIL.Image
import torch

# What is kept at most: the processed pixels of a few conversations' photos (a 13-view photo at `high`
# detail is 41 MB in float32). Outputs over the bound are not kept.
KEPT_BYTES = 96 * 2**20


class RememberingImageProcessor:
    """`image_processor` with its output for the photo sets it processed lately kept, by a digest of
    their pixels and the call's other arguments; anything else of it reads through."""

    def __init__(self, image_processor, kept_bytes: int = KEPT_BYTES):
        self.image_processor = image_processor
        self.kept_bytes = kept_bytes
        self._kept: OrderedDict[bytes, tuple[object, int]] = OrderedDict()  # least recently used first
        self.hits = 0  # calls answered from what was kept

    def __call__(self, images=None, *args, **kwargs):
        key = _key(images, args, kwargs)
        if key is None:
            return self.image_processor(images, *args, **kwargs)
        if key in self._kept:
            self._kept.move_to_end(key)
            self.hits += 1
            output = self._kept[key][0]
        else:
            output = self.image_processor(images, *args, **kwargs)
            self._keep(key, output, _tensor_bytes(output))
        # A copy of the mapping (the tensors are shared): a processor may take keys out of what it gets.
        return copy.copy(output)

    def _keep(self, key: bytes, output, size: int) -> None:
        if size > self.kept_bytes:
            return
        self._kept[key] = (output, size)
        while sum(size for _, size in self._kept.values()) > self.kept_bytes:
            self._kept.popitem(last=False)

    def __deepcopy__(self, memo):
        # A copy is the image processor alone, what the processor serializes (its repr and
        # save_pretrained deep-copy their parts); what was kept stays with this one.
        return copy.deepcopy(self.image_processor, memo)

    def __getattr__(self, name: str):
        # Called only for what this wrapper lacks: the processor's settings, its other methods (and,
        # while a copy is being made, before __init__ has run: then there is nothing to read through to).
        image_processor = self.__dict__.get("image_processor")
        if image_processor is None:
            raise AttributeError(name)
        return getattr(image_processor, name)


def _key(images, args: tuple, kwargs: dict) -> bytes | None:
    """A digest of the photos' pixels and the call's arguments; None when the photos are not all PIL
    images (a tensor or a path: not worth a digest, processed every time)."""
    photos = list(_flat(images))
    if not photos or not all(isinstance(photo, PIL.Image.Image) for photo in photos):
        return None
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((args, sorted(kwargs.items()), [(p.mode, p.size) for p in photos])).encode())
    for photo in photos:
        digest.update(photo.tobytes())
    return digest.digest()


def _flat(images):
    if isinstance(images, (list, tuple)):
        for item in images:
            yield from _flat(item)
    elif images is not None:
        yield images


def _tensor_bytes(output) -> int:
    values = output.values() if hasattr(output, "values") else []
    return sum(value.numel() * value.element_size() for value in values if isinstance(value, torch.Tensor))
