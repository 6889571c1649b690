"""Each patch's colours, given to the projector next to the vision encoder's features.

ImageNet CNN features pooled this coarsely keep shape better than hue (a first starter trained on
them alone answered colour questions at chance), so the projector also sees each patch's colours
directly, in one of two layouts (`ComposedSpec.colour_features`):

    histogram  (the default) the share of the patch's pixels near each of 64 colours: 4 levels per
               RGB channel, each pixel shared between its nearest levels. Averaging histograms, as
               the mlp projector pools its grid, keeps every colour's share: a small red object on
               a grey background is still red in the pooled token.
    mean       the mean colours of the patch's 2x2 sub-cells (12 numbers), the first starter's
               layout. Averaging mixes an object with its background: red on light grey pools to pink.

`python -m bench.colour_probe` measures it: a small probe reads the colour of single synthetic objects
from the grid pooled as the projectors see it, and reads it far better from histograms than from means,
on a 4x4 grid and on 2x2 (its table is in docs/starter.md).
"""

from __future__ import annotations

import torch
from torch import nn

COLOUR_LAYOUTS = ("histogram", "mean", "none")
HISTOGRAM_LEVELS = 4  # per RGB channel: 0, 1/3, 2/3, 1
HISTOGRAM_SIZE = 56  # pixels per side the histograms are counted at (224 / 4: a patch is 8 x 8 of them)
MEAN_SUBCELLS = 2  # the mean layout: each patch's colour as a 2x2 grid of mean colours
# What the colour features are multiplied by, so the few colour inputs are not drowned by the ~1280
# CNN ones (a pooled Lite0 token has a norm of ~16; a histogram sums to 1). A projector's spec saves
# its gain; projectors saved before it did used LEGACY_GAIN. `python -m bench.colour_probe`: with the
# CNN features beside them, histograms at gain 40 (a norm like the CNN's) read colour better held out
# than at gain 4, and shape no worse (its gain table is in docs/starter.md).
RECOMMENDED_GAIN = {"histogram": 40.0, "mean": 4.0, "none": 1.0}
LEGACY_GAIN = 4.0


def colour_channels(layout: str) -> int:
    """Numbers per patch that `layout` appends."""
    return {"histogram": HISTOGRAM_LEVELS**3, "mean": 3 * MEAN_SUBCELLS**2, "none": 0}[check_layout(layout)]


def check_layout(layout: str) -> str:
    if layout not in COLOUR_LAYOUTS:
        raise ValueError(f"Unknown colour features {layout!r}; the layouts are: {', '.join(COLOUR_LAYOUTS)}")
    return layout


def patch_colours(layout: str, pixel_values: torch.Tensor, encoder, grid: int, gain: float) -> torch.Tensor | None:
    """The colour features `layout` appends to each patch of `pixel_values` (as `encoder`'s
    preprocess made them), times `gain`; None for "none"."""
    if check_layout(layout) == "histogram":
        return colour_histograms(encoder.rgb(pixel_values), grid) * gain
    if layout == "mean":
        return mean_colours(pixel_values, grid) * gain
    return None


def colour_histograms(rgb: torch.Tensor, grid: int) -> torch.Tensor:
    """rgb [N, 3, H, W] in [0, 1] -> each patch's colour histogram [N, grid*grid, 64], each summing to 1.

    Soft binning (each channel's value split between its two nearest levels) keeps a colour near a
    bin edge from flipping between bins with a little noise or jitter."""
    pixels = nn.functional.adaptive_avg_pool2d(rgb.float(), HISTOGRAM_SIZE).clamp(0, 1)
    levels = torch.arange(HISTOGRAM_LEVELS, dtype=pixels.dtype, device=pixels.device).view(1, 1, -1, 1, 1)
    weights = (1 - (pixels.unsqueeze(2) * (HISTOGRAM_LEVELS - 1) - levels).abs()).clamp(min=0)  # [N, 3, L, H, W]
    red, green, blue = weights[:, 0, :, None, None], weights[:, 1, None, :, None], weights[:, 2, None, None, :]
    shares = (red * green * blue).flatten(1, 3)  # [N, L*L*L, H, W], summing to 1 at each pixel
    histograms = nn.functional.adaptive_avg_pool2d(shares, grid)
    return histograms.flatten(2).transpose(1, 2)


def mean_colours(pixel_values: torch.Tensor, grid: int) -> torch.Tensor:
    """The mean (encoder-normalised) colours of each patch's 2x2 sub-cells: [N, 3, H, W] -> [N, grid*grid, 12]."""
    cells = grid * MEAN_SUBCELLS
    pooled = nn.functional.adaptive_avg_pool2d(pixel_values.float(), cells)  # [N, 3, cells, cells]
    batch = pooled.shape[0]
    per_patch = pooled.reshape(batch, 3, grid, MEAN_SUBCELLS, grid, MEAN_SUBCELLS)
    per_patch = per_patch.permute(0, 2, 4, 1, 3, 5).reshape(batch, grid * grid, 3 * MEAN_SUBCELLS**2)
    return per_patch
