"""A follow-up's new tokens into the KV cache: the eager prefill (one forward over them all) against the
compiled prefill step (PREFILL_CHUNK positions at a time, models/fast_decode.py), after a 200-token
conversation, on a full-size look-alike (models/configs.py), int8 weights as `serve` decodes. Decides
COMPILED_PREFILL_CHUNKS: the longest run of new tokens the compiled step is used for.

    python -m bench.prefill [--model smolvlm2-500m] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import torch

from assistant.models import fast_decode
from assistant.models.fast_decode import PREFILL_CHUNK, DecodeSpeed
from assistant.models.loader import load_pretrained
from assistant.threads import model_threads, use_model_threads

from .common import command_line, load_average, machine_section, markdown_table, publish
from .vlm import PUBLISHED, _built

NEW_TOKENS = (1, 8, 16, 32, 48, 64, 96, 128)
HELD = 200  # positions the cache holds already


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smolvlm2-500m", choices=sorted(PUBLISHED))
    parser.add_argument("--runs", type=int, default=7, help="timings per case; the median is reported")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    load_before = load_average()
    rows = []
    worker = threading.Thread(target=lambda: rows.extend(measure(_built(args.model), args.runs)))
    worker.start()  # as the engine's worker: its own thread, with the model's threads
    worker.join()
    lines = [f"# {args.model}: prefilling a follow-up's new tokens", "", command_line("bench.prefill", argv), ""]
    header = ["new tokens", "eager (ms)", f"compiled, {PREFILL_CHUNK} at a time (ms)", "compiled / eager"]
    lines += markdown_table(header, rows, "rrrr") + [""]
    lines += machine_section(model_threads(), load_before)
    publish("\n".join(lines), args.out)


def measure(directory: Path, runs: int) -> list[list]:
    use_model_threads()
    model = load_pretrained(str(directory), torch.device("cpu"), torch.float32, speed=DecodeSpeed("int8", True, 1))
    decoder = model.decoder
    decoder.warm_up().join()
    fast_decode.COMPILED_PREFILL_CHUNKS = max(NEW_TOKENS)  # the compiled step at every length, to compare
    hidden = decoder.language_model.config.hidden_size
    rows = []
    with torch.inference_mode():
        for new in NEW_TOKENS:
            cache = decoder._cache_for(decoder._lane, HELD + new + 1)
            decoder._prefill(torch.randn(1, HELD, hidden, dtype=decoder.dtype), cache, 0, eager=True)
            follow_up = torch.randn(1, new, hidden, dtype=decoder.dtype)
            eager, compiled = (_median_ms(decoder, follow_up, cache, eager, runs) for eager in (True, False))
            rows.append([new, f"{eager:.0f}", f"{compiled:.0f}", f"{compiled / eager:.2f}"])
    return rows


def _median_ms(decoder, follow_up: torch.Tensor, cache, eager: bool, runs: int) -> float:
    """The new tokens prefilled after the HELD positions, each run from the same place."""
    times = []
    for _ in range(runs + 1):  # the first run pays one-time costs
        cache.crop(HELD - int(cache.get_seq_length()))
        started = time.perf_counter()
        decoder._prefill(follow_up, cache, HELD, eager=eager)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times[1:])


if __name__ == "__main__":
    main()
