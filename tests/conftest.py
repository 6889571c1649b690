"""Shared fixtures: tiny random models of the real architectures, built once per test session into
a temporary cache and loaded through the project's real loading code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image as PILImage

from assistant.core import Assistant
from assistant.engine import Engine
from assistant.models import fast_decode, load_model
from assistant.settings import load_settings


@pytest.fixture(scope="session", autouse=True)
def compiled_steps_without_autotuning():
    """Steps compiled in this process or packaged are built without timing each GEMM choice (minutes
    of a test run): the tests check what a step computes; which kernel is fastest is the benchmarks'."""
    settings = fast_decode.INDUCTOR_SETTINGS
    fast_decode.INDUCTOR_SETTINGS = {**settings, "max_autotune": False}
    yield
    fast_decode.INDUCTOR_SETTINGS = settings


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("assistant-cache")
    # Subprocesses (the CLI tests) share the built tiny models through the environment.
    os.environ["ASSISTANT_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def make_settings(cache_dir):
    def make(**overrides):
        values = {"profile": "tiny", "cache_dir": str(cache_dir), **overrides}
        return load_settings(cli=values, env={}, config_file=None)

    return make


@pytest.fixture(scope="session")
def tiny_model(make_settings):
    return load_model(make_settings())


@pytest.fixture(scope="session")
def engine(tiny_model):
    engine = Engine(tiny_model, queue_size=4)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tiny_assistant(make_settings, engine):
    return Assistant(make_settings(), engine)


@pytest.fixture
def photo_files(tmp_path):
    """Three small photos of different sizes and colours, as files a user would upload."""
    paths = []
    for name, size, colour in (
        ("red.png", (64, 48), (220, 30, 30)),
        ("green.jpg", (40, 40), (30, 200, 60)),
        ("blue.png", (30, 70), (20, 40, 230)),
    ):
        path = tmp_path / name
        PILImage.new("RGB", size, colour).save(path)
        paths.append(path)
    return paths


# The real photos scikit-image and matplotlib ship (no download).
@pytest.fixture(scope="session")
def photos() -> dict[str, PILImage.Image]:
    import matplotlib
    from skimage import data

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return {
        "chelsea": PILImage.fromarray(data.chelsea()),
        "coffee": PILImage.fromarray(data.coffee()),
        "astronaut": PILImage.fromarray(data.astronaut()),
        "rocket": PILImage.fromarray(data.rocket()),
        "motorcycle_left": PILImage.fromarray(data.stereo_motorcycle()[0]),
        "grace_hopper": PILImage.open(hopper),
    }


class RecordedReplies(list):
    """The conversations an assistant was asked to answer, in order; `options` holds each one's
    generation overrides."""

    def __init__(self):
        super().__init__()
        self.options: list[dict] = []


@pytest.fixture
def record_replies(monkeypatch):
    """record_replies(assistant) -> RecordedReplies, filled as the assistant is asked to reply."""

    def start(assistant) -> RecordedReplies:
        recorded = RecordedReplies()
        original = assistant.reply

        def recording(conversation, **overrides):
            recorded.append(conversation)
            recorded.options.append(overrides)
            return original(conversation, **overrides)

        monkeypatch.setattr(assistant, "reply", recording)
        return recorded

    return start


@pytest.fixture(scope="session")
def spoken(tmp_path_factory):
    """spoken(text) -> espeak-ng saying `text`, read back through speech.audio (16 kHz mono float32),
    made once per text."""
    from assistant.speech.audio import read_audio_file
    from speech_samples import speak  # tests/ is on pytest's pythonpath

    folder = tmp_path_factory.mktemp("spoken")
    made = {}

    def say(text: str):
        if text not in made:
            made[text] = read_audio_file(speak(text, folder / f"{len(made)}.wav"))
        return made[text]

    return say
