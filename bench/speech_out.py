"""Spoken answers: real-time factor of the piper voice, and how soon sound starts when a reply is
spoken sentence by sentence (as the app does) instead of all at once (the baseline), in one run.

    python bench/speech_out.py [--threads 2] [--runs 3] [--out bench/results/speech_out.md]

Time to first audio (streaming) = the time to synthesise the reply's first sentence, counted from
the moment that sentence is complete. The baseline waits for the whole reply and synthesises it in
one call. RTF = synthesis seconds / audio seconds (below 1 is faster than real time).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speech import load_average, machine_details  # noqa: E402

from assistant.speech.speakable import SentenceStream, speakable  # noqa: E402
from assistant.speech.synthesizer import load_synthesizer  # noqa: E402

REPLIES = (
    "The photo shows a tabby cat sitting on a wooden floor. Its eyes are green and it looks straight at the camera. "
    "Behind it you can see part of a sofa. The light comes from a window on the left.",
    "Here are three things to pack for a rainy weekend. Bring a waterproof jacket and a warm jumper. "
    "Take shoes with a good grip. An umbrella that folds small is also useful.",
    "The tallest mountain in the world is Mount Everest. It stands on the border between Nepal and China. "
    "Its summit is about eight thousand eight hundred metres above sea level.",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = load_average()
    synthesizer = load_synthesizer()
    _limit_threads(synthesizer, args.threads)
    synthesizer.synthesize("Warming up.")
    rows = [measure(synthesizer, reply, args.runs) for reply in REPLIES]
    lines = report(rows, args, load_before)
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


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
        started = time.perf_counter()
        synthesizer.synthesize(speakable(first_sentence))
        first.append(time.perf_counter() - started)
        started = time.perf_counter()
        audio_s = synthesizer.synthesize(speakable(reply)).seconds
        whole.append(time.perf_counter() - started)
    return {
        "words": len(reply.split()),
        "audio_s": audio_s,
        "first_s": statistics.median(first),
        "whole_s": statistics.median(whole),
    }


def report(rows: list[dict], args, load_before: str) -> list[str]:
    lines = [
        "# Spoken answers: piper voice en_US-joe-medium",
        "",
        f"Command: `python bench/speech_out.py {shlex.join(sys.argv[1:])}`",
        "",
        "| reply | words | audio s | synthesis s (whole reply) | RTF | first audio, streamed s | first audio, whole reply s | sooner |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for number, row in enumerate(rows, start=1):
        rtf = row["whole_s"] / row["audio_s"]
        lines.append(
            f"| {number} | {row['words']} | {row['audio_s']:.1f} | {row['whole_s']:.2f} | {rtf:.3f} | "
            f"{row['first_s']:.2f} | {row['whole_s']:.2f} | {row['whole_s'] / row['first_s']:.1f}x |"
        )
    lines += ["", "Machine:", *machine_details(args.threads, load_before)]
    return lines


if __name__ == "__main__":
    main()
