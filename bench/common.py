"""What every benchmark script does alike: time work, describe the machine, write Markdown tables and reports."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

T = TypeVar("T")

# The libraries whose versions a speech report lists (machine_details).
LIBRARIES = ("torch", "transformers", "ctranslate2", "faster-whisper", "openai-whisper", "numpy", "jiwer")

# --- timing ------------------------------------------------------------------------------------------


def timed(work: Callable[[], T]) -> tuple[T, float]:
    """work()'s result and the wall-clock seconds it took."""
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def repeat(work: Callable[[], object], runs: int, warm_up: int = 0) -> list[float]:
    """Seconds of each of `runs` calls of work(), after `warm_up` calls that are not timed."""
    for _ in range(warm_up):
        work()
    return [timed(work)[1] for _ in range(runs)]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, interpolated between the two nearest (numpy's default)."""
    return float(np.percentile(values, q))


# --- the machine -------------------------------------------------------------------------------------


def load_average(separator: str = ", ") -> str:
    """The 1, 5 and 15 min load averages: above the thread count, something else was competing."""
    return separator.join(f"{x:.2f}" for x in os.getloadavg())


def processor_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # no /proc (not Linux): what the platform module knows
        pass
    return platform.processor() or platform.machine()


def machine_details(threads: int | str, load_before: str) -> list[str]:
    """Markdown bullet lines: CPU model, cores, threads, load before and now, Python and library
    versions, espeak-ng's version. `threads`: the count given to torch.set_num_threads and the
    speech backends' cpu_threads, or a few words on how the threads were chosen."""
    if isinstance(threads, int):
        threads = f"{threads} (torch.set_num_threads and cpu_threads)"
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    return [
        f"- CPU: {processor_name()}, {os.cpu_count()} logical cores visible",
        f"- Threads: {threads}",
        f"- Load average before / after the run (1, 5, 15 min): {load_before} / {load_average()}",
        f"- Python {platform.python_version()} on {platform.platform()}",
        f"- {', '.join(versions)}",
        f"- {espeak}",
    ]


def machine_section(threads: int | str, load_before: str) -> list[str]:
    """A report's closing "Machine:" paragraph: machine_details under its heading, blank lines around."""
    return ["Machine:", "", *machine_details(threads, load_before), ""]


# --- reports -----------------------------------------------------------------------------------------

ALIGNMENTS = {"l": "---", "r": "---:"}  # a column's alignment letter -> its Markdown separator cell


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str) -> list[str]:
    """A Markdown table's lines: the header, the alignment line, one line a row.

    `align` has a letter a column: "l" left (text), "r" right (numbers); "lrr" gives `|---|---:|---:|`.
    Cells are written as given (format numbers before), an empty one as `| |`.
    """
    if len(align) != len(header) or set(align) - set(ALIGNMENTS):
        raise ValueError(f"align {align!r} must have one letter, l or r, for each of the {len(header)} columns")
    lines = [_table_line(header), "|" + "".join(f"{ALIGNMENTS[a]}|" for a in align)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells, the header {len(header)}: {row}")
        lines.append(_table_line(row))
    return lines


def _table_line(cells: Sequence[object]) -> str:
    return "|" + "|".join(f" {cell} " if cell != "" else " " for cell in cells) + "|"


def command(module: str, argv: Sequence[str] | None = None) -> str:
    """The shell command that runs `module` (e.g. "bench.speech") with `argv` (default: this process's)."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """A report's "Command: `python -m bench.x ...`" line."""
    return f"Command: `{command(module, argv)}`"


def publish(text: str, out: Path | None) -> None:
    """Print a report, and write it to `out` (its folder made if needed) when given."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
