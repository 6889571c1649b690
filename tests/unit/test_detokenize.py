import random

import pytest

from assistant.detokenize import REPLACEMENT_CHARACTER, IncrementalDetokenizer

TEXTS = ["Hello there, how are you?", "café naïve 日本 🙂 — “quoted”", "  leading spaces\nand new lines\n"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return tiny_model.tokenizer


@pytest.mark.parametrize("text", TEXTS)
def test_streamed_deltas_rebuild_the_text_without_half_characters(tokenizer, text):
    token_ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(token_ids) > len(text) / 4, "the tiny byte-level tokenizer should split multi-byte characters"
    detokenizer = IncrementalDetokenizer(tokenizer)
    deltas = [detokenizer.push(token_id) for token_id in token_ids] + [detokenizer.flush()]
    assert "".join(deltas) == text
    assert not any(REPLACEMENT_CHARACTER in delta for delta in deltas), f"half a character was emitted: {deltas}"


def test_random_tokens_stream_exactly_what_a_full_decode_gives(tokenizer):
    rng = random.Random(0)
    for _ in range(20):
        token_ids = [rng.randrange(len(tokenizer)) for _ in range(40)]
        detokenizer = IncrementalDetokenizer(tokenizer)
        streamed = "".join(detokenizer.push(token_id) for token_id in token_ids) + detokenizer.flush()
        assert streamed == tokenizer.decode(token_ids, skip_special_tokens=True)


def test_an_incomplete_character_is_held_back_until_complete(tokenizer):
    emoji_bytes_as_tokens = tokenizer.encode("🙂", add_special_tokens=False)
    assert len(emoji_bytes_as_tokens) > 1, "the emoji should span several byte tokens for this test"
    detokenizer = IncrementalDetokenizer(tokenizer)
    held = [detokenizer.push(token_id) for token_id in emoji_bytes_as_tokens[:-1]]
    assert held == [""] * len(held)
    assert detokenizer.push(emoji_bytes_as_tokens[-1]) == "🙂"


def test_stop_strings_end_the_text_and_never_show_any_part_of_them():
    from assistant.detokenize import StopStrings

    stops = StopStrings(("\nUser:", "###"))
    pieces = ["Hello", " there\n", "Us", "er: ignored", " more"]
    shown = [stops.push(piece) for piece in pieces]
    assert shown == ["Hello", " there", "", "", ""], "text that may begin a stop string waits; the stop ends it"
    assert stops.stopped and stops.flush() == ""
    almost = StopStrings(("###",))
    assert almost.push("a#") == "a" and almost.push("#b") == "##b" and almost.flush() == ""
    held = StopStrings(("END",))
    assert held.push("the EN") == "the " and held.flush() == "EN", (
        "held text that never became a stop is shown at the end"
    )
    assert StopStrings().push("anything") == "anything"
