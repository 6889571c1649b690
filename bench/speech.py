"""Real-time factor of each speech backend on the same Whisper base weights, on CPU.

    python -m bench.speech [--seconds 30] [--threads 2] [--out bench/results/speech.md]

About 30 s of espeak-ng speech (user-like questions with short pauses) is transcribed by each
backend through the project's `load_transcriber`: faster-whisper int8 and float32 on the packaged
CTranslate2 model, transformers fp32 and openai-whisper fp32 on the same weights converted by
tools/whisper_convert.py. Options: language "en", beam 5, VAD off, so that every backend decodes
the same audio the same way (only faster-whisper has VAD; one extra row shows it on, the app's
default). Each backend is loaded, warmed up with one run, then timed over --runs runs; the table
has the median. RTF = transcription seconds / audio seconds (below 1 is faster than real time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import torch

from assistant.speech.transcriber import SpeechError, SpeechModelSpec, TranscribeOptions, load_transcriber
from tools import whisper_convert

from . import tts
from .common import command_line, load_average, machine_details, markdown_table, publish, timed

PAUSE_S = 0.6  # silence between two questions, seconds: a short breath, not a VAD-sized gap
BEAM_SIZE = 5
LANGUAGE = "en"
BASELINE = "transformers"  # the speed-ups are relative to this backend
# The project's targets for the default backend (faster-whisper int8 on CPU).
TARGET_RTF = 0.15
TARGET_SPEEDUP = 2.0


@dataclass(frozen=True)
class Case:
    """One row of the table: a backend, how it is loaded, and whether VAD is on."""

    label: str
    compute: str  # as shown in the table
    spec: SpeechModelSpec
    vad: bool = False


@dataclass(frozen=True)
class Audio:
    """The benchmark audio and what was said in it."""

    samples: np.ndarray  # float32 [n], 16 kHz mono
    text: str  # what espeak-ng was given

    @property
    def seconds(self) -> float:
        return len(self.samples) / tts.SAMPLE_RATE


@dataclass(frozen=True)
class Result:
    case: Case
    load_s: float | None = None  # seconds to load the model (load_transcriber)
    runs_s: tuple[float, ...] = ()  # seconds per timed run
    text: str = ""
    error: str = ""  # why the backend could not run; the other fields are then empty

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs_s)


def cases(ct2_dir: Path, hf_dir: Path, pt_file: Path, threads: int) -> list[Case]:
    """The backends to compare, all on the base weights of `ct2_dir`, on CPU with `threads` threads."""

    def spec(backend: str, model: Path, compute_type: str) -> SpeechModelSpec:
        return SpeechModelSpec(
            backend=backend, model=str(model), device="cpu", compute_type=compute_type, cpu_threads=threads
        )

    return [
        Case("faster-whisper", "int8", spec("faster-whisper", ct2_dir, "int8")),
        Case("faster-whisper", "float32", spec("faster-whisper", ct2_dir, "float32")),
        Case("transformers", "float32", spec("transformers", hf_dir, "float32")),
        Case("openai-whisper", "float32", spec("openai-whisper", pt_file, "float32")),
        Case("faster-whisper + VAD", "int8", spec("faster-whisper", ct2_dir, "int8"), vad=True),
    ]


def load(case: Case):
    """(transcriber, load seconds), or (None, why it could not be loaded)."""
    try:
        return timed(lambda: load_transcriber(case.spec))
    except SpeechError as error:
        return None, str(error)


def measure(cases: list[Case], audio: np.ndarray, runs: int) -> list[Result]:
    """Load every case, warm each up once, then time `runs` rounds of transcribing `audio` (float32
    [n] at 16 kHz) in which every backend runs once. Round-robin rather than backend after backend,
    so that other work on the machine, if any, slows every backend alike."""
    loaded = [load(case) for case in cases]  # (transcriber or None, load seconds or why not)
    ready = [i for i, (transcriber, _) in enumerate(loaded) if transcriber is not None]
    options = [TranscribeOptions(language=LANGUAGE, beam_size=BEAM_SIZE, vad=case.vad) for case in cases]
    times, texts = [[] for _ in cases], [""] * len(cases)
    for run in range(-1, runs):  # run -1 is the warm-up: first-call allocations, kernel choice
        for i in ready:
            print(
                f"run {run + 1}/{runs} (0: warm-up): {cases[i].label} {cases[i].compute}", file=sys.stderr, flush=True
            )
            transcript, seconds = timed(lambda: loaded[i][0].transcribe(audio, options[i]))
            texts[i] = transcript.text
            if run >= 0:
                times[i].append(seconds)
    return [
        Result(case, load_s, tuple(times[i]), texts[i]) if transcriber is not None else Result(case, error=load_s)
        for i, (case, (transcriber, load_s)) in enumerate(zip(cases, loaded))
    ]


def normalizer():
    """Whisper's English normalizer (numbers as digits, US spelling, no punctuation), as used for
    Whisper's published WERs; it ships with openai-whisper. (normalize function, its description)"""
    try:
        from whisper.normalizers import EnglishTextNormalizer
    except ImportError:  # without openai-whisper: transformers' copy, with no spelling table
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        return EnglishTextNormalizer({}), "transformers' Whisper EnglishTextNormalizer (no US/UK spelling table)"
    return EnglishTextNormalizer(), "openai-whisper's EnglishTextNormalizer"


