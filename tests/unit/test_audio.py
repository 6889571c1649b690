"""Audio is untrusted input: every container, sample rate and channel count people send becomes the
same 16 kHz mono float32 waveform, and every bad file is refused with a one-line reason."""

import functools
import io
import os
import random
import struct
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from assistant.errors import MediaError
from assistant.media import MiB
from assistant.speech.audio import SAMPLE_RATE, AudioLimits, decode_audio, duration_seconds, read_audio_file
from speech_samples import PHRASES, encode, needs_espeak, needs_ffmpeg, speak  # tests/ is on pytest's pythonpath

PHRASE = "Will it rain in London tomorrow?"
# Container and codec as browsers and phones send them: target suffix, extra ffmpeg arguments.
FORMATS = {
    "wav": (".wav", ()),
    "flac": (".flac", ()),
    "mp3": (".mp3", ()),
    "ogg-vorbis": (".ogg", ("-c:a", "libvorbis")),
    "ogg-opus": (".opus", ()),
    "webm-opus": (".webm", ()),
    "m4a-aac": (".m4a", ()),
}
RATES = (8_000, 44_100, 48_000)  # Hz: telephone, CD, and what browsers and phones record at
OPUS_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)  # Hz: all Opus can code; 44.1 kHz is refused by libopus
PADDING_SECONDS = 0.060  # encoder delay and end padding that decoders may leave in
AAC_FRAME = 1024  # samples at the source rate: an M4A may keep the whole last frame (128 ms at 8 kHz)
MAX_LAG = int(PADDING_SECONDS * SAMPLE_RATE)  # samples of misalignment searched for
SAME_SPEECH = 0.9  # band-limited normalized cross-correlation; measured 0.96..1.0, a different phrase 0.03
UPMIX_GAIN = 1 / np.sqrt(2)  # ffmpeg's `-ac 2` puts mono on both channels at -3 dB; their average keeps it


