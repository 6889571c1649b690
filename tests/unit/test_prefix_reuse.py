"""A follow-up reads only what is new: the fast decoder keeps what its cache holds and prefills a prompt
from where it parts from it (models/fast_decode.py Prompt). Each reply is checked against the same
question asked of a fresh model, token for token in float32: reuse may save work, never change words."""

import pytest
import torch
from PIL import Image as PILImage

from assistant.conversation import Conversation, Message
from assistant.engine import Engine
from assistant.events import Usage
from assistant.models.base import ReplyRequest
from assistant.models.fast_decode import DecodeSpeed
from assistant.models.loader import ensure_tiny_model, load_pretrained
from assistant.models.streaming import start_generation
from assistant.sampling import GenerationOptions

GREEDY = GenerationOptions(temperature=0.0, max_new_tokens=12)
FLOAT32 = DecodeSpeed("float32", compile=False, batch=1)


@pytest.fixture(scope="module")
def tiny_dir(cache_dir):
    return str(ensure_tiny_model("llava_onevision", cache_dir))


def fresh(tiny_dir):
    return load_pretrained(tiny_dir, torch.device("cpu"), torch.float32, speed=FLOAT32)


def reply_text(model, conversation: Conversation) -> str:
    engine = Engine(model)
    try:
        return engine.reply(conversation, GREEDY).text()
    finally:
        engine.close()


def photo(colour: str) -> PILImage.Image:
    return PILImage.new("RGB", (40, 32), colour)


def first_turn(colour: str = "red", question: str = "What colour is this photo?") -> Conversation:
    return Conversation("be brief").add(Message.user(question, [photo(colour)]))


def follow_up(conversation: Conversation, answer: str) -> Conversation:
    continued = Conversation(conversation.system_prompt, list(conversation.messages))
    return continued.add(Message.assistant(answer)).add(Message.user("And what shape is it?"))


def test_a_follow_up_reads_only_its_new_words_and_answers_as_a_fresh_model(tiny_dir):
    model = fresh(tiny_dir)
    asked = first_turn()
    answer = reply_text(model, asked)
    first_length = model.encode(asked).prompt_tokens
    then = follow_up(asked, answer)
    text = reply_text(model, then)
    assert model.decoder.reused >= first_length, "the first turn, photo and all, was not read again"
    assert model.decoder.reused < model.encode(then).prompt_tokens
    assert text == reply_text(fresh(tiny_dir), then), "reuse changed the reply"


def test_the_same_question_again_is_all_reused_but_its_last_position(tiny_dir):
    model = fresh(tiny_dir)
    asked = first_turn()
    once = reply_text(model, asked)
    assert reply_text(model, asked) == once and model.decoder.reused == model.encode(asked).prompt_tokens - 1


def test_an_edited_turn_is_read_again_from_the_edit(tiny_dir):
    model = fresh(tiny_dir)
    asked = first_turn(question="What colour is this photo?")
    reply_text(model, asked)
    edited = first_turn(question="Which colour is this photo?")
    text = reply_text(model, edited)
    ids, edited_ids = (model.encode(c).inputs["input_ids"][0] for c in (asked, edited))
    parted = int((ids[: len(edited_ids)] != edited_ids[: len(ids)]).nonzero()[0])
    assert model.decoder.reused == parted, "reused up to the first word that changed, not past it"
    assert text == reply_text(fresh(tiny_dir), edited)


def test_another_photo_in_the_same_place_is_seen_again(tiny_dir):
    model = fresh(tiny_dir)
    reply_text(model, first_turn("red"))
    blue = first_turn("blue")
    text = reply_text(model, blue)
    ids = model.encode(blue).inputs["input_ids"][0]
    first_image = int((ids == model.image_token_id).nonzero()[0])
    assert model.decoder.reused <= first_image, "the red photo's positions must not stand for the blue one"
    assert text == reply_text(fresh(tiny_dir), blue)


def test_another_conversation_in_between_shares_only_the_system_prompt(tiny_dir):
    model = fresh(tiny_dir)
    asked = first_turn()
    answer = reply_text(model, asked)
    other = Conversation("be brief").add(Message.user("Tell me about boats."))
    reply_text(model, other)
    then = follow_up(asked, answer)
    text = reply_text(model, then)
    assert 0 < model.decoder.reused < model.encode(asked).prompt_tokens
    assert text == reply_text(fresh(tiny_dir), then)


@pytest.mark.slow
def test_a_compiled_follow_up_answers_as_a_fresh_eager_model(tiny_dir):
    """The compiled step goes on from a cache rewound to where the follow-up parts from it."""
    model = load_pretrained(
        tiny_dir, torch.device("cpu"), torch.float32, speed=DecodeSpeed("float32", compile=True, batch=1)
    )
    engine = Engine(model)
    try:
        engine.warming_up.join()
        asked = first_turn()
        then = follow_up(asked, engine.reply(asked, GREEDY).text())
        text = engine.reply(then, GREEDY).text()
    finally:
        engine.close()
    assert model.decoder._step is not model.decoder._one_token, "the step compiled"
    assert 0 < model.decoder.reused < model.encode(then).prompt_tokens - 1
    assert text == reply_text(fresh(tiny_dir), then)


def shown_text(model, conversation: Conversation, generated: list[int]) -> str:
    """What the chat shows of a reply made of the tokens `generated`, through the model's own token stream."""
    request = ReplyRequest(conversation, GREEDY)
    stream = start_generation(model, request).streamer
    stream.put(torch.tensor([0]))  # the prompt comes first, and is not shown
    for token in generated:
        stream.put(torch.tensor([token]))
    stream.end()
    text = ""
    while not isinstance(event := request.next_event(), Usage):
        text += event.text
    return text


# What each family's model writes first: after "Assistant:" a word with its space; after ChatML's
# "<|im_start|>assistant\n" a word alone.
FIRST_WORDS = {"smolvlm": " the photo is red", "idefics3": " the photo is red", "llava_onevision": "the photo is red"}


@pytest.mark.parametrize("family", sorted(FIRST_WORDS))
def test_a_reply_put_back_reads_as_the_tokens_the_model_gave(family, cache_dir):
    """The chat (and an API client) sends the reply back as the assistant's turn: rendered by the chat
    template, it must be the model's own tokens after the first prompt, or the follow-up reads the whole
    reply again. SmolVLM's template writes "Assistant: " + text, while the model, after "Assistant:",
    writes its first word with its space: the shown text starts at the word."""
    model = load_pretrained(
        str(ensure_tiny_model(family, cache_dir)), torch.device("cpu"), torch.float32, speed=FLOAT32
    )
    asked = first_turn()
    generated = model.tokenizer(FIRST_WORDS[family], add_special_tokens=False).input_ids
    answer = shown_text(model, asked, generated)
    assert not answer.startswith(" "), f"shown with its leading space: {answer!r}"
    first = model.encode(asked).inputs["input_ids"][0].tolist()
    then = model.encode(follow_up(asked, answer)).inputs["input_ids"][0].tolist()
    assert then[: len(first) + len(generated)] == first + generated, (
        f"the reply came back as {then[len(first) : len(first) + len(generated)]}, the model gave {generated}"
    )
