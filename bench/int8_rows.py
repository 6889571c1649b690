"""One product of a few rows by an int8 weight, three ways, in one process: torchao's eager
weight-only path (the weight widened to bfloat16, then multiplied), ATen's int8 kernel
(`_weight_int8pack_mm`, models/int8_rows.py), and a bfloat16 weight (twice the memory; for scale).
Shapes: SmolLM2-360M's (SmolVLM-500M's decoder) projections and its head.

    python -m bench.int8_rows [--out FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchao.quantization import Int8WeightOnlyConfig, quantize_

from assistant.models.int8_rows import MOST_ROWS, int8_linear
from assistant.threads import model_threads, use_model_threads

from .common import command_line, load_average, machine_section, markdown_table, publish, repeat

SHAPES = {"attention and MLP in (960 -> 2560)": (960, 2560), "MLP out (2560 -> 960)": (2560, 960),
          "head (960 -> 49152)": (960, 49152)}  # fmt: skip
ROWS = (1, 4, 8, 16, 64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    load_before = load_average()
    use_model_threads()
    rows = [row for name, (inputs, outputs) in SHAPES.items() for row in _measure(name, inputs, outputs)]
    header = ["weight", "rows", "torchao eager (ms)", "ATen int8 (ms)", "bfloat16 (ms)", "ATen int8 / torchao"]
    lines = ["# A few rows by an int8 weight", "", command_line("bench.int8_rows", argv), ""]
    lines += markdown_table(header, rows, "lrrrrr") + [""]
    lines += [f"models/int8_rows.py sends up to {MOST_ROWS} rows to ATen's kernel.", ""]
    lines += machine_section(model_threads(), load_before)
    publish("\n".join(lines), args.out)


def _measure(name: str, inputs: int, outputs: int) -> list[list]:
    bfloat16 = torch.nn.Linear(inputs, outputs, bias=False).to(torch.bfloat16)
    int8 = torch.nn.Linear(inputs, outputs, bias=False).to(torch.bfloat16)
    quantize_(int8, Int8WeightOnlyConfig())
    rows = []
    for count in ROWS:
        x = torch.randn(count, inputs, dtype=torch.bfloat16)
        torchao_ms = _best_ms(lambda: int8(x))
        aten_ms = _best_ms(lambda: int8_linear(x, int8.weight))  # at every size, past MOST_ROWS too
        rows.append([name, count, f"{torchao_ms:.2f}", f"{aten_ms:.2f}", f"{_best_ms(lambda: bfloat16(x)):.2f}",
                     f"{aten_ms / torchao_ms:.2f}"])  # fmt: skip
    return rows


def _best_ms(work) -> float:
    with torch.inference_mode():
        return 1000 * min(repeat(work, runs=20, warm_up=3))


if __name__ == "__main__":
    main()
