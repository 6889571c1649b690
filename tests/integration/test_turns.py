"""Where a spoken turn ends in a live stream (speech/turns.py), with espeak-ng's speech, silence and
noise: one turn per question, as soon as the closing silence has passed, whatever the chunks; none
from silence or noise; a pause shorter than the closing silence stays inside the turn; a turn past its
longest duration is cut; and what a turn holds is transcribed as what was said."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.vad import get_vad_model
from jiwer import wer
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from assistant.speech.audio import SAMPLE_RATE
from assistant.speech.transcriber import SpeechModelSpec, TranscribeOptions, load_transcriber
from assistant.speech.turns import FRAME, StreamingVad, TurnDetector, TurnSettings
from speech_samples import PHRASES, needs_espeak  # tests/ is on pytest's pythonpath

pytestmark = needs_espeak
normalise = EnglishTextNormalizer({"colour": "color"})
QUESTION = "What colour is the car in this photo?"
BROWSER_CHUNK = SAMPLE_RATE // 10  # what a browser's microphone stream sends at a time (100 ms)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def fed(detector: TurnDetector, audio: np.ndarray, chunk: int = BROWSER_CHUNK) -> list[tuple[float, object]]:
    """(seconds of audio fed when it came, turn) for each turn `audio` ends, fed in chunks."""
    return [
        ((start + len(audio[start : start + chunk])) / SAMPLE_RATE, turn)
        for start in range(0, len(audio), chunk)
        for turn in detector.feed(audio[start : start + chunk])
    ]


def test_the_streamed_speech_probabilities_are_faster_whispers_own(spoken):
    audio = np.concatenate([silence(0.5), spoken(QUESTION), silence(1)])
    audio = audio[: len(audio) // FRAME * FRAME]
    whole = get_vad_model()(audio).reshape(-1)  # faster-whisper reading the whole recording
    vad, parts, start = StreamingVad(), [], 0
    for frames in (1, 3, 7, 2, 1000):
        parts.append(vad(audio[start * FRAME : (start + frames) * FRAME]))
        start += frames
    assert np.allclose(np.concatenate(parts), whole, atol=1e-6)
    assert whole.max() > 0.9 and whole[:10].max() < 0.1, "speech is told from silence"


@pytest.mark.parametrize("chunk", [160, BROWSER_CHUNK, 5000])
def test_a_question_is_one_turn_that_ends_once_the_closing_silence_has_passed(spoken, chunk):
    question = spoken(QUESTION)
    audio = np.concatenate([silence(1), question, silence(2)])
    turns = fed(TurnDetector(TurnSettings(silence_s=0.6)), audio, chunk)
    assert len(turns) == 1
    came, turn = turns[0]
    spoken_until = (SAMPLE_RATE + len(question)) / SAMPLE_RATE
    assert came <= spoken_until + 0.6 + (chunk / SAMPLE_RATE) + 0.05, "no later than the closing silence says"
    assert not turn.cut and 1.0 < turn.speech_s <= turn.seconds <= len(question) / SAMPLE_RATE + 0.3
    whole = TurnDetector(TurnSettings(silence_s=0.6)).feed(audio)
    assert len(whole) == 1 and np.array_equal(whole[0].audio, turn.audio), "the same turn, whatever the chunks"


def test_the_closing_silence_is_a_setting(spoken):
    audio = np.concatenate([silence(1), spoken(QUESTION), silence(3)])
    ((quick, _),) = fed(TurnDetector(TurnSettings(silence_s=0.6)), audio)
    ((patient, _),) = fed(TurnDetector(TurnSettings(silence_s=1.5)), audio)
    assert 0.8 <= patient - quick <= 1.0


def test_turns_are_transcribed_as_well_as_the_same_speech_sent_whole(spoken, cache_dir):
    """The issue's measure: the turns' word error rate within 0.02 of `assistant transcribe`'s on
    the same speech (each question's recording, whole)."""
    whisper = load_transcriber(SpeechModelSpec(model="base", cpu_threads=2, extra={"cache_dir": cache_dir}))
    english = TranscribeOptions(language="en")
    audio = np.concatenate([part for phrase in PHRASES[:4] for part in (silence(0.8), spoken(phrase))] + [silence(1)])
    turns = [turn for _, turn in fed(TurnDetector(), audio)]
    assert len(turns) == 4
    said = [normalise(phrase) for phrase in PHRASES[:4]]
    in_turns = wer(said, [normalise(whisper.transcribe(turn.audio, english).text) for turn in turns])
    whole = wer(said, [normalise(whisper.transcribe(spoken(phrase), english).text) for phrase in PHRASES[:4]])
    assert in_turns <= whole + 0.02, f"{in_turns:.3f} in turns against {whole:.3f} whole"


def test_a_pause_shorter_than_the_closing_silence_stays_inside_the_turn(spoken):
    audio = np.concatenate([silence(0.5), spoken("And the sky?"), silence(0.3), spoken("Is it blue?"), silence(2)])
    assert len(fed(TurnDetector(TurnSettings(silence_s=1.2)), audio)) == 1
    assert len(fed(TurnDetector(TurnSettings(silence_s=0.3)), audio)) == 2


def test_silence_and_noise_make_no_turn():
    random = np.random.default_rng(0)
    hiss = random.normal(0, 0.1, 10 * SAMPLE_RATE).astype(np.float32)
    clicks = silence(5)
    clicks[:: SAMPLE_RATE // 2] = 0.9  # a click every half second
    hum = (0.3 * np.sin(2 * np.pi * 50 * np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)
    detector = TurnDetector()
    assert fed(detector, np.concatenate([silence(60), hiss, clicks, hum])) == []
    assert detector.flush() is None and not detector.speaking


def test_a_turn_past_its_longest_duration_is_cut_and_the_rest_of_that_utterance_dropped(spoken):
    long = spoken("This is a long sentence that goes on and on, far past the longest turn we allow here.")
    audio = np.concatenate([silence(0.5), long, silence(1), spoken(QUESTION), silence(1)])
    turns = [turn for _, turn in fed(TurnDetector(TurnSettings(max_seconds=3.0)), audio)]
    assert [turn.cut for turn in turns] == [True, False], "the cut turn, then the next question whole"
    assert turns[0].seconds <= 3.0 + FRAME / SAMPLE_RATE
    assert turns[1].seconds < len(spoken(QUESTION)) / SAMPLE_RATE + 0.3


def test_a_call_that_ends_mid_sentence_keeps_what_was_said(spoken):
    detector = TurnDetector()
    assert fed(detector, np.concatenate([silence(0.5), spoken(QUESTION)])) == []
    assert detector.speaking
    turn = detector.flush()
    assert turn is not None and turn.speech_s > 1.0 and not detector.speaking


@pytest.mark.parametrize(
    "values", [{"silence_s": 0}, {"silence_s": 30}, {"threshold": 1.5}, {"max_seconds": 0.1}], ids=str
)
def test_settings_out_of_range_are_refused_with_the_reason(values):
    with pytest.raises(ValueError, match="silence|probability|longest"):
        TurnSettings(**values)
