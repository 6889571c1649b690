"""Text as it should be heard, and replies cut into sentences as they stream."""

import pytest

from assistant.speech.speakable import SentenceStream, speakable
from assistant.speech.synthesizer import SynthesisError, load_synthesizer


@pytest.mark.parametrize(
    "written, heard",
    [
        ("**Bold** and _italic_ and ~~gone~~", "Bold and italic and gone"),
        ("## Results\nAll good", "Results.\nAll good"),
        ("- apples\n- pears\n1. one", "apples.\npears.\none."),
        ("See [the docs](https://x.org/a) or https://www.example.com/p?q=1.", "See the docs or a link on example.com."),
        ("Run `pip install x` now", "Run pip install x now"),
        ("Before\n```python\nprint('hi')\n```\nAfter", "Before\n(code shown on screen)\nAfter"),
        ("Great job 🎉 → next ★", "Great job next"),
        ("50% off & free + more = win", "50 percent off and free plus more equals win"),
        ("> quoted line", "quoted line"),
        ("a | b | c", "a, b, c"),
    ],
)
def test_only_what_a_listener_needs_is_said(written, heard):
    assert speakable(written) == heard


def test_sentences_come_out_as_soon_as_they_end():
    stream = SentenceStream()
    assert stream.push("Hello there. This is") == ["Hello there."]
    assert stream.push(" Dr. Smith speaking. And") == ["This is Dr. Smith speaking."], (
        "a short 'Dr.' does not end a sentence"
    )
    assert stream.push(" then?") == []
    assert stream.flush() == ["And then?"]


def test_a_code_block_is_not_cut_in_the_middle():
    stream = SentenceStream()
    assert stream.push("Try this first. ```python\nx = 1. y = 2.\n") == ["Try this first."]
    assert stream.push("``` That works fine. Bye") == ["```python\nx = 1. y = 2.\n``` That works fine."]


def test_a_missing_voice_is_a_clear_error(tmp_path):
    with pytest.raises(
        SynthesisError, match="no piper voice at .*missing.onnx: give the .onnx file, with its .onnx.json beside it"
    ):
        load_synthesizer(str(tmp_path / "missing.onnx"))
