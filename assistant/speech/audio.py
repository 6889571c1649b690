"""Untrusted bytes -> validated audio: 16 kHz mono float32 samples in [-1, 1], what Whisper expects.

Decoded with PyAV (FFmpeg's libraries, already a dependency of faster-whisper). The size in bytes is
checked before decoding, the duration twice: from what the container declares, and again while
decoding, which stops as soon as the limit is passed (a file can lie about its duration, and a few
MiB of Opus or FLAC silence can hold hours of audio). Only the containers people actually send are
opened at all: FFmpeg can read hundreds of formats, and each one it reads is attack surface.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from ..errors import MediaError, MediaTooLargeError
from ..media import MiB, read_untrusted_file, too_big_message

SAMPLE_RATE = 16_000  # Hz, what Whisper expects
SUPPORTED = "wav, flac, mp3, ogg/opus, webm, m4a"  # for the user: what they can send
# FFmpeg demuxer names: wav, flac, mp3; ogg (vorbis, opus); matroska,webm (what browsers record
# with MediaRecorder); mov,mp4,m4a (phones' voice memos: AAC or ALAC); aac (raw ADTS streams).
AUDIO_DEMUXERS = ("wav", "flac", "mp3", "ogg", "matroska", "webm", "mov", "mp4", "m4a", "aac")
# The image formats of media.IMAGE_FORMATS are let through the demuxer too, only so that a photo
# sent as audio is refused as "no audio track" rather than as an unknown format.
IMAGE_DEMUXERS = ("png_pipe", "jpeg_pipe", "gif", "webp_pipe", "bmp_pipe", "tiff_pipe")
OPEN_OPTIONS = {"format_whitelist": ",".join(AUDIO_DEMUXERS + IMAGE_DEMUXERS)}
# FFmpeg's mono downmix adds stereo channels at 1/sqrt(2) each (0.71 * (L + R)), which is louder than
# either channel and can pass 1.0; capping the mixing matrix's row sum at 1 makes it the average.
DOWNMIX_OPTIONS = {"rematrix_maxval": "1.0"}
# A recording cut short (an interrupted upload, a recorder killed before it finished the file) is
# decoded as far as it goes: its start still carries most of what was said. But when less than this
# fraction of the declared duration decodes, a transcript would answer a question the user did not
# finish, so it is refused and they can send it again. Not 1.0: durations estimated from the bit
# rate (MP3 without a Xing header, raw AAC) are approximate. Truncated WAV and Ogg cannot be told
# apart from short ones (FFmpeg derives their duration from the data present), so they always pass.
MIN_DECODED_FRACTION = 0.5
# What av.open raises for bytes no whitelisted demuxer recognises (or whose header is damaged beyond
# recognition, like an M4A cut before its index), and for a format outside the whitelist.
UNREADABLE = (av.error.InvalidDataError, av.error.ArgumentError)


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int = 25 * MiB
    max_seconds: float = 600.0  # 10 minutes

    @classmethod
    def from_settings(cls, settings) -> "AudioLimits":
        defaults = cls()
        return cls(
            getattr(settings, "max_audio_bytes", defaults.max_bytes),
            getattr(settings, "max_audio_seconds", defaults.max_seconds),
        )


def read_audio_file(path: str | os.PathLike, limits: AudioLimits = AudioLimits()) -> np.ndarray:
    """Decode an audio file from disk (see `decode_audio`); the file name prefixes every error."""
    return read_untrusted_file(path, limits.max_bytes, lambda data: decode_audio(data, limits))


def decode_audio(data: bytes, limits: AudioLimits = AudioLimits()) -> np.ndarray:
    """Validate and decode untrusted audio bytes (any supported container, sample rate and channel
    count) into samples of shape (n,): float32, mono (the channels averaged), SAMPLE_RATE Hz, in [-1, 1]."""
    if not data:
        raise MediaError("the audio file is empty")
    if len(data) > limits.max_bytes:
        raise MediaTooLargeError(too_big_message(len(data), limits.max_bytes))
    with _open(data) as container:
        stream = _audio_stream(container)
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > limits.max_seconds:
            raise MediaTooLargeError(_too_long(limits.max_seconds, declared))
        samples = _decode(container, stream, limits)
    if not samples.size:
        raise MediaError("the audio data is corrupt or truncated (no audio could be decoded)")
    if declared is not None and duration_seconds(samples) < MIN_DECODED_FRACTION * declared:
        raise MediaError(
            f"the audio data is corrupt or truncated (only {duration_seconds(samples):.1f} "
            f"of {declared:.1f} seconds could be decoded)"
        )
    # Lossy decoders (MP3, AAC, Opus) can overshoot full scale slightly on loud material.
    return np.clip(samples, -1.0, 1.0, out=samples)


def duration_seconds(samples: np.ndarray) -> float:
    """The duration in seconds of samples of shape (n,) at SAMPLE_RATE Hz."""
    return samples.shape[-1] / SAMPLE_RATE


def _open(data: bytes) -> av.container.InputContainer:
    try:
        return av.open(io.BytesIO(data), metadata_errors="ignore", options=OPEN_OPTIONS)
    except UNREADABLE:
        raise MediaError(
            f"not an audio file we can read (unknown format or damaged header; supported: {SUPPORTED})"
        ) from None
    except av.error.FFmpegError as error:
        # A header that ends early (EOFError) or asks for absurd allocations (MemoryError), and
        # whatever else a damaged header makes a demuxer return (fuzzing gave EIO): all damage.
        raise MediaError(f"the audio data is corrupt or truncated ({_reason(error)})") from None


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise MediaError("the file has no audio track")
    stream = container.streams.audio[0]
    if stream.codec_context is None:  # PyAV found no decoder for the codec the container names
        raise MediaError(f"not an audio file we can read (unknown audio codec; supported: {SUPPORTED})")
    return stream


def _declared_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    """The audio track's duration as the container states it, or None (webm from MediaRecorder has none)."""
    # The stream's own duration first: a long video with a short soundtrack is a short recording.
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _decode(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, limits: AudioLimits
) -> np.ndarray:
    """All of `stream` as float32 mono at SAMPLE_RATE, shape (n,); stops once past limits.max_seconds."""
    chunks = list(_resampled(_limited(_frames(container, stream), limits.max_seconds)))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _limited(frames: Iterator[av.AudioFrame], max_seconds: float) -> Iterator[av.AudioFrame]:
    """`frames`, refused as soon as their total duration passes `max_seconds`. Counted on the decoded
    frames, before resampling: one frame that declares a sample rate of 1 Hz would otherwise be
    upsampled into gigabytes before any count of the output could stop it."""
    seconds = 0.0
    for frame in frames:
        if frame.sample_rate <= 0:  # a damaged header; there is nothing to resample from
            continue
        seconds += frame.samples / frame.sample_rate
        if seconds > max_seconds:
            raise MediaTooLargeError(_too_long(max_seconds))
        yield frame


