"""The short encoder window's rules: how long the window is, which language a clip is heard in, and
which transcripts are sent on to the 30-s window.
(The window itself, on the real Whisper base, is tested in tests/integration/test_whisper_base.py.)"""

import numpy as np
import pytest

from assistant.speech.transcriber import SpeechError, TranscribeOptions
from assistant.speech.window import (
    FULL_WINDOW_FRAMES,
    LANGUAGE_SWITCH_PROBABILITY,
    ShortWindow,
    choose_language,
    repeats_itself,
)

WINDOW = ShortWindow(floor_frames=1000, margin_frames=200)


@pytest.mark.parametrize(
    ("speech_frames", "window"), [(1, 1000), (300, 1000), (800, 1000), (801, 1001), (2000, 2200), (2799, 2999)]
)
def test_the_window_is_the_speech_and_a_margin_but_never_below_the_floor(speech_frames, window):
    assert WINDOW.frames_for(speech_frames) == window


@pytest.mark.parametrize("speech_frames", [2800, 2900, 5000])
def test_speech_that_needs_the_full_window_gets_none(speech_frames):
    assert WINDOW.frames_for(speech_frames) is None
    assert ShortWindow(floor_frames=FULL_WINDOW_FRAMES).frames_for(10) is None


def test_without_a_hint_the_most_likely_language_wins():
    assert choose_language([("cy", 0.4), ("en", 0.3)], None) == ("cy", 0.4)


def test_an_unsure_guess_keeps_the_language_last_heard():
    assert choose_language([("ar", 0.17), ("en", 0.15), ("de", 0.1)], "en") == ("en", 0.15)


def test_a_sure_change_of_language_is_followed():
    assert choose_language([("fr", 0.91), ("en", 0.05)], "en") == ("fr", 0.91)
    assert choose_language([("fr", LANGUAGE_SWITCH_PROBABILITY), ("en", 0.2)], "en")[0] == "fr"


def test_a_hint_missing_from_the_ranking_is_kept_with_probability_zero():
    assert choose_language([("de", 0.3), ("nl", 0.2)], "fr") == ("fr", 0.0)


def test_a_malformed_hint_is_refused():
    with pytest.raises(SpeechError, match="ISO 639-1"):
        TranscribeOptions(language_hint="english!")


def test_telephone_band_audio_is_told_from_full_band_audio():
    from assistant.speech.window import is_narrowband

    rng = np.random.default_rng(0)
    full_band = rng.standard_normal(32_000).astype(np.float32)  # white noise up to 8 kHz
    spectrum = np.fft.rfft(full_band)
    spectrum[np.fft.rfftfreq(full_band.size, 1 / 16_000) > 3800] = 0  # what 8-kHz recording leaves
    telephone = np.fft.irfft(spectrum, n=full_band.size).astype(np.float32)
    assert is_narrowband(telephone) and not is_narrowband(full_band)
    assert not is_narrowband(np.zeros(1000, np.float32))


@pytest.mark.parametrize(
    "text",
    [
        "The library has a large collection of old maps. The library has a large collection of old maps.",
        "The library has a large collection of old maps. The library has a large",  # cut short
        "the old maps, THE OLD MAPS!",
    ],
)
def test_a_transcript_that_starts_over_is_caught(text):
    assert repeats_itself(text), "the short window's loop must send this to the 30-s window"


@pytest.mark.parametrize(
    "text",
    ["Help! Help!", "Is it the library? Yes", "I think it is what I think.", "What is twelve plus seven?", ""],
)
def test_words_that_come_back_naturally_are_not_taken_for_a_loop(text):
    assert not repeats_itself(text)
