"""Each patch's colour features: histograms that keep a small object's colour through pooling, and
composed models saved before histograms existed still loading with their mean colours."""

import json

import PIL.Image
import pytest
import torch

from assistant.models.composed import SPEC_FILE, ComposedSpec
from assistant.vision.colour import LEGACY_GAIN, colour_channels, colour_histograms, mean_colours, patch_colours
from assistant.vision.encoders import load_vision_encoder
from assistant.vision.projectors import ProjectorConfig, pool_patch_grid

LIGHT_GREY, RED = (0.8, 0.8, 0.8), (0.86, 0.12, 0.12)


def scene(object_colour, background=LIGHT_GREY, size=224, corner=(28, 28), side=28) -> torch.Tensor:
    """A 224-px RGB image in [0, 1]: a plain background with one small square object."""
    image = torch.tensor(background).view(1, 3, 1, 1).repeat(1, 1, size, size)
    top, left = corner
    image[:, :, top : top + side, left : left + side] = torch.tensor(object_colour).view(1, 3, 1, 1)
    return image


def bin_of(rgb) -> int:
    """The histogram bin nearest to an RGB colour (4 levels per channel, red slowest)."""
    red, green, blue = (round(value * 3) for value in rgb)
    return red * 16 + green * 4 + blue


def test_each_patch_histogram_shares_its_pixels_among_64_colours():
    histograms = colour_histograms(scene(RED), grid=7)
    assert histograms.shape == (1, 49, 64) == (1, 49, colour_channels("histogram"))
    assert torch.allclose(histograms.sum(-1), torch.ones(1, 49)), "every pixel counts once"
    assert histograms[0, 0].argmax() == bin_of(LIGHT_GREY), "the top-left patch is background"
    assert histograms[0, 8].argmax() == bin_of(RED), "the object fills the second row's second patch"


def test_a_small_red_object_stays_red_when_the_grid_is_pooled():
    """The mlp projector pools 7x7 patches to 4x4 (and a 2x2 view is coarser still): the red share
    survives pooling, where mean colours pool red on light grey into something pink."""
    red_on_grey, pink_on_grey = scene(RED), scene((0.94, 0.62, 0.7))
    for grid in (4, 2):
        red = pool_patch_grid(colour_histograms(red_on_grey, 7), 7, grid)[0, 0]
        pink = pool_patch_grid(colour_histograms(pink_on_grey, 7), 7, grid)[0, 0]
        assert red[bin_of(RED)] > 0.01, f"{grid}x{grid}: the red share survives"
        assert red[bin_of(RED)] > 20 * pink[bin_of(RED)], f"{grid}x{grid}: a pink object is not red"
    means = pool_patch_grid(mean_colours(red_on_grey, 7), 7, 2)[0, 0].view(3, 4).mean(-1)
    assert means[0] > 0.7 and means[1] > 0.6, f"mean colours pool red on grey to a pale pink: {means.tolist()}"


def test_a_spec_saved_before_histograms_loads_with_mean_colours(tmp_path):
    projector = ProjectorConfig("mlp", 1292, 576, 49, 16)
    for saved, layout in ((True, "mean"), (False, "none")):
        data = {
            "encoder": "efficientnet-lite0",
            "language_model": "smollm2-135m",
            "projector": projector.to_dict(),
            "colour_features": saved,
        }
        (tmp_path / SPEC_FILE).write_text(json.dumps(data))
        assert ComposedSpec.load(tmp_path).colour_features == layout
        assert ComposedSpec.load(tmp_path).colour_gain == LEGACY_GAIN, "its colours were multiplied by the old gain"
    assert colour_channels("mean") == 12 and colour_channels("none") == 0


def test_the_colour_gain_is_saved_with_the_spec_and_multiplies_the_colours(tmp_path):
    spec = ComposedSpec(
        "efficientnet-lite0", "smollm2-135m", ProjectorConfig("mlp", 1344, 576, 49, 16), colour_gain=40.0
    )
    spec.save(tmp_path)
    assert ComposedSpec.load(tmp_path).colour_gain == 40.0
    encoder = load_vision_encoder("efficientnet-lite0")
    pixels = encoder.preprocess([PIL.Image.new("RGB", (64, 64), (215, 30, 35))])
    gained, plain = (patch_colours("histogram", pixels, encoder, 7, gain) for gain in (40.0, 1.0))
    assert torch.allclose(gained, plain * 40.0) and torch.allclose(plain.sum(-1), torch.ones(1, 49))


def test_an_unknown_colour_layout_is_named():
    with pytest.raises(ValueError, match="Unknown colour features 'hsv'; the layouts are: histogram, mean, none"):
        ComposedSpec(
            "efficientnet-lite0", "smollm2-135m", ProjectorConfig("mlp", 1344, 576, 49, 16), colour_features="hsv"
        )