def assert_one_line(error: MediaError) -> None:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message, f"not a one-line reason: {message!r}"


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Write float samples in [-1, 1], shape (n,) or (n, channels), as 16-bit PCM WAV."""
    frames = samples.reshape(len(samples), -1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[1]), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes(np.round(np.clip(frames, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def tone(seconds: float, rate: int, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)


def streamed_webm(source: Path) -> bytes:
    """WebM/Opus written to a pipe, as MediaRecorder streams it: no declared duration, no index."""
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(source), "-c:a", "libopus", "-f", "webm", "pipe:1"]
    return subprocess.run(command, check=True, capture_output=True).stdout


def band_limited_similarity(samples: np.ndarray, reference: np.ndarray, cutoff_hz: float) -> tuple[float, int, float]:
    """Compare two 16 kHz signals on their content below `cutoff_hz` only.

    Returns (the peak normalized cross-correlation within +-MAX_LAG samples, the lag of that peak in
    samples, the gain: the ratio of their band-limited L2 norms). A correlation near 1 means the same
    waveform up to a shift and a gain, so the gain is returned for the caller to check too."""
    n = 1 << int(np.ceil(np.log2(len(samples) + len(reference))))  # zero-padded: no circular wrap
    band = np.fft.rfftfreq(n, 1 / SAMPLE_RATE) < cutoff_hz
    spectrum, reference_spectrum = np.fft.rfft(samples, n) * band, np.fft.rfft(reference, n) * band
    correlation = np.fft.irfft(spectrum * np.conj(reference_spectrum), n)
    lags = np.concatenate([correlation[: MAX_LAG + 1], correlation[-MAX_LAG:]])  # lags 0..+MAX, -MAX..-1
    energy, reference_energy = (
        np.linalg.norm(np.fft.irfft(spectrum, n)),
        np.linalg.norm(np.fft.irfft(reference_spectrum, n)),
    )
    best = int(np.argmax(lags))
    lag = best if best <= MAX_LAG else best - len(lags)
    return float(lags[best] / (energy * reference_energy)), lag, float(energy / reference_energy)


def fft_resample(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """An independent (ideal, brick-wall) resampler to check PyAV's against: keep the spectrum below
    the lower Nyquist frequency and transform back at the new length."""
    new_length = round(len(samples) * new_rate / rate)
    spectrum = np.fft.rfft(samples)[: min(len(samples), new_length) // 2 + 1]
    return np.fft.irfft(spectrum, new_length) * new_length / len(samples)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="module")
def phrase(workdir) -> Path:
    return speak(PHRASE, workdir / "phrase.wav")  # 22.05 kHz mono 16-bit


@pytest.fixture(scope="module")
def reference(phrase) -> np.ndarray:
    return decode_audio(phrase.read_bytes())


@pytest.fixture(scope="module")
def three_seconds(workdir) -> Path:
    return write_wav(workdir / "three.wav", tone(3.0, 22_050), 22_050)


# --- every format, rate and channel count -> the same waveform ------------------------------------


@needs_espeak
def test_the_wav_reference_matches_an_independent_resampler(phrase, reference):
    with wave.open(str(phrase)) as source:
        rate = source.getframerate()
        original = np.frombuffer(source.readframes(source.getnframes()), "<i2") / 32768.0
    expected = fft_resample(original, rate, SAMPLE_RATE)
    assert reference.dtype == np.float32 and reference.ndim == 1
    assert abs(len(reference) - len(expected)) <= 1
    similarity, lag, gain = band_limited_similarity(reference, expected, cutoff_hz=0.9 * SAMPLE_RATE / 2)
    assert similarity > 0.999 and lag == 0 and gain == pytest.approx(1.0, abs=0.01)


VARIANTS = [
    (name, rate, channels)
    for name in FORMATS
    for rate in RATES
    if "opus" not in name or rate in OPUS_RATES
    for channels in (1, 2)
]


@pytest.fixture(scope="module")
def encodings(phrase, workdir) -> dict[tuple[str, int, int], Path]:
    """The phrase in every variant, encoded in parallel (~0.1 s each, mostly ffmpeg starting up)."""

    def make(variant):
        name, rate, channels = variant
        suffix, extra = FORMATS[name]
        return encode(phrase, workdir / f"{name}-{rate}-{channels}{suffix}", rate, channels, extra)

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return dict(zip(VARIANTS, pool.map(make, VARIANTS)))


@needs_espeak
@needs_ffmpeg
@pytest.mark.parametrize(
    "name, rate, channels", VARIANTS, ids=[f"{n}-{r}-{('mono', 'stereo')[c - 1]}" for n, r, c in VARIANTS]
)
def test_every_format_decodes_to_the_same_speech(name, rate, channels, encodings, reference):
    samples = decode_audio(encodings[name, rate, channels].read_bytes())

    assert samples.dtype == np.float32 and samples.ndim == 1 and np.abs(samples).max() <= 1.0
    # Decoders trim the encoder's delay (the waveforms align) but may keep the last frame's padding.
    padding = max(PADDING_SECONDS, AAC_FRAME / rate if name == "m4a-aac" else 0.0)
    assert -PADDING_SECONDS <= duration_seconds(samples) - duration_seconds(reference) <= padding
    # At 8 kHz nothing above 4 kHz survives, so compare on the band both signals should carry: below
    # 90% of the lower Nyquist frequency (3.6 kHz, else 7.2 kHz), clear of the resamplers' roll-off.
    cutoff = 0.9 * min(rate, SAMPLE_RATE) / 2
    similarity, lag, gain = band_limited_similarity(samples, reference, cutoff)
    assert similarity > SAME_SPEECH, f"waveform differs: correlation {similarity:.3f} at lag {lag}"
    # Lossy codecs shave a few percent of the energy; averaging the channels must not add 3 dB.
    assert gain == pytest.approx(1.0 if channels == 1 else UPMIX_GAIN, rel=0.1)


@needs_espeak
@needs_ffmpeg
def test_a_streamed_webm_as_mediarecorder_sends_it_decodes(phrase, reference):
    samples = decode_audio(streamed_webm(phrase))
    assert abs(duration_seconds(samples) - duration_seconds(reference)) <= PADDING_SECONDS
    assert band_limited_similarity(samples, reference, 0.9 * SAMPLE_RATE / 2)[0] > SAME_SPEECH


@needs_espeak
def test_a_different_phrase_is_not_the_same_speech(reference, workdir):
    other = decode_audio(speak(PHRASES[5], workdir / "other.wav").read_bytes())
    assert band_limited_similarity(other, reference, 0.9 * SAMPLE_RATE / 2)[0] < 0.3  # the criterion discriminates


def test_stereo_channels_are_averaged(tmp_path):
    left = tone(1.0, 48_000, amplitude=0.8)
    for right, expected in ((np.zeros_like(left), 0.4), (-left, 0.0), (left, 0.8)):
        path = write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 48_000)
        samples = decode_audio(path.read_bytes())
        middle = samples[1000:-1000]  # clear of the resampler's edges
        assert np.abs(middle).max() == pytest.approx(expected, abs=0.01)


def test_silence_decodes_to_zeros_of_the_right_length(tmp_path):
    path = write_wav(tmp_path / "silence.wav", np.zeros((int(2.5 * 44_100), 2)), 44_100)
    samples = decode_audio(path.read_bytes())
    assert samples.dtype == np.float32 and len(samples) == pytest.approx(2.5 * SAMPLE_RATE, abs=2)
    assert not samples.any()


def test_full_scale_white_noise_decodes_within_range(tmp_path):
    noise = np.random.default_rng(0).uniform(-1, 1, int(2.5 * 48_000))
    samples = decode_audio(write_wav(tmp_path / "noise.wav", noise, 48_000).read_bytes())
    assert len(samples) == pytest.approx(2.5 * SAMPLE_RATE, abs=2)
    assert np.isfinite(samples).all() and np.abs(samples).max() <= 1.0  # the resampler's overshoot is clipped
    assert 0.2 < np.sqrt(np.mean(samples**2)) < 0.5  # RMS 0.58, a third of its power below 8 kHz: 0.33


def test_duration_seconds():
    assert duration_seconds(np.zeros(24_000, np.float32)) == 1.5


# --- bad files: one-line reasons ------------------------------------------------------------------


@pytest.fixture(scope="module")
def phrase_as(phrase, workdir):
    """phrase_as(".mp3") -> the phrase's bytes in the format the suffix names (44.1 kHz mono)."""

    @functools.cache
    def make(suffix: str) -> bytes:
        return encode(phrase, workdir / f"phrase-44100-mono{suffix}", 44_100, 1).read_bytes()

    return make