def _frames(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> Iterator[av.AudioFrame]:
    """The decoded frames of `stream`, skipping packets the decoder rejects: a damaged packet in the
    middle costs a few tens of milliseconds of audio, not the whole recording (as with ffmpeg's CLI).

    Any FFmpegError is caught here, not a list of them: on damaged input, demuxers and decoders
    return whatever error code is at hand (fuzzing AAC gave EPERM and undocumented codes besides
    InvalidDataError), and each means only "this packet, or the rest of the file, is unusable"."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError:
            # The demuxer gave up part way (the file ends mid-packet): keep what came before, and
            # let decode_audio judge whether that is enough (MIN_DECODED_FRACTION).
            return
        try:
            yield from packet.decode()
        except av.error.FFmpegError:
            continue


def _resampled(frames: Iterator[av.AudioFrame]) -> Iterator[np.ndarray]:
    """Each frame as float32 mono at SAMPLE_RATE, shape (n,). A stream may change its sample rate or
    channels part way (concatenated MP3s, chained Ogg); a resampler is set up for one input shape, so
    each change flushes the current one and starts another."""
    resampler, source = None, None
    for frame in frames:
        shape = (frame.format.name, frame.layout, frame.sample_rate)  # what AudioResampler insists on
        if shape != source:
            if resampler is not None:
                yield from _arrays(resampler.resample(None))
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE, options=DOWNMIX_OPTIONS)
            source = shape
        try:
            converted = resampler.resample(frame)
        except av.error.FFmpegError:
            # FFmpeg cannot mix down channels in no known order ("38 channels", from a damaged
            # header): skip the frame, and start afresh with the next one.
            resampler, source = None, None
            continue
        yield from _arrays(converted)
    if resampler is not None:
        yield from _arrays(resampler.resample(None))  # the samples it holds back for filtering


def _arrays(frames: list[av.AudioFrame]) -> Iterator[np.ndarray]:
    for frame in frames:
        yield frame.to_ndarray()[0]  # packed mono: shape (1, n) -> (n,)


def _reason(error: av.error.FFmpegError) -> str:
    return "the file ends early" if isinstance(error, av.error.EOFError) else error.strerror or type(error).__name__


def _too_long(limit: float, seconds: float | None = None) -> str:
    if seconds is None:  # found while decoding: how much longer is unknown, and not worth decoding
        return f"the recording is over the limit of {_duration(limit)}"
    return f"the recording is {_duration(seconds)} long, over the limit of {_duration(limit)}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} minutes" if seconds >= 60 else f"{seconds:.1f} seconds"


class StreamResampler:
    """A live recording's chunks (as a browser's microphone sends them: int16 or float, mono or
    [n, channels], at its own rate) -> float32 mono at SAMPLE_RATE. One resampler for the whole
    recording, so that no chunk boundary clicks."""

    def __init__(self, sample_rate: int):
        if not 8000 <= sample_rate <= 384_000:
            raise MediaError(f"the microphone's sample rate {sample_rate} Hz is not a rate audio is recorded at")
        self.sample_rate = sample_rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE, options=DOWNMIX_OPTIONS)
        self._pts = 0

    def resample(self, samples: np.ndarray) -> np.ndarray:
        channels = samples.reshape(samples.shape[0], -1) if samples.ndim > 1 else samples[:, None]
        if channels.dtype == np.int16:
            channels = channels.astype(np.float32) / 32768.0
        packed = np.ascontiguousarray(channels.astype(np.float32).reshape(1, -1))  # interleaved
        layout = "mono" if channels.shape[1] == 1 else "stereo"
        frame = av.AudioFrame.from_ndarray(packed, format="flt", layout=layout)
        frame.sample_rate, frame.pts = self.sample_rate, self._pts
        self._pts += channels.shape[0]
        return self._joined(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The samples the resampler holds back for filtering, at the end of the recording."""
        return self._joined(self._resampler.resample(None))

    @staticmethod
    def _joined(frames: list[av.AudioFrame]) -> np.ndarray:
        arrays = list(_arrays(frames))
        return np.concatenate(arrays) if arrays else np.zeros(0, np.float32)
