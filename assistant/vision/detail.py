"""How much of a photo a hub VLM sees: a detail level (conversation.DETAILS) becomes how its processor
cuts the prompt's photos into views, per model family.

    low   one view of the whole photo: the fewest image tokens, the soonest first token
    high  the model's own tiling (its processor's settings)
    auto  the model's own tiling cut down to the views that `image_budget_s` pays for at this
          machine's measured seconds per view; one view at least

SmolVLM and Idefics3 resize a photo to fit their processor's longest edge and cut it into views of
the vision tower's size, plus the whole photo as one more view: a lower level is a shorter longest
edge (down to one view, no splitting). LLaVA-OneVision's tiling is part of the model's config, which
its processor and model must agree on, so there the level resizes the photo: `low` to one tile's size
(the whole photo and that one tile), `auto` and `high` as it is. Families with one view a photo
(LLaVA-1.5) or their own pixel budget (Qwen2-VL) see every level alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from ..conversation import Detail


@dataclass(frozen=True)
class Tiling:
    processor_kwargs: dict = field(default_factory=dict)  # for this call of the processor
    longest_edge: int | None = None  # photos are resized to fit this many pixels first; None: as they are

    def prepared(self, photos: list[Image.Image]) -> list[Image.Image]:
        """The photos as the processor is to get them."""
        if self.longest_edge is None:
            return photos
        return [_fit(photo, self.longest_edge) for photo in photos]


def tiling_for(
    image_processor, detail: Detail, photos: list[Image.Image], views_affordable: Callable[[], int]
) -> Tiling:
    """How `image_processor`'s family cuts `photos` at `detail`; `views_affordable()` bounds a photo's
    views for `auto` (one view at least), asked only where views are counted."""
    if not photos:
        return Tiling()
    if hasattr(image_processor, "do_image_splitting") and hasattr(image_processor, "max_image_size"):
        return _split_views(image_processor, detail, photos, views_affordable)
    if hasattr(image_processor, "image_grid_pinpoints") and detail == "low":
        return Tiling(longest_edge=image_processor.size["height"])  # one tile (and the whole photo)
    return Tiling()


def views(width: int, height: int, longest_edge: int, view: int) -> int:
    """SmolVLM's and Idefics3's views of a `width` x `height` photo resized to fit `longest_edge`
    pixels and cut into `view`-pixel squares, plus the whole photo; a photo that fits one view is one."""
    if longest_edge <= view:
        return 1
    scale = longest_edge / max(width, height)
    columns, rows = math.ceil(width * scale / view), math.ceil(height * scale / view)
    return columns * rows + 1


def _split_views(
    image_processor, detail: Detail, photos: list[Image.Image], views_affordable: Callable[[], int]
) -> Tiling:
    """The longest edge, a whole number of views, whose views fit: the processor's own for `high`,
    one view for `low`. Photos are shrunk to it first (a 12-megapixel photo costs no more)."""
    view = image_processor.max_image_size["longest_edge"]
    edge = own = image_processor.size["longest_edge"]
    if detail == "low":
        edge = view
    elif detail == "auto":
        affordable = views_affordable()
        edges = range(view, own + 1, view)
        edge = max((edge for edge in edges if _most_views(photos, edge, view) <= affordable), default=view)
    if edge == view:
        return Tiling({"do_image_splitting": False}, longest_edge=view)
    return Tiling({"do_image_splitting": True, "size": {"longest_edge": edge}}, longest_edge=edge)


def _most_views(photos: list[Image.Image], longest_edge: int, view: int) -> int:
    return max(views(*photo.size, longest_edge, view) for photo in photos)


def _fit(photo: Image.Image, longest_edge: int) -> Image.Image:
    scale = longest_edge / max(photo.size)
    if scale >= 1:
        return photo
    size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
    return photo.resize(size, Image.Resampling.BICUBIC)
