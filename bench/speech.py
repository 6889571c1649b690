"""Real-time factor of each speech backend on the same Whisper base weights, on CPU.

    python bench/speech.py [--seconds 30] [--threads 2] [--out bench/results/speech.md]

About 30 s of espeak-ng speech (user-like questions with short pauses) is transcribed by each
backend through the project's `load_transcriber`: faster-whisper int8 and float32 on the packaged
CTranslate2 model, transformers fp32 and openai-whisper fp32 on the same weights converted by
bench/whisper_convert.py. Options: language "en", beam 5, VAD off, so that every backend decodes
the same audio the same way (only faster-whisper has VAD; one extra row shows it on, the app's
default). Each backend is loaded, warmed up with one run, then timed over --runs runs; the table
has the median. RTF = transcription seconds / audio seconds (below 1 is faster than real time).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import torch
import tts
import whisper_convert

from assistant.speech.transcriber import SpeechError, SpeechModelSpec, TranscribeOptions, load_transcriber

PAUSE_S = 0.6  # silence between two questions, seconds: a short breath, not a VAD-sized gap
BEAM_SIZE = 5
LANGUAGE = "en"
BASELINE = "transformers"  # the speed-ups are relative to this backend
# The project's targets for the default backend (faster-whisper int8 on CPU).
TARGET_RTF = 0.15
TARGET_SPEEDUP = 2.0
LIBRARIES = ("torch", "transformers", "ctranslate2", "faster-whisper", "openai-whisper", "numpy", "jiwer")


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
        started = time.perf_counter()
        transcriber = load_transcriber(case.spec)
        return transcriber, time.perf_counter() - started
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
            started = time.perf_counter()
            texts[i] = loaded[i][0].transcribe(audio, options[i]).text
            if run >= 0:
                times[i].append(time.perf_counter() - started)
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


def load_average() -> str:
    """The 1, 5 and 15 min load averages: above the thread count, something else was competing."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_details(threads: int, load_before: str) -> list[str]:
    """Markdown bullet lines: CPU model, cores, threads, load, Python and library versions."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores visible",
        f"- Threads: {threads} (torch.set_num_threads and cpu_threads)",
        f"- Load average before / after the run (1, 5, 15 min): {load_before} / {load_average()}",
        f"- Python {platform.python_version()} on {platform.platform()}",
        f"- {', '.join(versions)}",
        f"- {espeak}",
    ]


def table(results: list[Result], audio: Audio, normalize) -> list[str]:
    """Markdown table lines, one row per result; backends that failed say why."""
    baseline = next((r.median_s for r in results if r.case.label == BASELINE and r.runs_s), None)
    lines = [
        "| backend | compute type | load s | median s | best s | RTF | speed-up vs transformers | WER |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.case.label} | {r.case.compute} | not run: {r.error} | | | | | |")
            continue
        speedup = f"{baseline / r.median_s:.2f}x" if baseline else "n/a"
        wer = word_error_rate(audio.text, r.text, normalize)
        lines.append(
            f"| {r.case.label} | {r.case.compute} | {r.load_s:.2f} | {r.median_s:.2f} | {min(r.runs_s):.2f} | {r.median_s / audio.seconds:.3f} | {speedup} | {wer:.1%} |"
        )
    return lines


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
        f"- faster-whisper int8 {speedup:.2f}x faster than transformers (>= {TARGET_SPEEDUP}x): {verdict(speedup >= TARGET_SPEEDUP)}",
    ]


def report(
    command: str, args, load_before: str, audio: Audio, results: list[Result], normalize, normalizer_name: str
) -> str:
    """The whole Markdown report."""
    lines = [
        "# Speech backends: real-time factor on Whisper base (CPU)",
        "",
        f"Command: `{command}`",
        "",
        *machine_details(args.threads, load_before),
        "",
        f"Audio: {audio.seconds:.1f} s of espeak-ng speech ({tts.VOICE}, {tts.WORDS_PER_MINUTE} words/min), "
        f"questions joined with {PAUSE_S} s pauses. Options: language {LANGUAGE!r}, beam {BEAM_SIZE}, VAD off "
        f"except where the row says, each backend's own temperature fallback and timestamps. "
        f"All on the same weights: the packaged CTranslate2 base (float16 on disk), converted for "
        f"transformers and openai-whisper by bench/whisper_convert.py. Times: median of {args.runs} runs "
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
    command = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", "bench/speech.py", *argv])
    torch.set_num_threads(args.threads)

    ct2_dir = whisper_convert.default_ct2_dir()
    hf_dir = whisper_convert.write_transformers(ct2_dir, args.work_dir / "whisper-base-hf")
    pt_file = whisper_convert.write_openai(ct2_dir, args.work_dir / "whisper-base.pt")
    audio = Audio(*tts.speech_with_pauses(args.seconds, PAUSE_S))
    normalize, normalizer_name = normalizer()

    load_before = load_average()
    results = measure(cases(ct2_dir, hf_dir, pt_file, args.threads), audio.samples, args.runs)
    markdown = report(command, args, load_before, audio, results, normalize, normalizer_name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
