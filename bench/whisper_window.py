"""How short can Whisper's encoder window be for a voice question? Latency and word error rate of the
default speech backend (faster-whisper, Whisper base, int8, beam 5) for spoken questions of 1-5 s,
with the encoder on the full 30-s window and on shorter windows fitted to each clip.

    python -m bench.whisper_window [--threads 2] [--floors 2000,1500,1200,1000,800,600] [--margins 200]
                                   [--piper-takes 1] [--question TEXT ...] [--silence 0.3,0.6] [--beam 5]
                                   [--detect] [--out FILE]

The questions are spoken by two voices at several speeds: espeak-ng (en-us at 130 and 175 words a
minute, en-gb at 155) and the piper voice the app speaks with (speed 0.9, 1.0, 1.25), each clip with
0.3 s of silence before and 0.6 s after, as a microphone records it (`--silence 0,0`: none, as the
spoken-reply tests feed the voice's own output back to Whisper). The piper voice adds noise of
its own, so each take of a question differs: `--piper-takes` speaks each one several times
(`--question`, repeated, replaces the questions, to study one that goes wrong now and then). Each
window setting transcribes
every clip through the project's transcriber (`FasterWhisperTranscriber.transcribe`, VAD on, the
app's default); one warm-up run first. Rows: the full 30-s path (the baseline, same run) and each
floor and margin (window = max(floor, speech + margin)). WER pools all clips (Whisper's English
normaliser); "doubled or lost" counts transcripts with over 1.5 times the words spoken (Whisper said
the question twice) or none.
With `--detect`, the language is detected on the window instead of given, and the table also
counts clips whose language was detected wrong.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np

from assistant.speech.audio import decode_audio
from assistant.speech.faster_whisper import FasterWhisperTranscriber
from assistant.speech.synthesizer import encode_speech, load_synthesizer
from assistant.speech.transcriber import SpeechModelSpec, TranscribeOptions
from assistant.speech.window import ShortWindow

from . import tts
from .common import command_line, load_average, machine_section, markdown_table, percentile, publish, timed
from .speech import normalizer

SAMPLE_RATE = 16_000
LEAD_S, TAIL_S = 0.3, 0.6  # silence around each question, as a microphone records it
# Extra questions, short and long, so that clips span 1-5 s at every speed.
MORE_QUESTIONS = (
    "What is this?",
    "Read it to me.",
    "Is it a dog?",
    "Describe this photo.",
    "What breed is this dog and how old do you think it is?",
    "Could you tell me which of the three buildings in this picture is the oldest one?",
    "How much flour do I need for twelve pancakes?",
    "What does the red sign on the left side of the road say?",
    "Count the apples on the table, please.",
    "Why is the sky blue in the afternoon but orange at sunset?",
    # Some piper takes of this one came back said twice on a 6-s window (the spoken-reply test caught it).
    "The library has a large collection of old maps.",
)
ESPEAK_VOICES = (("en-us", 130), ("en-us", 175), ("en-gb", 155))
PIPER_SPEEDS = (0.9, 1.0, 1.25)


@dataclass
class Clip:
    text: str
    voice: str
    samples: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass
class Row:
    name: str
    times: list[float]
    texts: list[str]
    languages: list[str]


def clips(
    questions: tuple[str, ...] = (), piper_takes: int = 1, lead_s: float = LEAD_S, tail_s: float = TAIL_S
) -> list[Clip]:
    """Every question (default: the built-in ones) in every voice (`piper_takes` times in piper's),
    with a microphone's silence around it."""
    questions = questions or (*tts.QUESTIONS, *MORE_QUESTIONS)
    lead, tail = np.zeros(int(lead_s * SAMPLE_RATE), np.float32), np.zeros(int(tail_s * SAMPLE_RATE), np.float32)
    made = []
    for voice, wpm in ESPEAK_VOICES:
        made += [Clip(q, f"espeak-ng {voice} {wpm} wpm", tts.speak(q, voice, wpm)) for q in questions]
    piper = load_synthesizer()
    for speed in PIPER_SPEEDS:
        for q in questions * piper_takes:
            wav, _ = encode_speech(piper.synthesize(q, speed), "wav")
            made.append(Clip(q, f"piper {piper.name} x{speed}", decode_audio(wav)))
    return [Clip(c.text, c.voice, np.concatenate([lead, c.samples, tail])) for c in made]


def measure(
    transcriber: FasterWhisperTranscriber,
    window: ShortWindow | None,
    audio: list[Clip],
    language: str | None,
    beam: int,
) -> Row:
    transcriber.short_window = window or ShortWindow()
    options = TranscribeOptions(
        language=language, beam_size=beam, short_beam_size=beam, short_window=window is not None
    )
    transcriber.transcribe(audio[0].samples, options)  # warm-up
    times, texts, languages = [], [], []
    for clip in audio:
        transcript, seconds = timed(lambda: transcriber.transcribe(clip.samples, options))
        times.append(seconds)
        texts.append(transcript.text)
        languages.append(transcript.language)
    name = (
        "30 s (full window)"
        if window is None
        else f"floor {window.floor_frames / 100:g} s, margin {window.margin_frames / 100:g} s"
    )
    return Row(name, times, texts, languages)


def table(rows: list[Row], audio: list[Clip], normalize, detect: bool) -> list[str]:
    references = [normalize(clip.text) for clip in audio]
    header = ["encoder window", "median s", "p95 s", "vs full (median)", "WER", "doubled or lost"]
    if detect:
        header.append("wrong language")
    cells = []
    for row in rows:
        heard = [normalize(text) for text in row.texts]
        cells.append(
            [
                row.name,
                f"{statistics.median(row.times):.3f}",
                f"{percentile(row.times, 95):.3f}",
                f"{statistics.median(rows[0].times) / statistics.median(row.times):.1f}x",
                f"{jiwer.wer(references, [text or '-' for text in heard]):.3f}",
                sum(is_doubled_or_lost(reference, text) for reference, text in zip(references, heard)),
            ]
        )
        if detect:
            cells[-1].append(sum(language != "en" for language in row.languages))
    return markdown_table(header, cells, "l" + "r" * (len(header) - 1))


def is_doubled_or_lost(reference: str, heard: str) -> bool:
    """Whether Whisper said a question twice (over 1.5 times its words) or not at all."""
    return not heard or len(heard.split()) > 1.5 * len(reference.split())


def by_voice(rows: list[Row], audio: list[Clip], normalize) -> list[str]:
    """WER per voice: does the floor hurt one voice or speed more than the others?"""
    voices = list(dict.fromkeys(clip.voice for clip in audio))
    picked = {voice: [i for i, clip in enumerate(audio) if clip.voice == voice] for voice in voices}

    def wer(row: Row, voice: str) -> str:
        references = [normalize(audio[i].text) for i in picked[voice]]
        return f"{jiwer.wer(references, [normalize(row.texts[i]) or '-' for i in picked[voice]]):.3f}"

    cells = [[row.name, *(wer(row, voice) for voice in voices)] for row in rows]
    return markdown_table(["encoder window", *voices], cells, "l" + "r" * len(voices))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--floors", default="2000,1500,1200,1000,800,600", help="window floors to try, in feature frames (100 a second)"
    )
    parser.add_argument("--margins", default="200", help="window margins after the speech to try, in feature frames")
    parser.add_argument(
        "--piper-takes", type=int, default=1, help="takes of each question in the piper voice (each differs)"
    )
    parser.add_argument(
        "--question", action="append", help="a question to speak instead of the built-in ones (repeatable)"
    )
    parser.add_argument(
        "--silence", default=f"{LEAD_S},{TAIL_S}", help="seconds of silence before and after each question"
    )
    parser.add_argument("--detect", action="store_true", help="detect the language on the window instead of giving it")
    parser.add_argument("--beam", type=int, default=5, help="beam size (1: greedy)")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    args = parser.parse_args(argv)
    load_before = load_average()
    lead_s, tail_s = (float(seconds) for seconds in args.silence.split(","))
    audio = clips(tuple(args.question or ()), args.piper_takes, lead_s, tail_s)
    seconds = [clip.seconds for clip in audio]
    print(f"{len(audio)} clips, {min(seconds):.1f}-{max(seconds):.1f} s with silence", file=sys.stderr)
    transcriber = FasterWhisperTranscriber.load(SpeechModelSpec(model="base", device="cpu", cpu_threads=args.threads))
    language = None if args.detect else "en"
    windows = [
        None,
        *(
            ShortWindow(int(floor), int(margin))
            for floor in args.floors.split(",")
            for margin in args.margins.split(",")
        ),
    ]
    rows = []
    for window in windows:
        rows.append(measure(transcriber, window, audio, language, args.beam))
        print(f"{rows[-1].name}: median {statistics.median(rows[-1].times):.3f} s", file=sys.stderr)
    normalize, normalizer_name = normalizer()
    voices = len(ESPEAK_VOICES) + len(PIPER_SPEEDS)
    report = [
        "# Whisper's encoder window for short questions",
        "",
        command_line("bench.whisper_window", argv),
        "",
        f"{len(audio)} spoken questions ({len(set(clip.text for clip in audio))} texts x {voices} "
        f"voices and speeds, {args.piper_takes} take(s) each in piper's), {min(seconds):.1f}-{max(seconds):.1f} s "
        f"each including {lead_s:g} s of silence before and {tail_s:g} s after; Whisper base, int8, beam {args.beam}, "
        f"VAD on, language {'detected' if args.detect else 'given (en)'}; window = max(floor, speech + margin). "
        f"Times are per question, transcription only (the audio is already decoded). WER: {normalizer_name}.",
        "",
        *table(rows, audio, normalize, args.detect),
        "",
        "WER by voice:",
        "",
        *by_voice(rows, audio, normalize),
        "",
        *machine_section(args.threads, load_before),
    ]
    publish("\n".join(report), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
