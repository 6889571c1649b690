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
import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
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


@dataclasses.dataclass(frozen=True)
class VlmRow:
    model: str  # the look-alike's name in models/configs.py PUBLISHED
    decoding: str  # a MODES key
    photo: str  # "W x H"
    detail: str
    image_tokens: int
    time_to_first_token_s: float  # the best of the runs, each with a photo not seen before
    follow_up_first_token_s: float  # a second question about the same photo, after its reply
    follow_up_new_tokens: int  # the follow-up's positions read afresh (the rest reused from the cache)
    tokens_per_s: float
    compile_s: float | None  # the warm-up's compile (None: nothing compiled)
    seen_ahead_first_token_s: float | None = None  # a new photo prepared first, as the chat does while one types


HEADER = [
    "decoding", "photo", "detail", "image tokens", "first token (s)", "photo seen while typing: first token (s)",
    "follow-up first token (s)",
    "follow-up tokens read", "decode tok/s", "compile (s)",
]  # fmt: skip


def cells(r: VlmRow) -> list[object]:
    """A row's cells under HEADER."""
    return [
        r.decoding, r.photo, r.detail, r.image_tokens, f"{r.time_to_first_token_s:.2f}",
        "-" if r.seen_ahead_first_token_s is None else f"{r.seen_ahead_first_token_s:.2f}",
        f"{r.follow_up_first_token_s:.2f}", r.follow_up_new_tokens, f"{r.tokens_per_s:.1f}",
        "-" if r.compile_s is None else f"{r.compile_s:.0f}",
    ]  # fmt: skip


def table(rows: list[VlmRow]) -> list[str]:
    return markdown_table(HEADER, [cells(r) for r in rows], "llrrrrrrrr")


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
    directory = built(args.model)
    rows = []
    for mode in args.modes.split(","):
        rows += measure(directory, mode, args.tokens, args.runs)
    lines = [f"# {args.model} at full size: first token and decode", "", command_line("bench.vlm", argv), ""]
    lines += table(rows) + ["", FOLLOW_UP_NOTE, ""]
    lines += machine_section(f"{model_threads()} (the engine's worker; this thread loads on 1)", load_before)
    publish("\n".join(lines), args.out)


FOLLOW_UP_NOTE = (
    "Follow-up tokens read: the follow-up's positions prefilled afresh; the rest come from the cache. A reply"
    " whose text, put back in the conversation, tokenizes as the model's own tokens is reused whole; a random"
    " decoder's replies (the 500M look-alike's: no packaged SmolLM2-360M weights) often do not, and are read again."
)


def built(name: str, cache_dir: Path | None = None) -> Path:
    """The look-alike `name`, built once into the cache's bench/full-size/ folder."""
    cache_dir = cache_dir or load_settings(env={}, config_file=None).cache_dir
    directory = cache_dir / "bench" / "full-size" / name
    config = directory / "config.json"
    stored = json.loads(config.read_text()).get("dtype") if config.is_file() else None
    if stored != str(PUBLISHED[name].stored_dtype).removeprefix("torch."):  # none yet, or an older build's
        build_full_size(name, directory, cache_dir)
    return directory


def measure(
    directory: Path, mode: str, tokens: int, runs: int, photos: tuple[tuple[int, int], ...] = PHOTOS
) -> list[VlmRow]:
    # The baseline is the model card's code: no photo is remembered from one turn to the next.
    remembered = {"image_cache_bytes": 0} if MODES[mode] is None else {}  # else the loader's default
    model = load_pretrained(str(directory), torch.device("cpu"), torch.float32, speed=MODES[mode], **remembered)
    engine = Engine(model)
    compile_s = None
    if engine.warming_up is not None:
        _, compile_s = timed(engine.warming_up.join)
    options = GenerationOptions(temperature=0.0, max_new_tokens=tokens)
    photos_made = itertools.count()
    rows = []
    try:
        for size in photos:
            for detail in DETAILS:
                asked = [_photo_question(size, detail, next(photos_made)) for _ in range(runs)]
                usages = [_usage(engine, question, options) for question in asked]
                ahead = _seen_ahead(engine, _photo_question(size, detail, next(photos_made)), options)
                follow_up = _follow_up(engine, asked[-1], options)
                then = _usage(engine, follow_up, options)
                reused = model.decoder.reused if model.decoder is not None else 0
                rows.append(
                    VlmRow(
                        directory.name, mode, f"{size[0]} x {size[1]}", detail, usages[0].image_tokens,
                        min(usage.time_to_first_token_s for usage in usages), then.time_to_first_token_s,
                        then.prompt_tokens - reused, max(usage.tokens_per_s for usage in usages), compile_s,
                        seen_ahead_first_token_s=ahead if model.views is not None else None,
                    )
                )  # fmt: skip
    finally:
        engine.close()
    return rows


def _photo_question(size: tuple[int, int], detail: str, seed: int) -> Conversation:
    """A photo question. Each photo is noise drawn from its own seed: no two photos, and no two views of
    one photo, are alike, so none is answered from what another left in a cache (a plain colour's views
    would all be one view to the tower's cache)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    photo = Photo(PILImage.fromarray(pixels), detail=detail)
    return Conversation().add(Message.user(QUESTION, [photo]))


def _follow_up(engine: Engine, conversation: Conversation, options: GenerationOptions) -> Conversation:
    """`conversation`, its reply (asked again: the engine answers the same, greedily), and a second question."""
    answer = engine.reply(conversation, options).text()
    return conversation.add(Message.assistant(answer)).add(Message.user(FOLLOW_UP))


def _seen_ahead(engine: Engine, conversation: Conversation, options: GenerationOptions) -> float:
    """First token of a question whose photo the engine prepared while it was typed (the chat's way)."""
    engine.prepare([part for part in conversation.messages[-1].parts if isinstance(part, Photo)])
    while not engine.idle:
        time.sleep(0.01)
    return _usage(engine, conversation, options).time_to_first_token_s


def _usage(engine: Engine, conversation: Conversation, options: GenerationOptions):
    reply = engine.reply(conversation, options)
    reply.text()
    return reply.usage


if __name__ == "__main__":
    main()
