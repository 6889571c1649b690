from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image as PILImage

from assistant.conversation import Audio, Conversation, Image, Message, Text, fit_to_context, to_chat_messages
from assistant.errors import AssistantError, ContextOverflowError


def picture(colour: str, size=(16, 16)) -> PILImage.Image:
    return PILImage.new("RGB", size, colour)


def test_user_message_puts_images_first_and_keeps_every_image():
    message = Message.user("compare these", [picture("red"), picture("blue")])
    assert [type(part) for part in message.parts] == [Image, Image, Text]
    assert message.text == "compare these" and len(message.images) == 2


@pytest.mark.parametrize(
    "role, parts, reason",
    [
        ("user", (), "at least one part"),
        ("robot", (Text("hi"),), "unknown role 'robot'"),
        ("assistant", (Image(picture("red")),), "only user messages carry images"),
    ],
)
def test_invalid_messages_are_refused(role, parts, reason):
    with pytest.raises(ValueError, match=reason):
        Message(role, parts)


def test_images_of_earlier_turns_stay_in_the_chat_in_order():
    red, green, blue = picture("red"), picture("green"), picture("blue")
    conversation = Conversation("be brief")
    conversation.add(Message.user("what are these?", [red, green]))
    conversation.add(Message.assistant("a red and a green square"))
    conversation.add(Message.user("and this one, compared with the first?", [blue]))
    chat, images = to_chat_messages(conversation)
    assert images == [red, green, blue], "a new photo must not reset the earlier ones"
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    placeholders = [part for m in chat for part in m["content"] if part["type"] == "image"]
    assert len(placeholders) == len(images)


def test_untranscribed_audio_is_a_clear_error():
    conversation = Conversation().add(Message.user(audio=Audio(np.zeros(16000, np.float32))))
    with pytest.raises(AssistantError, match="not been transcribed"):
        to_chat_messages(conversation)


def test_turns_group_each_user_message_with_its_replies():
    conversation = Conversation()
    for i in range(3):
        conversation.add(Message.user(f"q{i}")).add(Message.assistant(f"a{i}"))
    conversation.add(Message.user("q3"))
    assert [[m.text for m in turn] for turn in conversation.turns()] == [
        ["q0", "a0"],
        ["q1", "a1"],
        ["q2", "a2"],
        ["q3"],
    ]
    assert [m.text for m in conversation.without_oldest_turns(2).messages] == ["q2", "a2", "q3"]


@dataclass
class Length:
    """Measures a conversation in characters: the budget logic is independent of tokenizers."""

    prompt_tokens: int
    image_tokens: int = 0
    texts: tuple = ()


def measure(conversation: Conversation) -> Length:
    texts = (conversation.system_prompt, *(m.text for m in conversation.messages))
    return Length(sum(len(t) for t in texts), texts=texts)


def long_conversation() -> Conversation:
    conversation = Conversation("S" * 10)
    for i in range(6):
        conversation.add(Message.user(f"{i}" * 10)).add(Message.assistant(f"{i}" * 10))
    return conversation.add(Message.user("N" * 10))


def test_fit_drops_the_fewest_oldest_turns_and_never_the_system_prompt_or_newest():
    encoded, dropped = fit_to_context(long_conversation(), measure, limit=75)
    assert dropped == 4, "6 full turns of 20 + system 10 + newest 10: keeping 2 full turns (70) fits in 75"
    assert encoded.texts[0] == "S" * 10 and encoded.texts[-1] == "N" * 10
    assert encoded.texts[1:-1] == ("4" * 10, "4" * 10, "5" * 10, "5" * 10)


def test_fit_keeps_everything_when_it_fits():
    encoded, dropped = fit_to_context(long_conversation(), measure, limit=1000)
    assert dropped == 0 and encoded.prompt_tokens == 140


def test_fit_refuses_when_the_newest_turn_alone_is_too_long():
    with pytest.raises(ContextOverflowError, match="needs 20 tokens, but only 19 fit"):
        fit_to_context(long_conversation(), measure, limit=19)
