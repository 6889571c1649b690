"""A photo goes through the processor once (models/processed_images.py): every turn renders the whole
conversation again, and a photo seen before gives the same inputs without being processed again. Tiny
random models of the real families, loaded by the real loader."""

import pytest
import torch
from PIL import Image as PILImage
from transformers import AutoProcessor

from assistant.conversation import Conversation, Image, Message
from assistant.models.loader import ensure_tiny_model, load_pretrained
from assistant.models.processed_images import RememberingImageProcessor

FAMILIES = ("llava", "llava_onevision", "idefics3", "smolvlm", "qwen2_vl")


def load(family: str, cache_dir):
    directory = str(ensure_tiny_model(family, cache_dir))
    return load_pretrained(directory, torch.device("cpu"), torch.float32)


def photo_question(colour: str, detail: str = "high", size=(48, 40)) -> Conversation:
    photo = Image(PILImage.new("RGB", size, colour), detail=detail)
    return Conversation("be brief").add(Message.user("What is this?", [photo]))


def follow_up(conversation: Conversation) -> Conversation:
    continued = Conversation(conversation.system_prompt, list(conversation.messages))
    return continued.add(Message.assistant("Red.")).add(Message.user("And its shape?"))


def assert_same_inputs(got, expected, family: str) -> None:
    assert set(got) == set(expected), f"{family}: other inputs {sorted(got)} against {sorted(expected)}"
    for name in expected:
        assert torch.equal(got[name], expected[name]), f"{family}: {name} differs from a fresh processor's"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_follow_up_about_a_photo_seen_is_not_processed_again_and_gets_the_same_inputs(family, cache_dir):
    model, fresh = load(family, cache_dir), load(family, cache_dir)
    images = model.processor.image_processor
    assert isinstance(images, RememberingImageProcessor)
    asked = photo_question("red")
    model.encode(asked)
    then = follow_up(asked)
    got = model.encode(then).inputs
    assert images.hits == 1, f"{family}: the photo was processed again for the follow-up"
    assert_same_inputs(got, fresh.encode(then).inputs, family)


@pytest.mark.parametrize("family", ["smolvlm", "llava_onevision"])
def test_other_pixels_are_processed_afresh_and_another_detail_gets_its_own_inputs(family, cache_dir):
    model, fresh = load(family, cache_dir), load(family, cache_dir)
    model.encode(photo_question("red"))
    for other in (photo_question("blue"), photo_question("red", size=(40, 48))):
        assert_same_inputs(model.encode(other).inputs, fresh.encode(other).inputs, family)
    assert model.processor.image_processor.hits == 0, "another photo was answered from the red one's"
    low = photo_question("red", detail="low")  # one view where the family tiles (OneVision); the same here else
    assert_same_inputs(model.encode(low).inputs, fresh.encode(low).inputs, family)


def test_the_processor_still_describes_and_saves_itself(cache_dir, tmp_path):
    model = load("smolvlm", cache_dir)
    model.encode(photo_question("red"))
    assert "SmolVLMImageProcessor" in repr(model.processor)
    model.processor.save_pretrained(tmp_path)
    saved = AutoProcessor.from_pretrained(tmp_path)
    red = PILImage.new("RGB", (48, 40), "red")
    inputs = [p(text="<image>", images=[red], return_tensors="pt") for p in (saved, model.processor)]
    assert_same_inputs(inputs[0], inputs[1], "smolvlm, saved and loaded again")


def test_what_is_kept_stays_within_its_bytes_dropping_the_least_recently_used(cache_dir):
    model = load("smolvlm", cache_dir)
    one = model.processor.image_processor(PILImage.new("RGB", (48, 40), "red"), return_tensors="pt")
    per_photo = sum(value.numel() * value.element_size() for value in one.values() if isinstance(value, torch.Tensor))
    images = RememberingImageProcessor(model.processor.image_processor.image_processor, kept_bytes=2 * per_photo)
    red, green, blue = (PILImage.new("RGB", (48, 40), colour) for colour in ("red", "green", "blue"))
    for photo in (red, green, red, blue):  # red used again after green: green is the least recently used
        images(photo, return_tensors="pt")
    assert images.hits == 1
    images(red, return_tensors="pt")
    assert images.hits == 2, "red, used last but one, was dropped"
    images(green, return_tensors="pt")
    assert images.hits == 2, "green, the least recently used, was kept past the bound"


def test_no_photo_memory_asked_for_keeps_the_processor_as_it_came(cache_dir):
    directory = str(ensure_tiny_model("smolvlm", cache_dir))
    model = load_pretrained(directory, torch.device("cpu"), torch.float32, image_cache_bytes=0)
    assert not isinstance(model.processor.image_processor, RememberingImageProcessor)
    assert model.views is None, "nor the vision tower's outputs"
