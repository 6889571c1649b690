"""A hub VLM at full size (published geometry, models/configs.py) through the engine: time to first
token for a photo and a question, then for a follow-up question about it, and decode speed, for each
way of decoding, beside transformers' `generate` in float32 (the model card's own code) in the same run.

    python -m bench.vlm [--model smolvlm2-256m] [--modes generate,bfloat16,int8-compiled] [--out FILE]

Photos: a 512 x 512 one and a 1024 x 768 one, at each detail level (low: one view; auto: the views
the default budget affords at this machine's measured speed; high: the model's own tiling). The
look-alike is built once into ~/.cache/assistant/bench/full-size/ (random vision tower, SmolLM2's real
weights where they are packaged).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image as PILImage

from assistant.conversation import DETAILS, Conversation, Message
from assistant.conversation import Image as Photo
from assistant.engine import Engine
from assistant.models.configs import PUBLISHED, build_full_size
from assistant.models.fast_decode import DecodeSpeed
from assistant.models.loader import load_pretrained
from assistant.sampling import GenerationOptions
from assistant.settings import load_settings
from assistant.threads import model_threads, reserve_for_model

from .common import command_line, load_average, machine_section, markdown_table, publish, timed

MODES = {
    "generate": None,  # transformers' generate on the whole VLM, float32: the baseline
    "bfloat16": DecodeSpeed("bfloat16", compile=False, batch=1),
    "int8-compiled": DecodeSpeed("int8", compile=True, batch=1),
}
PHOTOS = ((512, 512), (1024, 768))
QUESTION = "What is in this photo?"
FOLLOW_UP = "And what colour is it?"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smolvlm2-256m", choices=sorted(PUBLISHED))
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {', '.join(MODES)}")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per reply")
    parser.add_argument("--runs", type=int, default=2, help="replies per case; the best is reported")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    load_before = load_average()
    reserve_for_model()  # as the app does: this thread loads, the engine's worker computes
    directory = _built(args.model)
    rows = []
    for mode in args.modes.split(","):
        rows += measure(directory, mode, args.tokens, args.runs)
    lines = [f"# {args.model} at full size: first token and decode", "", command_line("bench.vlm", argv), ""]
    header = [
        "decoding", "photo", "detail", "image tokens", "first token (s)", "follow-up first token (s)",
        "decode tok/s", "compile (s)",
    ]  # fmt: skip
    lines += markdown_table(header, rows, "llrrrrrr") + [""]
    lines += machine_section(f"{model_threads()} (the engine's worker; this thread loads on 1)", load_before)
    publish("\n".join(lines), args.out)


def _built(name: str) -> Path:
    cache_dir = load_settings(env={}, config_file=None).cache_dir
    directory = cache_dir / "bench" / "full-size" / name
    if not (directory / "config.json").is_file():
        build_full_size(name, directory, cache_dir)
    return directory


def measure(directory: Path, mode: str, tokens: int, runs: int) -> list[list]:
    model = load_pretrained(str(directory), torch.device("cpu"), torch.float32, speed=MODES[mode])
    engine = Engine(model)
    compile_s = "-"
    if engine.warming_up is not None:
        _, seconds = timed(engine.warming_up.join)
        compile_s = f"{seconds:.0f}"
    options = GenerationOptions(temperature=0.0, max_new_tokens=tokens)
    rows = []
    try:
        for size in PHOTOS:
            for detail in DETAILS:
                asked = [_photo_question(size, detail, run) for run in range(runs)]
                usages = [_usage(engine, question, options) for question in asked]
                then = [_usage(engine, _follow_up(engine, question, options), options) for question in asked[-1:]]
                first = min(usage.time_to_first_token_s for usage in usages)
                speed = max(usage.tokens_per_s for usage in usages)
                row = [mode, f"{size[0]} x {size[1]}", detail, usages[0].image_tokens, f"{first:.2f}"]
                rows.append([*row, f"{then[0].time_to_first_token_s:.2f}", f"{speed:.1f}", compile_s])
    finally:
        engine.close()
    return rows


def _photo_question(size: tuple[int, int], detail: str, run: int) -> Conversation:
    """A photo question; each run's photo differs, so that none is answered from what an earlier one
    left in a cache."""
    photo = Photo(PILImage.new("RGB", size, (200, 40 + 20 * run, 30)), detail=detail)
    return Conversation().add(Message.user(QUESTION, [photo]))


def _follow_up(engine: Engine, conversation: Conversation, options: GenerationOptions) -> Conversation:
    """`conversation`, its reply (asked again: the engine answers the same, greedily), and a second question."""
    answer = engine.reply(conversation, options).text()
    return conversation.add(Message.assistant(answer)).add(Message.user(FOLLOW_UP))


def _usage(engine: Engine, conversation: Conversation, options: GenerationOptions):
    reply = engine.reply(conversation, options)
    reply.text()
    return reply.usage


if __name__ == "__main__":
    main()