def word_error_rate(reference: str, hypothesis: str, normalize) -> float:
    return jiwer.wer(normalize(reference), normalize(hypothesis))


def table(results: list[Result], audio: Audio, normalize) -> list[str]:
    """Markdown table lines, one row per result; backends that failed say why."""
    baseline = next((r.median_s for r in results if r.case.label == BASELINE and r.runs_s), None)
    header = ("backend", "compute type", "load s", "median s", "best s", "RTF", "speed-up vs transformers", "WER")
    return markdown_table(header, [_row(r, baseline, audio, normalize) for r in results], "llrrrrrr")


def _row(r: Result, baseline: float | None, audio: Audio, normalize) -> list[str]:
    if r.error:
        return [r.case.label, r.case.compute, f"not run: {r.error}", "", "", "", "", ""]
    return [
        r.case.label,
        r.case.compute,
        f"{r.load_s:.2f}",
        f"{r.median_s:.2f}",
        f"{min(r.runs_s):.2f}",
        f"{r.median_s / audio.seconds:.3f}",
        f"{baseline / r.median_s:.2f}x" if baseline else "n/a",
        f"{word_error_rate(audio.text, r.text, normalize):.1%}",
    ]


def targets(results: list[Result], audio_s: float) -> list[str]:
    """Pass/fail lines for the project's targets on faster-whisper int8 (VAD off, as transformers)."""
    int8 = next(
        (r for r in results if r.case.label == "faster-whisper" and r.case.compute == "int8" and r.runs_s), None
    )
    baseline = next((r for r in results if r.case.label == BASELINE and r.runs_s), None)
    if int8 is None or baseline is None:
        return ["- Targets not checked: faster-whisper int8 or transformers did not run."]
    rtf, speedup = int8.median_s / audio_s, baseline.median_s / int8.median_s
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    return [
        f"- faster-whisper int8 RTF {rtf:.3f} <= {TARGET_RTF}: {verdict(rtf <= TARGET_RTF)}",
        f"- faster-whisper int8 {speedup:.2f}x faster than transformers (>= {TARGET_SPEEDUP}x): "
        f"{verdict(speedup >= TARGET_SPEEDUP)}",
    ]


def report(
    command: str, args, load_before: str, audio: Audio, results: list[Result], normalize, normalizer_name: str
) -> str:
    """The whole Markdown report; `command` is its "Command: ..." line."""
    lines = [
        "# Speech backends: real-time factor on Whisper base (CPU)",
        "",
        command,
        "",
        *machine_details(args.threads, load_before),
        "",
        f"Audio: {audio.seconds:.1f} s of espeak-ng speech ({tts.VOICE}, {tts.WORDS_PER_MINUTE} words/min), "
        f"questions joined with {PAUSE_S} s pauses. Options: language {LANGUAGE!r}, beam {BEAM_SIZE}, VAD off "
        f"except where the row says, each backend's own temperature fallback and timestamps. "
        f"All on the same weights: the packaged CTranslate2 base (float16 on disk), converted for "
        f"transformers and openai-whisper by tools/whisper_convert.py. Times: median of {args.runs} runs "
        f"after one warm-up run, the backends taking turns; load s is the load_transcriber call; best s, "
        f"the fastest run, is the least disturbed by other work on the machine. RTF = median s / audio s; "
        f"speed-up = transformers' median s / this median s. "
        f"WER against the text given to espeak-ng, both normalized with {normalizer_name}.",
        "",
        *table(results, audio, normalize),
        "",
        "Targets:",
        *targets(results, audio.seconds),
        "",
        "Runs (seconds, in the order run):",
        *[f"- {r.case.label} {r.case.compute}: {', '.join(f'{t:.2f}' for t in r.runs_s)}" for r in results if r.runs_s],
        "",
        "Transcripts:",
        f"- spoken: {audio.text}",
        *[f"- {r.case.label} {r.case.compute}: {r.text}" for r in results if r.runs_s],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length to make, at least (s)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every backend")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per backend (median reported)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/speech.md"))
    parser.add_argument(
        "--work-dir", type=Path, default=whisper_convert.default_work_dir(), help="converted models go here"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    ct2_dir = whisper_convert.default_ct2_dir()
    hf_dir, pt_file = whisper_convert.write_both(ct2_dir, args.work_dir)
    audio = Audio(*tts.speech_with_pauses(args.seconds, PAUSE_S))
    normalize, normalizer_name = normalizer()

    load_before = load_average()
    results = measure(cases(ct2_dir, hf_dir, pt_file, args.threads), audio.samples, args.runs)
    markdown = report(command_line("bench.speech", argv), args, load_before, audio, results, normalize, normalizer_name)
    publish(markdown, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
