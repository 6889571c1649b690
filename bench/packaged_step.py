"""The one-token decode step, compiled two ways, each in a process of its own: torch.compile in the
serving process (what the app's warm-up does today, at every start), and a package built ahead of
time (models/packaged_step.py: torch.export + AOTInductor) that the serving process only loads.
Reported: the seconds each costs a start, the serving process's peak memory, and the step's time
at a few filled lengths (cache of 1,024 positions, int8 weights, bfloat16).

    python -m bench.packaged_step [--model DIR] [--out FILE]

The model is a full-size look-alike (`python -m bench.vlm` builds them; default: SmolVLM2-256M's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import command_line, load_average, machine_section, markdown_table, publish
from .start import _peak_mib

DEFAULT_MODEL = Path.home() / ".cache/assistant/bench/full-size/smolvlm2-256m"
FILLED = (8, 128, 1000)
CACHE = 1024
STEPS = 50


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--phase", choices=["compile", "build", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--package", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(_phase(args.phase, args.model, args.package)))
        return
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-packaged-") as scratch:
        package = Path(scratch) / "step.pt2"
        compiled = _in_child("compile", args.model, package, scratch)
        built = _in_child("build", args.model, package, scratch)
        loaded = _in_child("load", args.model, package, scratch)
    header = ["way", "seconds at each start", "serving process's peak (MiB)", *(f"step ms, {n} filled" for n in FILLED)]
    rows = [_row("torch.compile in the serving process", compiled), _row("package loaded", loaded)]
    lines = [f"# The decode step: compiled at each start, or a package built once ({args.model.name})", ""]
    lines += [command_line("bench.packaged_step", argv), "", *markdown_table(header, rows, "lrrrrr"), ""]
    lines += [
        f"Building the package, once: {built['seconds']:.0f} s (export {built['export_s']:.1f} s), in a process "
        f"of its own whose peak was {built['peak_mib']:.0f} MiB. The compile at each start is a cold one "
        "(empty Inductor cache). Each way's process loads the model first (not counted in its seconds).",
        "",
    ]
    lines += machine_section("2 (each process's)", load_before)
    publish("\n".join(lines), args.out)


def _row(way: str, measured: dict) -> list:
    timings = (f"{ms:.2f}" for ms in measured["step_ms"])
    return [way, f"{measured['seconds']:.2f}", f"{measured['peak_mib']:.0f}", *timings]


def _in_child(phase: str, model: Path, package: Path, scratch: str) -> dict:
    environment = {**os.environ, "XDG_CACHE_HOME": str(Path(scratch) / f"cache-{phase}")}
    command = [sys.executable, "-m", "bench.packaged_step", "--phase", phase, "--model", str(model)]
    command += ["--package", str(package)]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"the {phase} phase failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def _phase(phase: str, model: Path, package: Path) -> dict:
    import torch
    from transformers import StaticCache

    from assistant.models.fast_decode import INDUCTOR_SETTINGS, DecodeSpeed
    from assistant.models.loader import load_pretrained
    from assistant.models.packaged_step import PackagedStep, build_package, export_step
    from assistant.threads import use_model_threads

    use_model_threads()
    speed = DecodeSpeed("int8", compile=True, batch=1)
    decoder = load_pretrained(str(model), torch.device("cpu"), torch.bfloat16, speed=speed).decoder
    cache = StaticCache(config=decoder.language_model.config, max_cache_len=CACHE)
    with torch.inference_mode():
        decoder._prefill(decoder.language_model.get_input_embeddings()(torch.tensor([[1, 2, 3, 4]])), cache)
    started = time.perf_counter()
    if phase == "build":
        token, position, seen = _arguments(4)
        program = export_step(decoder.language_model, decoder._one_token, (token, position, cache, seen))
        exported = time.perf_counter() - started
        build_package(program, package, INDUCTOR_SETTINGS)
        return {"seconds": time.perf_counter() - started, "export_s": exported, "peak_mib": _peak_mib(os.getpid())}
    if phase == "load":
        step = PackagedStep.load(package)
    else:
        decoder.warm_up().join()
        step = decoder._step
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_mib": _peak_mib(os.getpid()),
        "step_ms": [_step_ms(step, cache, n) for n in FILLED],
    }


def _arguments(position: int) -> tuple:
    import torch

    return (torch.tensor([[7]]), torch.tensor([position]), torch.empty(position + 1))


def _step_ms(step, cache, filled: int) -> float:
    import torch

    token, position, seen = _arguments(filled - 1)
    with torch.inference_mode():
        for _ in range(3):
            step(token, position, cache, seen)
        started = time.perf_counter()
        for _ in range(STEPS):
            step(token, position, cache, seen)
    return 1000 * (time.perf_counter() - started) / STEPS


if __name__ == "__main__":
    main()