def head(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, "PNG")
    return buffer.getvalue()


UNREADABLE = (
    r"^not an audio file we can read \(unknown format or damaged header; "
    r"supported: wav, flac, mp3, ogg/opus, webm, m4a\)$"
)
CORRUPT = r"^the audio data is corrupt or truncated \(.+\)$"
MOSTLY_MISSING = r"^the audio data is corrupt or truncated \(only \d\.\d of \d\.\d seconds could be decoded\)$"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "^the audio file is empty$"),
        (b"Will it rain in London tomorrow?\n" * 20, UNREADABLE),
        (np.random.default_rng(0).bytes(4096), UNREADABLE),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(500), UNREADABLE),
        (png(), "^the file has no audio track$"),
    ],
    ids=["empty", "text", "random", "pdf", "image"],
)
def test_bad_bytes_are_refused_with_a_reason(data, reason):
    with pytest.raises(MediaError, match=reason) as caught:
        decode_audio(data)
    assert_one_line(caught.value)


@needs_espeak
@needs_ffmpeg
@pytest.mark.parametrize(
    "suffix, damage, reason",
    [
        (".aiff", lambda data: data, UNREADABLE),  # FFmpeg reads AIFF, but it is not on the whitelist
        (".flac", lambda data: data[:300], CORRUPT),  # cut inside the header
        (".mp3", lambda data: head(data, 1 / 3), MOSTLY_MISSING),
        (".m4a", lambda data: head(data, 0.9), UNREADABLE),  # ffmpeg writes the index (moov) last
        (".wav", lambda data: data[:44], UNREADABLE),  # a header and no samples
    ],
    ids=["aiff", "cut-in-header", "mostly-missing", "m4a-without-index", "wav-header-only"],
)
def test_damaged_recordings_are_refused_with_a_reason(suffix, damage, reason, phrase_as):
    with pytest.raises(MediaError, match=reason) as caught:
        decode_audio(damage(phrase_as(suffix)))
    assert_one_line(caught.value)


@needs_ffmpeg
def test_a_video_without_sound_has_no_audio_track(tmp_path):
    video = tmp_path / "silent.mp4"
    command = [
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x64:duration=1",
        str(video),
    ]
    subprocess.run(command, check=True, capture_output=True)
    with pytest.raises(MediaError, match="^silent.mp4: the file has no audio track$"):
        read_audio_file(video)


@needs_espeak
@needs_ffmpeg
def test_a_recording_cut_near_its_end_keeps_what_is_there(phrase_as, reference):
    # The module's decision (MIN_DECODED_FRACTION): most of a question is still worth transcribing.
    samples = decode_audio(head(phrase_as(".mp3"), 0.9))
    assert 0.5 * duration_seconds(reference) < duration_seconds(samples) < duration_seconds(reference)


