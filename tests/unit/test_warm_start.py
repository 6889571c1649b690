"""A question asked while the warm-up compiles is answered at once, beside the compile, with the eager
steps (models/fast_decode.py): it does not wait minutes for the compiled ones. Here the warm-up is held
at its start (where it compiles the vision tower) until the test lets it go, and compiles nothing, so
the answers can be compared with an eager model's, token for token in float32."""

import os
import sys
import threading

import pytest
import torch
from PIL import Image as PILImage

from assistant.conversation import Conversation, Image, Message
from assistant.engine import Engine
from assistant.models.fast_decode import WARM_UP_NICENESS, DecodeSpeed, FastDecoder
from assistant.models.loader import ensure_tiny_model, load_pretrained
from assistant.sampling import GenerationOptions

GREEDY = GenerationOptions(temperature=0.0, max_new_tokens=10)


@pytest.fixture(scope="module")
def tiny_dir(cache_dir):
    return str(ensure_tiny_model("llava_onevision", cache_dir))


def eager_model(tiny_dir):
    return load_pretrained(tiny_dir, torch.device("cpu"), torch.float32, speed=DecodeSpeed("float32", False, 1))


def question(colour: str, detail: str = "low") -> Conversation:
    photo = Image(PILImage.new("RGB", (40, 32), colour), detail=detail)
    return Conversation("be brief").add(Message.user("What colour is this photo?", [photo]))


def answers(model, conversations) -> list[str]:
    engine = Engine(model)
    try:
        return [engine.reply(conversation, GREEDY).text() for conversation in conversations]
    finally:
        engine.close()


def with_a_held_warm_up(model, release: threading.Event) -> FastDecoder:
    """Give `model` a decoder whose warm-up waits for `release`, then compiles nothing."""
    decoder = FastDecoder(model.decoder.language_model, DecodeSpeed("float32", compile=True, batch=1))
    decoder._try_compile = lambda *args: None
    decoder._step = decoder._one_token
    model.decoder = decoder
    model._warm_vision = lambda: release.wait(120)
    return decoder


def test_a_question_asked_while_the_warm_up_compiles_is_answered_beside_it(tiny_dir):
    expected = answers(eager_model(tiny_dir), [question("red"), question("blue")])
    model = eager_model(tiny_dir)
    release = threading.Event()
    decoder = with_a_held_warm_up(model, release)
    engine = Engine(model)
    try:
        assert decoder.warming
        assert engine.reply(question("red"), GREEDY).text() == expected[0]
        assert decoder.warming and engine.warming_up.is_alive(), "answered while the warm-up held its turn"
        assert decoder._beside_compile.caches, "in caches of its own"
        release.set()
        engine.warming_up.join(60)
        assert not decoder.warming
        assert engine.reply(question("blue"), GREEDY).text() == expected[1]
        assert not decoder._beside_compile.caches, "their memory is given back once the warm-up is done"
    finally:
        release.set()
        engine.close()


def test_auto_detail_asked_during_the_warm_up_takes_one_view_without_timing_the_tower(cache_dir):
    model = eager_model(str(ensure_tiny_model("smolvlm", cache_dir)))  # a family whose views are counted
    model.processor.image_processor.size = {"longest_edge": 4 * 32}  # its own tiling: up to 4 x 4 views
    release = threading.Event()
    with_a_held_warm_up(model, release)
    engine = Engine(model)
    try:
        big = PILImage.new("RGB", (900, 700), "green")
        auto, low = (Conversation().add(Message.user("What is this?", [Image(big, detail=d)])) for d in ("auto", "low"))
        assert model.encode(auto).image_tokens == model.encode(low).image_tokens
        assert model._seconds_per_view is None, "the tower is timed by the warm-up, not beside it"
        assert engine.reply(auto, GREEDY).text()
        release.set()
        engine.warming_up.join(60)
        assert model.encode(auto).image_tokens > model.encode(low).image_tokens, "more views, once timed"
    finally:
        release.set()
        engine.close()


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own priority is Linux's")
def test_the_warm_up_runs_at_a_lower_priority_than_the_replies(tiny_dir):
    model = eager_model(tiny_dir)
    release = threading.Event()
    with_a_held_warm_up(model, release)
    priorities = []
    model._warm_vision = lambda: priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    engine = Engine(model)
    try:
        engine.warming_up.join(60)
        assert priorities == [min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + WARM_UP_NICENESS)]
        assert engine.reply(question("red"), GREEDY).text(), "replies still run"
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < priorities[0], "the caller keeps its own"
    finally:
        engine.close()
