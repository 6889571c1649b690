"""Spoken answers: real-time factor of the piper voice, and how soon sound starts when a reply is
spoken sentence by sentence (as the app does) instead of all at once (the baseline), in one run.

    python -m bench.speech_out [--threads 2] [--runs 3] [--out bench/results/speech_out.md]

Time to first audio (streaming) = the time to synthesise the reply's first sentence, counted from
the moment that sentence is complete. The baseline waits for the whole reply and synthesises it in
one call. RTF = synthesis seconds / audio seconds (below 1 is faster than real time).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import onnxruntime
import torch

from assistant.speech.speakable import SentenceStream, speakable
from assistant.speech.synthesizer import load_synthesizer

from .common import command_line, load_average, machine_details, markdown_table, publish, timed

REPLIES = (
    "The photo shows a tabby cat sitting on a wooden floor. Its eyes are green and it looks straight at the camera. "
    "Behind it you can see part of a sofa. The light comes from a window on the left.",
    "Here are three things to pack for a rainy weekend. Bring a waterproof jacket and a warm jumper. "
    "Take shoes with a good grip. An umbrella that folds small is also useful.",
    "The tallest mountain in the world is Mount Everest. It stands on the border between Nepal and China. "
    "Its summit is about eight thousand eight hundred metres above sea level.",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    synthesizer = load_synthesizer()
    _limit_threads(synthesizer, args.threads)
    synthesizer.synthesize("Warming up.")
    rows = [measure(synthesizer, reply, args.runs) for reply in REPLIES]
    lines = report(rows, args.threads, load_before, command_line("bench.speech_out", argv))
    publish("\n".join(lines) + "\n", args.out)


def _limit_threads(synthesizer, threads: int) -> None:
    """piper's onnxruntime session uses every core by default; rebuild it with `threads`."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = synthesizer.voice.session
    synthesizer.voice.session = onnxruntime.InferenceSession(
        session._model_path, sess_options=options, providers=["CPUExecutionProvider"]
    )


def measure(synthesizer, reply: str, runs: int) -> dict:
    first_sentence = SentenceStream().push(reply)[0]
    first, whole, audio_s = [], [], 0.0
    for _ in range(runs):
        first.append(timed(lambda: synthesizer.synthesize(speakable(first_sentence)))[1])
        speech, seconds = timed(lambda: synthesizer.synthesize(speakable(reply)))
        audio_s = speech.seconds
        whole.append(seconds)
    return {
        "words": len(reply.split()),
        "audio_s": audio_s,
        "first_s": statistics.median(first),
        "whole_s": statistics.median(whole),
    }


HEADER = (
    "reply",
    "words",
    "audio s",
    "synthesis s (whole reply)",
    "RTF",
    "first audio, streamed s",
    "first audio, whole reply s",
    "sooner",
)


def report(rows: list[dict], threads: int, load_before: str, command: str) -> list[str]:
    """The Markdown report's lines; `command` is its "Command: ..." line."""
    cells = [
        [
            number,
            row["words"],
            f"{row['audio_s']:.1f}",
            f"{row['whole_s']:.2f}",
            f"{row['whole_s'] / row['audio_s']:.3f}",
            f"{row['first_s']:.2f}",
            f"{row['whole_s']:.2f}",
            f"{row['whole_s'] / row['first_s']:.1f}x",
        ]
        for number, row in enumerate(rows, start=1)
    ]
    return [
        "# Spoken answers: piper voice en_US-joe-medium",
        "",
        command,
        "",
        *markdown_table(HEADER, cells, "r" * len(HEADER)),
        "",
        "Machine:",
        *machine_details(threads, load_before),
    ]


if __name__ == "__main__":
    main()
