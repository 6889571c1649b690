"""From the end of a spoken question to its transcript, through a running server's
POST /v1/audio/transcriptions: the short encoder window against the full 30-s one, same run.

    python -m bench.whisper_api [--profile starter] [--out FILE]

Two servers are started one after the other (`assistant serve --profile starter`, then the same
with `--full-window`), each on loopback. Every spoken question of bench/whisper_window.py whose
speech lasts 2-4 s (espeak-ng and the piper voice at several speeds) is sent as a WAV file, as a
client would upload a recording the moment the person stops talking; the time is from sending the
request to having the transcript. Measuring starts once the machine is quiet: the server warms
Whisper and compiles the language model's decode step in the background as it starts, and a question
asked meanwhile shares the cores with that (the first minute's cost, not the steady one). One warm-up
request first (the HTTP path). WER pools all questions.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import wave
from pathlib import Path

import jiwer
import numpy as np
import requests

from . import whisper_window
from .common import command_line, load_average, machine_section, markdown_table, percentile, publish, timed
from .serving import serve
from .speech import normalizer

SPEECH_S = (2.0, 4.0)  # the questions measured: this much speech, plus the microphone's silence


def wav_bytes(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1), file.setsampwidth(2), file.setframerate(16_000)
        file.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return out.getvalue()


def cpu_busy_seconds() -> float:
    """Seconds the machine's cores have spent busy since boot (/proc/stat: all but idle and iowait)."""
    values = [int(value) for value in open("/proc/stat").readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def wait_until_quiet(limit_s: float = 300, interval_s: float = 2.0, busy_share: float = 0.1) -> float:
    """Wait until the cores are busy less than `busy_share` of an interval (the server's start-up
    work done); returns the seconds waited. After `limit_s`, go on anyway."""
    started = time.monotonic()
    cores = len(os.sched_getaffinity(0))
    while time.monotonic() - started < limit_s:
        before = cpu_busy_seconds()
        time.sleep(interval_s)
        if (cpu_busy_seconds() - before) / (interval_s * cores) < busy_share:
            break
    return time.monotonic() - started


def transcribe(url: str, data: bytes) -> tuple[float, str]:
    response, elapsed = timed(
        lambda: requests.post(
            f"{url}/audio/transcriptions",
            files={"file": ("question.wav", data, "audio/wav")},
            data={"model": "whisper-1"},
            timeout=120,
        )
    )
    response.raise_for_status()
    return elapsed, response.json()["text"]


def measure(profile: str, extra: list[str], questions: list) -> tuple[list[float], list[str]]:
    server, url = serve(profile, extra)
    try:
        waited = wait_until_quiet()  # the warm start and the background compile: we measure answers, not the start
        print(f"server quiet after {waited:.0f} s", file=sys.stderr)
        transcribe(url, wav_bytes(questions[0].samples))
        results = [transcribe(url, wav_bytes(clip.samples)) for clip in questions]
    finally:
        server.terminate()
        server.wait(timeout=30)
    return [seconds for seconds, _ in results], [text for _, text in results]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="starter")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    load_before = load_average()
    silence_s = whisper_window.LEAD_S + whisper_window.TAIL_S
    questions = [clip for clip in whisper_window.clips() if SPEECH_S[0] <= clip.seconds - silence_s <= SPEECH_S[1]]
    normalize, normalizer_name = normalizer()
    references = [normalize(clip.text) for clip in questions]
    rows = []
    for name, extra in (("30 s (full window)", ["--full-window"]), ("short window (default)", [])):
        times, texts = measure(args.profile, extra, questions)
        rate = jiwer.wer(references, [normalize(text) or "-" for text in texts])
        rows.append((name, times, rate))
        print(f"{name}: median {statistics.median(times):.3f} s, WER {rate:.3f}", file=sys.stderr)
    full = statistics.median(rows[0][1])
    cells = [
        [
            name,
            f"{statistics.median(times):.3f}",
            f"{percentile(times, 95):.3f}",
            f"{full / statistics.median(times):.1f}x",
            f"{rate:.3f}",
        ]
        for name, times, rate in rows
    ]
    report = [
        "# A spoken question's transcript through POST /v1/audio/transcriptions",
        "",
        command_line("bench.whisper_api", argv),
        "",
        f"{len(questions)} questions with {SPEECH_S[0]:g}-{SPEECH_S[1]:g} s of speech (plus {silence_s:g} s of "
        f"silence), sent as 16 kHz WAV to `assistant serve --profile {args.profile}` on loopback; seconds from "
        f"sending the request to the transcript. Whisper base, int8, VAD on, language detected; the defaults: "
        f"beam 5 on the 30-s window, greedy on the short one. WER: {normalizer_name}.",
        "",
        *markdown_table(["encoder window", "median s", "p95 s", "vs full (median)", "WER"], cells, "lrrrr"),
        "",
        *machine_section("the server's defaults", load_before),
    ]
    publish("\n".join(report), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