@needs_espeak
@needs_ffmpeg
def test_damaged_files_never_escape_as_anything_but_a_media_error(encodings):
    """Seeded byte overwrites (in the header, or anywhere) and truncations of valid files: a sample
    like the ~20,000 cases that, during development, found EPERM, EIO, undefined error codes and
    frames claiming 38 channels escaping from FFmpeg."""
    sources = [encodings[name, 48_000, 2].read_bytes() for name in FORMATS]
    for seed in range(150):
        rng = random.Random(seed)
        data = bytearray(rng.choice(sources))
        for _ in range(rng.choice((1, 4, 32))):
            position = rng.randrange(min(len(data), rng.choice((300, len(data)))))
            data[position] = rng.getrandbits(8)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        try:
            samples = decode_audio(bytes(data))
        except MediaError as error:
            assert_one_line(error)
        else:
            assert samples.dtype == np.float32 and samples.ndim == 1 and np.abs(samples).max() <= 1.0


# --- files on disk --------------------------------------------------------------------------------


@needs_espeak
def test_read_audio_file_reads_a_file(phrase, reference):
    np.testing.assert_array_equal(read_audio_file(phrase), reference)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("question.wav", b"this is a text file renamed to .wav\n", "^question.wav: not an audio file we can read"),
        ("empty.webm", b"", "^empty.webm: the audio file is empty$"),
    ],
)
def test_read_audio_file_names_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MediaError, match=reason) as caught:
        read_audio_file(path)
    assert_one_line(caught.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(MediaError, match=r"^missing.wav: cannot read the file \(No such file or directory\)$"):
        read_audio_file(tmp_path / "missing.wav")


# --- limits ---------------------------------------------------------------------------------------


def test_too_many_bytes_are_refused_before_decoding():
    # Zero bytes would decode as "not an audio file": the size is what is reported, so it came first.
    with pytest.raises(MediaError, match=r"^the file is 3.0 MiB, over the limit of 2.0 MiB$"):
        decode_audio(bytes(3 * MiB), AudioLimits(max_bytes=2 * MiB))


def test_a_file_too_big_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.wav"
    with path.open("wb") as sparse:
        sparse.truncate(1024 * MiB)  # 1 GiB that takes no disk, and would take seconds to read
    with pytest.raises(MediaError, match=r"^huge.wav: the file is 1024.0 MiB, over the limit of 25.0 MiB$"):
        read_audio_file(path)


def test_a_recording_over_the_duration_limit_is_refused_from_its_header(three_seconds):
    with pytest.raises(
        MediaError, match=r"^three.wav: the recording is 3.0 seconds long, over the limit of 2.0 seconds$"
    ):
        read_audio_file(three_seconds, AudioLimits(max_seconds=2.0))
    assert duration_seconds(read_audio_file(three_seconds, AudioLimits(max_seconds=3.5))) == pytest.approx(3.0)


def test_long_recordings_are_measured_in_minutes(tmp_path):
    path = write_wav(tmp_path / "long.wav", np.zeros(90 * 8_000), 8_000)
    with pytest.raises(MediaError, match=r"^the recording is 1.5 minutes long, over the limit of 1.0 minutes$"):
        decode_audio(path.read_bytes(), AudioLimits(max_seconds=60.0))


@needs_ffmpeg
def test_a_recording_with_no_declared_duration_is_stopped_while_decoding(three_seconds):
    data = streamed_webm(three_seconds)
    with pytest.raises(MediaError, match=r"^the recording is over the limit of 2.0 seconds$"):
        decode_audio(data, AudioLimits(max_seconds=2.0))


@needs_ffmpeg
def test_a_recording_that_lies_about_its_duration_is_stopped_while_decoding(three_seconds, workdir):
    data = bytearray(encode(three_seconds, workdir / "liar.webm", 48_000, 1).read_bytes())
    # Matroska's Duration element: ID 0x4489, size 8, a big-endian double in milliseconds.
    at = data.index(b"\x44\x89\x88")
    data[at + 3 : at + 11] = struct.pack(">d", 1000.0)
    assert duration_seconds(decode_audio(bytes(data), AudioLimits(max_seconds=5.0))) == pytest.approx(3.0, abs=0.06)
    with pytest.raises(MediaError, match=r"^the recording is over the limit of 2.0 seconds$"):
        decode_audio(bytes(data), AudioLimits(max_seconds=2.0))  # its claim of 1 s passes the header check


def test_limits_come_from_the_settings():
    assert AudioLimits.from_settings(SimpleNamespace(max_audio_bytes=MiB, max_audio_seconds=30.0)) == AudioLimits(
        MiB, 30.0
    )
    assert AudioLimits.from_settings(SimpleNamespace()) == AudioLimits(25 * MiB, 600.0)  # settings from before audio
