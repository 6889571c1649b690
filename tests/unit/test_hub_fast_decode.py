"""The fast decode loop on the language model of hub VLMs (tiny random models of the real families,
built and loaded through the real loader): the prompt merged by the VLM's own forward, then the loop
over its decoder and head. In float32 it answers token for token as transformers' `generate` on the
whole VLM, alone and batched; a family the loop does not run keeps `generate`."""

import pytest
import torch
from PIL import Image as PILImage

from assistant.conversation import Conversation, Message
from assistant.engine import Engine
from assistant.events import TextDelta
from assistant.models.fast_decode import DecodeSpeed
from assistant.models.fast_vision import vision_tower
from assistant.models.loader import ensure_tiny_model, load_pretrained
from assistant.models.local import merged_prompt
from assistant.sampling import GenerationOptions

FAST_FAMILIES = ("llava", "llava_onevision", "idefics3", "smolvlm")  # Llama and Qwen2 text models
FLOAT32 = DecodeSpeed("float32", compile=False, batch=4)
GREEDY = GenerationOptions(temperature=0.0, max_new_tokens=16)
SAMPLED = GenerationOptions(temperature=1.0, top_p=0.9, seed=5, max_new_tokens=16)


def load(family: str, cache_dir, speed: DecodeSpeed | None):
    return load_pretrained(str(ensure_tiny_model(family, cache_dir)), torch.device("cpu"), torch.float32, speed=speed)


def photos_across_two_turns() -> Conversation:
    """Two photos in the first turn, one in the second: what the chat keeps in view."""
    red, blue, green = (
        PILImage.new("RGB", size, colour)
        for size, colour in (((48, 40), "red"), ((30, 60), "blue"), ((40, 40), "green"))
    )
    conversation = Conversation("be brief").add(Message.user("Compare these two photos.", [red, blue]))
    conversation.add(Message.assistant("The first is red."))
    return conversation.add(Message.user("And this one?", [green]))


def answer(model, conversation: Conversation, options: GenerationOptions):
    engine = Engine(model)
    try:
        reply = engine.reply(conversation, options)
        text = "".join(event.text for event in reply if isinstance(event, TextDelta))
    finally:
        engine.close()
    return text, reply.usage


@pytest.mark.parametrize("options", [GREEDY, SAMPLED], ids=["greedy", "seeded sampling"])
@pytest.mark.parametrize("family", FAST_FAMILIES)
def test_the_fast_loop_answers_as_generate_in_float32(family, cache_dir, options):
    conversation = photos_across_two_turns()
    reference, reference_usage = answer(load(family, cache_dir, None), conversation, options)
    fast_model = load(family, cache_dir, FLOAT32)
    assert fast_model.decoder is not None and fast_model.details["decode"] == "float32 weights, eager static-cache step"
    fast, usage = answer(fast_model, conversation, options)
    assert fast == reference and reference, f"{family}: the same weights give the same tokens"
    assert (usage.prompt_tokens, usage.image_tokens, usage.completion_tokens, usage.finish_reason) == (
        reference_usage.prompt_tokens,
        reference_usage.image_tokens,
        reference_usage.completion_tokens,
        reference_usage.finish_reason,
    )
    assert usage.image_tokens > 0, "the three photos reached the model"


@pytest.mark.parametrize("family", ["llava_onevision", "smolvlm"])
def test_replies_asked_together_are_decoded_together_each_as_it_would_be_alone(family, cache_dir):
    model = load(family, cache_dir, FLOAT32)
    asks = [
        (photos_across_two_turns(), GREEDY),
        (Conversation().add(Message.user("Hi")), SAMPLED),
        (photos_across_two_turns(), GenerationOptions(temperature=0.0, max_new_tokens=5)),
    ]
    alone = [answer(model, conversation, options) for conversation, options in asks]
    engine = Engine(model, max_batch=4)
    try:
        with model.decoder._lock:  # the worker waits here with the first request; the others queue
            replies = [engine.reply(conversation, options) for conversation, options in asks]
        together = [(reply.text(), reply.usage) for reply in replies]
    finally:
        engine.close()
    assert any(isinstance(key, tuple) for key in model.decoder._lane.caches), "some were decoded as one batch"
    for (text_alone, usage_alone), (text, usage) in zip(alone, together):
        assert text == text_alone
        assert (usage.completion_tokens, usage.prompt_tokens) == (
            usage_alone.completion_tokens,
            usage_alone.prompt_tokens,
        )


def test_the_merged_prompt_is_the_text_with_the_image_features_in_place(cache_dir):
    model = load("llava_onevision", cache_dir, None)
    encoded = model.encode(photos_across_two_turns())
    merged = merged_prompt(model.model, encoded.inputs)
    ids = encoded.inputs["input_ids"]
    words = model.model.get_input_embeddings()(ids)
    text = ids != model.image_token_id
    assert merged.shape == words.shape == (1, encoded.prompt_tokens, model.model.config.get_text_config().hidden_size)
    assert torch.equal(merged[text], words[text]), "text positions keep their token embeddings"
    assert not torch.allclose(merged[~text], words[~text]), "image positions hold the image features"


def test_a_family_the_loop_does_not_run_keeps_generate(cache_dir):
    """Qwen2-VL's text model takes 3-D (M-RoPE) positions, which the one-token step does not give."""
    model = load("qwen2_vl", cache_dir, FLOAT32)
    assert model.decoder is None and model.details["decode"] == "transformers generate" and not model.can_batch
    text, usage = answer(model, photos_across_two_turns(), GREEDY)
    assert text and usage.image_tokens > 0


@pytest.mark.slow
def test_a_compiled_model_compiles_its_vision_tower_in_the_warm_up_and_measures_a_view(cache_dir):
    model = load("smolvlm", cache_dir, DecodeSpeed("int8", compile=True, batch=1))
    engine = Engine(model)
    try:
        engine.warming_up.join()
        assert model._seconds_per_view > 0, "the warm-up measured what a view costs here"
        reply = engine.reply(photos_across_two_turns(), GREEDY)
        text = reply.text()
    finally:
        engine.close()
    assert text and reply.usage.image_tokens > 0
    tower = vision_tower(model.model)
    assert tower.quickened._ready.is_set(), "the compiled forward answered (no fall-back to eager)"
    assert tower.quickened.packaged is None, "without a cache directory, nothing is kept as a package"
    assert "Int8" in type(tower.encoder.layers[0].mlp.fc1.weight).__name__, "int8 weights in the tower"
