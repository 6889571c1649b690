"""A built-in synthetic scene generator: pictures with known answers, for training and checking the
projector without downloading a data set.

Each scene is one of four kinds: a single shape ("single"), 1-4 shapes of one kind with up to two
distractors of another ("count"), a large digit ("digit") or a short printed word ("word"). Each comes
with its ground truth, a caption and one question/answer pair per question type that applies.

Everything is deterministic: scene `index` of `seed` is drawn from its own random stream, seeded by
(seed, index), so the same pair always gives the same pixels and questions, on any machine with the
same NumPy and Pillow, and scenes can be made one at a time (`generate_scene`) or in bulk.

Splits (`make_split`) use seeds derived by hashing (seed, split name): train, val and test are
sequences of different seeds and never share a scene.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import PIL.Image
from PIL import ImageDraw, ImageFont

RGB = tuple[int, int, int]
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

# Named colours as people say them; every pair is at least 85 apart in RGB, so a colour stays nearest
# to its own name after the jitter below.
COLOURS: dict[str, RGB] = {
    "red": (215, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (250, 220, 35),
    "green": (35, 160, 60),
    "blue": (35, 80, 215),
    "purple": (130, 50, 175),
    "pink": (245, 125, 185),
    "brown": (125, 75, 35),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
}
COLOUR_JITTER = 8  # each channel of a drawn colour is its named value +- this, so shades vary
SHAPES = ("circle", "square", "triangle", "star", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses"}
SIZES = ("small", "large")
# Radius (half the side of the bounding square) as a fraction of the image side; the two classes are
# more than 1.7x apart so "small or large?" has a clear answer.
RADIUS_RANGES = {"small": (0.06, 0.10), "large": (0.17, 0.22)}
# Where a single shape is put on purpose, as fractions of (width, height); the corners are left out
# because "top left" would be neither answer.
REGIONS: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
REGION_JITTER = 0.05  # +- fraction of the side around the region's anchor
MARGIN = 0.02  # fraction of the side kept clear at the image border
GAP = 0.03  # fraction of the side kept clear between shapes, so they never touch
MAX_TARGETS = 4  # a count scene has 1..MAX_TARGETS shapes of the asked-about kind
MAX_DISTRACTORS = 2  # ... and 0..MAX_DISTRACTORS of another shape in another colour
WORDS = (
    "CAT",
    "DOG",
    "STOP",
    "OPEN",
    "SALE",
    "EXIT",
    "PUSH",
    "PULL",
    "BUS",
    "TAXI",
    "MILK",
    "BOOK",
    "SUN",
    "FISH",
    "HOTEL",
    "FOOD",
    "PARK",
    "HELLO",
)
DIGIT_HEIGHT = (0.30, 0.60)  # ink height of a digit, fraction of the side
WORD_WIDTH = (0.45, 0.85)  # ink width of a word, fraction of the side
WORD_MAX_HEIGHT = 0.40  # fraction of the side, for short words that would otherwise grow tall
FONT_PROBE = 100  # font size (pixels) at which text is measured before scaling to the wanted size
SUPERSAMPLE = 2  # shapes are drawn at this multiple of the size and reduced: anti-aliased edges

SCENE_KINDS = ("single", "count", "digit", "word")
SCENE_KIND_WEIGHTS = (0.35, 0.30, 0.175, 0.175)
BACKGROUND_KINDS = ("plain", "gradient", "noise")
BACKGROUND_WORDS = {"plain": "plain {tone}", "gradient": "{tone} gradient", "noise": "{tone} textured"}
TONE_LEVELS = {"light": (195, 245), "dark": (10, 55)}  # grey level of a background, before its tint
TONE_TINT = 12  # +- per channel around the grey level: backgrounds are greyish, never saturated
NOISE_AMPLITUDE = 8  # +- grey levels of grain on "noise" backgrounds
# Smallest RGB distance between a background (any point of a gradient) and a colour drawn on it; with
# the jitter and the grain the drawn pixels stay over 80 apart, so a shape never melts into the ground.
MIN_CONTRAST = 110.0
MIN_IMAGE_SIZE = 32  # pixels; below this digits and small shapes are no longer legible

QUESTION_TYPES = ("colour", "shape", "count", "position", "size", "digit", "word", "caption")
CAPTION_PHRASINGS = (
    "Describe the image.",
    "What is in this picture?",
    "Write a short caption for this image.",
    "Describe this picture in one sentence.",
)
# Question templates by scene kind and question type; fields: shape, shapes (plural), colour, size,
# noun (shape, plural when several), be (is/are), object(s). Each asks about something that has one
# answer in that kind of scene: colour and shape questions name the other attribute or the scene has
# only one kind of object.
PHRASINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "single": {
        "colour": (
            "What colour is the shape?",
            "What color is the {shape}?",
            "Which colour is the object in this picture?",
            "What is the colour of the {shape}?",
            "What color is the {size} {shape}?",
        ),
        "shape": (
            "What shape is this?",
            "What shape is the {colour} object?",
            "Which shape is shown in the picture?",
            "What kind of shape is in the image?",
            "Name the shape in the image.",
        ),
        "size": (
            "Is the {shape} small or large?",
            "Is the {colour} shape small or large?",
            "What size is the {shape}: small or large?",
            "How big is the object, small or large?",
        ),
        "position": (
            "Where is the {shape}?",
            "Where in the image is the {colour} shape?",
            "Is the {shape} on the left, right, top, bottom or in the center?",
            "In which part of the picture is the object?",
        ),
        "caption": CAPTION_PHRASINGS,
    },
    "count": {
        "count": (
            "How many {shapes} are there?",
            "How many {colour} objects are in the picture?",
            "How many {colour} {shapes} can you see?",
            "Count the {shapes} in the image.",
            "What is the number of {shapes} in this picture?",
        ),
        "colour": (
            "What colour {be} the {noun}?",
            "What color {be} the {noun} in the picture?",
            "Which colour {be} the {noun}?",
        ),
        "shape": (
            "What shape {be} the {colour} {object}?",
            "Which shape is drawn in {colour}?",
            "What kind of shape {be} the {colour} {object}?",
        ),
        "caption": CAPTION_PHRASINGS,
    },
    "digit": {
        "digit": (
            "What digit is shown?",
            "Which number is written in the image?",
            "What number do you see?",
            "Read the digit in the picture.",
            "What is the number in this image?",
        ),
        "colour": ("What colour is the number?", "What color is the digit?", "Which colour is the digit written in?"),
        "caption": CAPTION_PHRASINGS,
    },
    "word": {
        "word": (
            "What word is written in the image?",
            "What does the text say?",
            "Read the word in the picture.",
            "What is written here?",
            "Which word can you see?",
        ),
        "colour": ("What colour is the text?", "What color is the word?", "What colour are the letters?"),
        "caption": CAPTION_PHRASINGS,
    },
}
# Extra count phrasings for scenes with no distractors, where "the shapes" can only mean the targets.
COUNT_ALONE_PHRASINGS = ("How many shapes are there?", "How many objects are in the image?")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
POSITION_WORDS = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}


@dataclass(frozen=True)
class SceneObject:
    shape: str  # one of SHAPES
    colour: str  # a name in COLOURS
    rgb: RGB  # the exact colour drawn: the named colour, jittered by up to COLOUR_JITTER per channel
    size: str  # "small" or "large" (see RADIUS_RANGES)
    centre: tuple[int, int]  # (x, y) in pixels of the final image
    radius: int  # half the side of the shape's bounding square, pixels
    region: str | None  # the REGIONS entry it was placed in, or None when placed freely (count scenes)


@dataclass(frozen=True)
class PrintedText:
    text: str  # as drawn: "7" or "STOP"
    kind: str  # "digit" or "word"
    colour: str  # a name in COLOURS
    rgb: RGB  # the exact colour drawn
    box: tuple[int, int, int, int]  # the ink's (left, top, right, bottom), pixels
    font_size: int  # pixels, of Pillow's bundled font (drawn with a stroke of _stroke(font_size))


@dataclass(frozen=True)
class Background:
    kind: str  # one of BACKGROUND_KINDS
    tone: str  # "light" or "dark"
    colours: tuple[RGB, ...]  # one colour, or a gradient's two ends
    direction: float  # a gradient's direction in degrees (0: left to right, 90: top to bottom); else 0

    @property
    def description(self) -> str:
        return BACKGROUND_WORDS[self.kind].format(tone=self.tone) + " background"


@dataclass(frozen=True)
class QA:
    question: str
    answer: str  # short and normalised: lower case, no full stop ("red", "3", "stop"); captions are sentences
    question_type: str  # one of QUESTION_TYPES


@dataclass(frozen=True, eq=False)
class Scene:
    image: PIL.Image.Image  # 8-bit RGB, image_size x image_size
    kind: str  # one of SCENE_KINDS
    objects: tuple[SceneObject, ...]  # the shapes drawn: the asked-about kind first, then distractors
    count: int  # how many objects of the asked-about kind; 0 in digit and word scenes
    text: PrintedText | None  # the digit or word, in digit and word scenes
    background: Background
    caption: str
    qas: tuple[QA, ...]  # one per question type that applies to this kind of scene
    seed: int  # the sequence's seed (a split's derived seed for make_split)
    index: int  # the position in that sequence: (seed, index) identifies the scene


def generate_scenes(count: int, seed: int, image_size: int = 224) -> list[Scene]:
    """Scenes 0..count-1 of `seed`, each `image_size` pixels square."""
    if count < 0:
        raise ValueError(f"count must be 0 or more, not {count}")
    return [generate_scene(seed, index, image_size) for index in range(count)]


def make_split(name: Split, count: int, seed: int = 0, image_size: int = 224) -> list[Scene]:
    """`count` scenes of split `name` ("train", "val" or "test"). Each split draws from its own seed,
    `split_seed(name, seed)`, so for one `seed` the three splits never share a scene; a longer split
    starts with the scenes of a shorter one (scene i does not depend on `count`)."""
    return generate_scenes(count, split_seed(name, seed), image_size)


def split_seed(name: Split, seed: int) -> int:
    """The seed a split draws from: 64 bits of SHA-256 over (seed, name), so the splits' sequences are
    unrelated and none of them is the plain `seed` sequence of `generate_scenes`."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; the splits are: {', '.join(SPLITS)}")
    digest = hashlib.sha256(f"assistant.training.scenes/{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def generate_scene(seed: int, index: int, image_size: int = 224) -> Scene:
    """Scene `index` of `seed`: the same pair always gives the same scene."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be 0 or more, not {seed} and {index}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels, not {image_size}")
    rng = np.random.default_rng([seed, index])
    kind = SCENE_KINDS[rng.choice(len(SCENE_KINDS), p=SCENE_KIND_WEIGHTS)]
    background = _background(rng)
    palette = [name for name, rgb in COLOURS.items() if _contrast(rgb, background) >= MIN_CONTRAST]
    objects: tuple[SceneObject, ...] = ()
    text = None
    count = 0
    if kind == "single":
        objects = (_single_object(rng, image_size, palette),)
        count = 1
    elif kind == "count":
        objects, count = _count_objects(rng, image_size, palette)
    else:
        text = _printed_text(rng, image_size, palette, kind)
    image = _render(rng, image_size, background, objects, text)
    caption = _caption(kind, objects, count, text, background)
    qas = _questions(rng, kind, objects, count, text, caption)
    return Scene(image, kind, objects, count, text, background, caption, qas, seed, index)


# --- layout -----------------------------------------------------------------------------------------


def _background(rng: np.random.Generator) -> Background:
    tone = ("light", "dark")[rng.integers(2)]
    kind = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]
    ends = 2 if kind == "gradient" else 1
    colours = tuple(_tone_colour(rng, tone) for _ in range(ends))
    direction = float(rng.integers(0, 360)) if kind == "gradient" else 0.0
    return Background(kind, tone, colours, direction)


def _tone_colour(rng: np.random.Generator, tone: str) -> RGB:
    low, high = TONE_LEVELS[tone]
    grey = int(rng.integers(low, high + 1))
    tint = rng.integers(-TONE_TINT, TONE_TINT + 1, size=3)
    return tuple(int(c) for c in np.clip(grey + tint, 0, 255))


def _contrast(rgb: RGB, background: Background) -> float:
    """The smallest RGB distance from `rgb` to any colour of the background (a gradient is the segment
    between its ends)."""
    point = np.asarray(rgb, dtype=np.float64)
    start = np.asarray(background.colours[0], dtype=np.float64)
    end = np.asarray(background.colours[-1], dtype=np.float64)
    span = end - start
    along = 0.0 if not span.any() else float(np.clip((point - start) @ span / (span @ span), 0.0, 1.0))
    return float(np.linalg.norm(point - (start + along * span)))


def _pick_colour(rng: np.random.Generator, palette: list[str], exclude: str = "") -> tuple[str, RGB]:
    choices = [name for name in palette if name != exclude]
    name = choices[rng.integers(len(choices))]
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
    return name, tuple(int(c) for c in np.clip(np.add(COLOURS[name], jitter), 0, 255))


def _radius(rng: np.random.Generator, size_class: str, image_size: int) -> int:
    low, high = RADIUS_RANGES[size_class]
    return max(2, round(rng.uniform(low, high) * image_size))


def _single_object(rng: np.random.Generator, image_size: int, palette: list[str]) -> SceneObject:
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour, rgb = _pick_colour(rng, palette)
    size_class = SIZES[rng.integers(len(SIZES))]
    radius = _radius(rng, size_class, image_size)
    region = tuple(REGIONS)[rng.integers(len(REGIONS))]
    anchor = REGIONS[region]
    # A large shape near the border is pulled inwards; the region anchors are far enough apart that
    # it still lies on its side of the image.
    low, high = radius + MARGIN * image_size, image_size - radius - MARGIN * image_size
    centre = tuple(
        round(float(np.clip((a + rng.uniform(-REGION_JITTER, REGION_JITTER)) * image_size, low, high))) for a in anchor
    )
    return SceneObject(shape, colour, rgb, size_class, centre, radius, region)


def _count_objects(
    rng: np.random.Generator, image_size: int, palette: list[str]
) -> tuple[tuple[SceneObject, ...], int]:
    """1..MAX_TARGETS small shapes of one shape and colour, and 0..MAX_DISTRACTORS of another shape in
    another colour, none touching."""
    targets = int(rng.integers(1, MAX_TARGETS + 1))
    distractors = int(rng.integers(0, MAX_DISTRACTORS + 1))
    shape = SHAPES[rng.integers(len(SHAPES))]
    other_shape = SHAPES[(SHAPES.index(shape) + rng.integers(1, len(SHAPES))) % len(SHAPES)]
    colour, rgb = _pick_colour(rng, palette)
    other_colour, other_rgb = _pick_colour(rng, palette, exclude=colour)
    kinds = [(shape, colour, rgb)] * targets + [(other_shape, other_colour, other_rgb)] * distractors
    radii = [_radius(rng, "small", image_size) for _ in kinds]
    centres = _scatter(rng, radii, image_size)
    objects = tuple(
        SceneObject(s, c, v, "small", centre, radius, None) for (s, c, v), radius, centre in zip(kinds, radii, centres)
    )
    return objects, targets


def _scatter(rng: np.random.Generator, radii: list[int], image_size: int) -> list[tuple[int, int]]:
    """Centres for discs of `radii` that keep GAP between them and MARGIN from the border, by rejection:
    at most 6 small discs cover under a third of the image, so a free place is always found quickly."""
    gap, margin = GAP * image_size, MARGIN * image_size
    centres: list[tuple[int, int]] = []
    for radius in radii:
        for _ in range(1000):
            x, y = (round(rng.uniform(radius + margin, image_size - radius - margin)) for _ in range(2))
            if all(math.dist((x, y), c) >= radius + r + gap for c, r in zip(centres, radii)):
                centres.append((x, y))
                break
        else:  # cannot happen with the ranges above; fail loudly rather than overlap shapes
            raise RuntimeError(f"no room for {len(radii)} shapes in a {image_size}-pixel image")
    return centres


def _printed_text(rng: np.random.Generator, image_size: int, palette: list[str], kind: str) -> PrintedText:
    text = str(rng.integers(10)) if kind == "digit" else WORDS[rng.integers(len(WORDS))]
    colour, rgb = _pick_colour(rng, palette)
    probe = _text_box(text, FONT_PROBE)
    if kind == "digit":
        wanted = rng.uniform(*DIGIT_HEIGHT) * image_size / (probe[3] - probe[1])
    else:
        wanted = rng.uniform(*WORD_WIDTH) * image_size / (probe[2] - probe[0])
        wanted = min(wanted, WORD_MAX_HEIGHT * image_size / (probe[3] - probe[1]))
    font_size = max(8, round(wanted * FONT_PROBE))
    left, top, right, bottom = _text_box(text, font_size)
    width, height = right - left, bottom - top
    margin = round(MARGIN * image_size)
    x = int(rng.integers(margin, max(margin, image_size - margin - width) + 1))
    y = int(rng.integers(margin, max(margin, image_size - margin - height) + 1))
    return PrintedText(text, kind, colour, rgb, (x, y, x + width, y + height), font_size)


@functools.lru_cache(maxsize=512)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font (Aileron), so no system fonts needed


def _stroke(font_size: int) -> int:
    return max(1, font_size // 25)  # the bundled font is thin; a stroke makes it bold enough to read


@functools.lru_cache(maxsize=4096)
def _text_box(text: str, font_size: int) -> tuple[int, int, int, int]:
    """The ink box of `text` drawn at the origin: (left, top, right, bottom)."""
    return _font(font_size).getbbox(text, stroke_width=_stroke(font_size))


# --- drawing ----------------------------------------------------------------------------------------


def _render(
    rng: np.random.Generator,
    image_size: int,
    background: Background,
    objects: tuple[SceneObject, ...],
    text: PrintedText | None,
) -> PIL.Image.Image:
    image = PIL.Image.fromarray(_background_pixels(rng, image_size, background))
    for rgb in dict.fromkeys(obj.rgb for obj in objects):  # one mask per colour, in drawing order
        mask = PIL.Image.new("L", (image_size * SUPERSAMPLE,) * 2, 0)
        draw = ImageDraw.Draw(mask)
        for obj in objects:
            if obj.rgb == rgb:
                x, y = (c * SUPERSAMPLE for c in obj.centre)
                _draw_shape(draw, obj.shape, x, y, obj.radius * SUPERSAMPLE)
        image.paste(rgb, mask=mask.reduce(SUPERSAMPLE))
    if text is not None:
        image.paste(text.rgb, mask=_text_mask(text, image_size))
    return image


def _background_pixels(rng: np.random.Generator, image_size: int, background: Background) -> np.ndarray:
    start = np.asarray(background.colours[0], dtype=np.float32)
    if background.kind == "gradient":
        angle = math.radians(background.direction)
        axis = np.arange(image_size, dtype=np.float32)
        along = axis[None, :] * math.cos(angle) + axis[:, None] * math.sin(angle)  # (y, x)
        along = (along - along.min()) / max(float(np.ptp(along)), 1.0)
        end = np.asarray(background.colours[1], dtype=np.float32)
        return (start + along[..., None] * (end - start) + 0.5).astype(np.uint8)
    pixels = np.broadcast_to(start, (image_size, image_size, 3))
    if background.kind == "noise":
        grain = rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, size=(image_size, image_size, 1))
        pixels = np.clip(pixels + grain, 0, 255)
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: float) -> None:
    """Fill `shape` (255) centred at (x, y) inside a square of half-side r; every shape covers its
    centre, so the centre pixel shows its colour."""
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    elif shape == "square":
        side = 0.9 * r  # a little smaller than the circle, so both look about as big
        draw.rectangle((x - side, y - side, x + side, y + side), fill=255)
    elif shape == "triangle":
        draw.polygon(_ring(x, y, [r] * 3, start=-90), fill=255)  # pointing up, centroid at the centre
    elif shape == "star":
        draw.polygon(_ring(x, y, [r, 0.45 * r] * 5, start=-90), fill=255)
    elif shape == "cross":
        arm = 0.32 * r  # half the width of each bar
        draw.rectangle((x - r, y - arm, x + r, y + arm), fill=255)
        draw.rectangle((x - arm, y - r, x + arm, y + r), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _ring(x: float, y: float, radii: list[float], start: float) -> list[tuple[float, float]]:
    """Points at `radii` from (x, y), evenly spaced in angle from `start` degrees."""
    step = 2 * math.pi / len(radii)
    first = math.radians(start)
    return [(x + r * math.cos(first + i * step), y + r * math.sin(first + i * step)) for i, r in enumerate(radii)]


def _text_mask(text: PrintedText, image_size: int) -> PIL.Image.Image:
    font_size = text.font_size
    left, top, _, _ = _text_box(text.text, font_size)
    mask = PIL.Image.new("L", (image_size, image_size), 0)
    stroke = _stroke(font_size)
    # FreeType anti-aliases on its own, so text is drawn at the final size.
    origin = (text.box[0] - left, text.box[1] - top)
    ImageDraw.Draw(mask).text(origin, text.text, fill=255, font=_font(font_size), stroke_width=stroke, stroke_fill=255)
    return mask


# --- words ------------------------------------------------------------------------------------------


def _caption(
    kind: str, objects: tuple[SceneObject, ...], count: int, text: PrintedText | None, background: Background
) -> str:
    ground = f"against a {background.description}"
    if kind == "single":
        obj = objects[0]
        return f"A {obj.size} {obj.colour} {obj.shape} {POSITION_WORDS[obj.region]}, {ground}."
    if kind == "count":
        groups = [_counted(count, objects[0])]
        if len(objects) > count:
            groups.append(_counted(len(objects) - count, objects[count]))
        return f"{' and '.join(groups).capitalize()}, {ground}."
    assert text is not None
    what = f"The digit {text.text}" if kind == "digit" else f'The word "{text.text}"'
    return f"{what} written in {text.colour}, {ground}."


def _counted(number: int, obj: SceneObject) -> str:
    return f"{NUMBER_WORDS[number]} {obj.colour} {obj.shape if number == 1 else PLURALS[obj.shape]}"


def _questions(
    rng: np.random.Generator,
    kind: str,
    objects: tuple[SceneObject, ...],
    count: int,
    text: PrintedText | None,
    caption: str,
) -> tuple[QA, ...]:
    """One question per type that applies to this kind of scene, each in a phrasing drawn at random."""
    fields, answers = {}, {"caption": caption}
    if objects:
        obj = objects[0]
        several = count > 1
        fields = {
            "shape": obj.shape,
            "shapes": PLURALS[obj.shape],
            "colour": obj.colour,
            "size": obj.size,
            "noun": PLURALS[obj.shape] if several else obj.shape,
            "be": "are" if several else "is",
            "object": "objects" if several else "object",
        }
        answers |= {"colour": obj.colour, "shape": obj.shape, "size": obj.size, "count": str(count)}
        if obj.region is not None:
            answers["position"] = obj.region
    if text is not None:
        answers |= {"colour": text.colour, text.kind: text.text.lower()}
    qas = []
    for question_type, templates in PHRASINGS[kind].items():
        if question_type == "count" and len(objects) == count:
            templates = templates + COUNT_ALONE_PHRASINGS
        template = templates[rng.integers(len(templates))]
        qas.append(QA(template.format(**fields), answers[question_type], question_type))
    return tuple(qas)
