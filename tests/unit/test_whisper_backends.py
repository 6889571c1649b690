"""The transformers and openai-whisper speech backends, loaded through `load_transcriber` (the real
loading code) from tiny random Whisper models built offline. Random weights write noise, so these
tests check behaviour (durations, languages, segments in range, silence, errors), never words."""

from __future__ import annotations

import importlib.util
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from assistant.speech.transcriber import (
    Segment,
    SpeechError,
    SpeechModelSpec,
    TranscribeOptions,
    Transcript,
    load_transcriber,
)
from whisper_builders import build_tiny_hf_whisper, build_tiny_openai_whisper  # tests/ is on pytest's pythonpath

needs_openai_whisper = pytest.mark.skipif(
    importlib.util.find_spec("whisper") is None, reason="openai-whisper is not installed (pip install openai-whisper)"
)
SAMPLE_RATE_HZ = 16_000
BACKENDS = ("transformers", pytest.param("openai-whisper", marks=needs_openai_whisper))
BACKEND_NAMES = ("transformers", "openai-whisper")
GREEDY = TranscribeOptions(beam_size=1)  # the tiny models never stop early; beams would only cost time


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models are all thread start-up overhead: one thread is several times faster than two
    on a busy 2-core machine. Restored afterwards for the rest of the session."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """backend -> the path of its tiny model, built on first use (once per module)."""
    root = tmp_path_factory.mktemp("whisper")
    built = {}

    def path(backend: str) -> str:
        if backend not in built:
            if backend == "transformers":
                built[backend] = str(build_tiny_hf_whisper(root / "hf"))
            else:
                built[backend] = str(build_tiny_openai_whisper(root / "tiny.pt"))
        return built[backend]

    return path


@pytest.fixture(scope="module", params=BACKENDS)
def transcriber(request, models):
    return load_transcriber(SpeechModelSpec(backend=request.param, model=models(request.param)))


def tone(seconds: float, seed: int = 0) -> np.ndarray:
    """A 440 Hz sine with some noise, float32 mono 16 kHz: loud enough to be transcribed."""
    t = np.arange(int(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * noise).astype(np.float32)


def assert_well_formed(transcript: Transcript, duration: float) -> None:
    assert isinstance(transcript, Transcript)
    assert transcript.duration == pytest.approx(duration)
    assert isinstance(transcript.text, str) and transcript.text == transcript.text.strip()
    assert isinstance(transcript.language, str) and 2 <= len(transcript.language) <= 3
    for segment in transcript.segments:
        assert isinstance(segment, Segment) and segment.text
        assert 0.0 <= segment.start <= segment.end <= duration


def test_loads_through_load_transcriber(transcriber, models):
    assert transcriber.backend in BACKEND_NAMES
    assert transcriber.model_name == models(transcriber.backend)


def test_two_seconds_give_a_transcript_with_a_detected_language(transcriber):
    transcript = transcriber.transcribe(tone(2.0), GREEDY)
    assert_well_formed(transcript, 2.0)
    assert 0.0 < transcript.language_probability <= 1.0


def test_45_seconds_are_transcribed_whole(transcriber):
    transcript = transcriber.transcribe(tone(45.0, seed=1), GREEDY)
    assert_well_formed(transcript, 45.0)


def test_a_forced_language_is_reported_back(transcriber):
    transcript = transcriber.transcribe(tone(2.0), TranscribeOptions(language="fr", beam_size=1))
    assert_well_formed(transcript, 2.0)
    assert transcript.language == "fr" and transcript.language_probability is None


def test_translate_runs(transcriber):
    transcript = transcriber.transcribe(tone(2.0), TranscribeOptions(language="de", task="translate", beam_size=1))
    assert_well_formed(transcript, 2.0)
    assert transcript.language == "de", "the language reported is the one spoken, not the English written"


@pytest.mark.parametrize("level", [0.0, 1e-4])
def test_silence_is_no_speech(transcriber, level):
    quiet = (level * np.random.default_rng(2).standard_normal(3 * SAMPLE_RATE_HZ)).astype(np.float32)
    transcript = transcriber.transcribe(quiet)
    assert transcript.text == "" and not transcript.has_speech and transcript.segments == ()
    assert transcript.duration == pytest.approx(3.0)
    assert transcriber.transcribe(quiet, TranscribeOptions(language="es")).language == "es"


def test_an_unknown_language_is_refused(transcriber):
    with pytest.raises(SpeechError, match="does not know the language 'qq'"):
        transcriber.transcribe(tone(1.0), TranscribeOptions(language="qq"))


def test_stereo_samples_are_refused(transcriber):
    with pytest.raises(SpeechError, match="mono"):
        transcriber.transcribe(np.zeros((2, SAMPLE_RATE_HZ), np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_missing_local_path_is_a_clear_error(backend, tmp_path):
    missing = tmp_path / "nowhere" / ("model" if backend == "transformers" else "model.pt")
    with pytest.raises(SpeechError, match="does not exist"):
        load_transcriber(SpeechModelSpec(backend=backend, model=str(missing)))


# --- transformers only


def test_hf_unavailable_hub_model_says_what_to_do(monkeypatch):
    import huggingface_hub.constants

    # As with HF_HUB_OFFLINE=1: no request leaves, and none waits for retries on a network that isn't there.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SpeechError) as error:
        load_transcriber(SpeechModelSpec(backend="transformers", model="assistant-tests/no-such-whisper"))
    message = str(error.value)
    advice = ("not in the local Hugging Face cache", "HF_HUB_OFFLINE is set", "hf download", "local model directory")
    assert all(words in message for words in advice), message


def test_hf_size_names_are_hub_ids():
    from assistant.speech.transformers_whisper import resolve_source

    assert resolve_source("large-v3-turbo") == resolve_source("turbo") == "openai/whisper-large-v3-turbo"
    assert resolve_source("base.en") == "openai/whisper-base.en"
    assert resolve_source("distil-whisper/distil-large-v3") == "distil-whisper/distil-large-v3"


def test_hf_a_directory_that_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(SpeechError, match="no config.json"):
        load_transcriber(SpeechModelSpec(backend="transformers", model=str(tmp_path)))


def test_cuts_for_batching_fall_in_pauses():
    from assistant.speech.transformers_whisper import WINDOW_SAMPLES, cut_points

    audio = tone(70.0)
    audio[int(27.5 * SAMPLE_RATE_HZ) : int(27.6 * SAMPLE_RATE_HZ)] = 0.0  # a 100-ms pause
    ranges = cut_points(audio)
    assert ranges[0][0] == 0 and ranges[-1][1] == audio.size
    assert all(end == next_start for (_, end), (next_start, _) in zip(ranges, ranges[1:]))
    assert all(end - start <= WINDOW_SAMPLES for start, end in ranges)
    assert 27.5 <= ranges[0][1] / SAMPLE_RATE_HZ <= 27.6
    assert cut_points(np.zeros(40 * SAMPLE_RATE_HZ, np.float32))[0][1] > 29.9 * SAMPLE_RATE_HZ, "as long as allowed"


def test_hf_batched_long_form_skips_silent_pieces(models):
    from assistant.speech.transformers_whisper import cut_points

    spec = SpeechModelSpec(backend="transformers", model=models("transformers"), extra={"batch_size": 2})
    batched = load_transcriber(spec)
    audio = tone(75.0, seed=3)
    audio[int(28.0 * SAMPLE_RATE_HZ) : int(62.0 * SAMPLE_RATE_HZ)] = 0.0
    silent = [(start, end) for start, end in cut_points(audio) if not audio[start:end].any()]
    assert len(silent) == 1, "the second of three pieces is silent"
    transcript = batched.transcribe(audio, GREEDY)
    assert_well_formed(transcript, 75.0)
    start_s, end_s = (sample / SAMPLE_RATE_HZ for sample in silent[0])
    assert not any(start_s < segment.start < end_s for segment in transcript.segments)


# --- openai-whisper only


@needs_openai_whisper
def test_openai_unknown_model_name_lists_the_names():
    with pytest.raises(SpeechError, match="unknown openai-whisper model 'huge'.*large-v3-turbo"):
        load_transcriber(SpeechModelSpec(backend="openai-whisper", model="huge"))


@needs_openai_whisper
def test_openai_named_model_without_network_says_what_to_do(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    spec = SpeechModelSpec(backend="openai-whisper", model="tiny", extra={"download_root": str(tmp_path)})
    with pytest.raises(SpeechError, match="could not be downloaded.*give a local .pt checkpoint"):
        load_transcriber(spec)


class RunsCodeWhenUnpickled:
    """What a malicious checkpoint could hold: unpickling it calls os.mkdir(marker)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@needs_openai_whisper
def test_openai_checkpoint_is_loaded_with_weights_only(models, tmp_path):
    checkpoint = torch.load(models("openai-whisper"), weights_only=True)
    marker = tmp_path / "code-ran"
    checkpoint["extra"] = RunsCodeWhenUnpickled(marker)
    unsafe = tmp_path / "unsafe.pt"
    torch.save(checkpoint, unsafe)
    with pytest.raises(SpeechError, match="pickled Python objects"):
        load_transcriber(SpeechModelSpec(backend="openai-whisper", model=str(unsafe)))
    assert not marker.exists(), "the checkpoint's code ran"


@needs_openai_whisper
def test_openai_a_file_that_is_not_a_whisper_checkpoint_is_refused(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(SpeechError, match="not an openai-whisper checkpoint"):
        load_transcriber(SpeechModelSpec(backend="openai-whisper", model=str(other)))
