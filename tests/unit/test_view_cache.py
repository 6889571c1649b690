"""Photos seen once (models/view_cache.py): a photo's views go through the vision tower once while the
cache holds them, whatever turn or conversation shows the photo again; what the model is given is the
same as without the cache. Tiny random models of the real families, loaded by the real loader."""

import time

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from assistant.conversation import Conversation, Image, Message
from assistant.engine import Engine
from assistant.models.fast_decode import DecodeSpeed
from assistant.models.loader import ensure_tiny_model, load_pretrained
from assistant.sampling import GenerationOptions

FAMILIES = ("llava", "llava_onevision", "idefics3", "smolvlm")  # a view cache in front of each tower
GREEDY = GenerationOptions(temperature=0.0, max_new_tokens=8)


def load(family: str, cache_dir, cache_bytes: int = 64 << 20, speed: DecodeSpeed | None = None):
    directory = str(ensure_tiny_model(family, cache_dir))
    return load_pretrained(directory, torch.device("cpu"), torch.float32, speed=speed, image_cache_bytes=cache_bytes)


def photo(colour: str, size=(48, 40)) -> PILImage.Image:
    return PILImage.new("RGB", size, colour)


def asked(colour: str, size=(48, 40), detail="low") -> Conversation:
    return Conversation().add(Message.user("What is this?", [Image(photo(colour, size), detail=detail)]))


def red_then_blue() -> tuple[Conversation, Conversation]:
    """A photo question, then the same conversation with a second photo in its next turn (low detail:
    `auto` would first time the tower, with photos of its own)."""
    red, blue = Image(photo("red"), detail="low"), Image(photo("blue", (30, 60)), detail="low")
    first = Conversation("be brief").add(Message.user("What is this?", [red]))
    second = Conversation(first.system_prompt, list(first.messages)).add(Message.assistant("Red."))
    return first, second.add(Message.user("And this one?", [blue]))


def views_encoded(model, conversation: Conversation) -> int:
    """Views the tower ran on to make this conversation's prompt."""
    before = model.views.misses
    model._embeddings(model.encode(conversation))
    return model.views.misses - before


@pytest.mark.parametrize("family", FAMILIES)
def test_a_photo_from_an_earlier_turn_is_not_encoded_again(family, cache_dir):
    model = load(family, cache_dir)
    first, second = red_then_blue()
    red_views = views_encoded(model, first)
    both_views = model.encode(second).inputs["pixel_values"]
    assert red_views >= 1
    assert views_encoded(model, second) >= 1, "the new photo is encoded"
    assert model.views.hits >= red_views, "the red photo's views came from the cache"
    assert views_encoded(model, second) == 0, "the same prompt again needs no tower at all"
    uncached = load(family, cache_dir, cache_bytes=0)
    assert uncached.views is None
    prompt = model.encode(second)
    assert both_views.shape == prompt.inputs["pixel_values"].shape
    torch.testing.assert_close(model._embeddings(prompt), uncached._embeddings(uncached.encode(second)))


def test_photos_prepared_while_the_question_is_typed_spare_its_tower(cache_dir):
    model = load("smolvlm", cache_dir)
    model.processor.image_processor.size = {"longest_edge": 96}  # `high` detail: several views
    engine = Engine(model)
    try:
        question = asked("green", (200, 150), detail="high")
        photos = [part for part in question.messages[-1].parts if isinstance(part, Image)]
        assert engine.prepare(photos)
        deadline = time.monotonic() + 60
        while not engine.idle and time.monotonic() < deadline:
            time.sleep(0.01)
        views = model.encode(question).inputs["pixel_values"].shape[1]
        assert views > 1 and model.views.misses == views, "the tower ran on each view ahead of the question"
        assert views_encoded(model, question) == 0, "the question found every view kept"
    finally:
        engine.close()


def test_the_reply_is_the_one_without_the_cache(cache_dir):
    speed = DecodeSpeed("float32", compile=False, batch=1)
    cached, uncached = (load("smolvlm", cache_dir, size, speed) for size in (64 << 20, 0))
    first, second = red_then_blue()
    replies = []
    for model in (cached, uncached):
        engine = Engine(model)
        try:
            replies.append([engine.reply(c, GREEDY).text() for c in (first, second)])
        finally:
            engine.close()
    assert cached.views.hits > 0
    assert replies[0] == replies[1]


def test_only_the_same_pixels_are_taken_for_a_photo_seen(cache_dir):
    model = load("smolvlm", cache_dir)
    pixels = np.random.default_rng(3).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    ask = lambda pixels: Conversation().add(  # noqa: E731
        Message.user("What is this?", [Image(PILImage.fromarray(pixels), detail="low")])
    )
    assert views_encoded(model, ask(pixels)) == 1
    assert views_encoded(model, ask(pixels.copy())) == 0, "the same photo, uploaded again"
    changed = pixels.copy()
    changed[35, 45] ^= 0xFF
    for other in (255 - pixels, changed, pixels[:, :60]):
        assert views_encoded(model, ask(np.ascontiguousarray(other))) == 1


def test_the_cache_stays_within_its_bytes_dropping_the_least_recently_used(cache_dir):
    probe = load("smolvlm", cache_dir)
    views_encoded(probe, asked("red"))
    view_bytes = probe.views.bytes_held
    model = load("smolvlm", cache_dir, cache_bytes=2 * view_bytes)  # room for two views
    for colour in ("red", "green", "blue"):
        assert views_encoded(model, asked(colour)) == 1
        assert model.views.bytes_held <= 2 * view_bytes
    assert views_encoded(model, asked("blue")) == 0 and views_encoded(model, asked("green")) == 0
    assert views_encoded(model, asked("red")) == 1, "the oldest photo was dropped for the newest"
