"""From `python app.py` to the first answer: the app is started, and a photo question is sent the
moment its HTTP API answers (`/v1/chat/completions`, streamed, `detail: low`, greedy).

    python -m bench.start --model DIR [--tokens 32] [--out FILE]

Two starts of the same model: `cold`, with an empty cache directory (no compiled code on disk: what
a new install meets), then `warm`, on the cache the first start left. Reported from the moment the
process is started: when the API answered, the first streamed text, and the whole answer; then, once
the app is idle (its warm-up done), its peak resident memory. The model
is a local directory (e.g. the full-size look-alike `python -m bench.vlm` builds into
~/.cache/assistant/bench/full-size/), so that the hub is not needed.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from PIL import Image as PILImage

from .common import command_line, load_average, machine_section, markdown_table, publish
from .serving import free_port

START_TIMEOUT_S = 600
QUESTION = "What is in this photo?"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a model directory")
    parser.add_argument("--tokens", type=int, default=32, help="tokens in the answer")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-start-") as cache:
        for start in ("cold", "warm"):
            *seconds, peak = first_answer(args.model, Path(cache), args.tokens)
            rows.append([start, *(f"{s:.1f}" for s in seconds), f"{peak:.0f}"])
    lines = [f"# From `python app.py` to the first answer: {args.model.name}", "", command_line("bench.start", argv)]
    header = ["start", "API answers (s)", "first text (s)", "whole answer (s)", "peak memory, warm-up done (MiB)"]
    lines += ["", *markdown_table(header, rows, "lrrrr"), ""]
    lines += machine_section("the app's own", load_before)
    publish("\n".join(lines), args.out)


def first_answer(model: Path, cache: Path, tokens: int) -> tuple[float, float, float, float]:
    """Start the app on `model` with `cache` as its cache directory and ask one photo question as soon
    as it listens: seconds from the start to (the API answering, the first text, the end of the answer),
    and the app's peak memory in MiB once its warm-up is done."""
    port = free_port()
    command = [sys.executable, "app.py", "--model", str(model.resolve()), "--port", str(port)]
    environment = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    started = time.perf_counter()
    app = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        _wait_until_it_answers(app, url)
        listening = time.perf_counter() - started
        first = None
        with requests.post(f"{url}/chat/completions", json=_photo_question(tokens), stream=True, timeout=600) as reply:
            reply.raise_for_status()
            for line in reply.iter_lines(decode_unicode=True):
                if (
                    first is None
                    and line.startswith("data: {")
                    and json.loads(line[6:])["choices"][0]["delta"].get("content")
                ):
                    first = time.perf_counter() - started
        if first is None:
            raise RuntimeError("the answer had no text")
        answered = time.perf_counter() - started
        _wait_until_idle(app.pid)  # the warm-up's compile done
        return listening, first, answered, _peak_mib(app.pid)
    finally:
        app.terminate()
        app.wait(30)


def _wait_until_idle(pid: int, quiet_s: float = 10.0) -> None:
    """Until the process and the processes it started (a package's build) have used under 10% of a
    core for `quiet_s` seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        before = _cpu_ticks(pid)
        time.sleep(quiet_s)
        after = _cpu_ticks(pid)
        used = sum(max(0, spent - before.get(process, 0)) for process, spent in after.items())
        if used / ticks < 0.1 * quiet_s:
            return


def _cpu_ticks(root: int) -> dict[int, int]:
    """CPU ticks (user and system) of `root` and each process below it, by pid."""
    parents, spent = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        pid = int(stat.parent.name)
        parents[pid], spent[pid] = int(fields[1]), int(fields[11]) + int(fields[12])
    tree, grew = {root}, True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    return {pid: spent[pid] for pid in tree if pid in spent}


def _peak_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM) so far, in MiB."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _wait_until_it_answers(app: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if app.poll() is not None:
            raise RuntimeError(f"the app exited with status {app.returncode}")
        try:
            if requests.get(f"{url}/models", timeout=2).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"the app did not answer within {START_TIMEOUT_S} s")


def _photo_question(tokens: int) -> dict:
    png = io.BytesIO()
    PILImage.new("RGB", (1024, 768), (200, 40, 30)).save(png, format="PNG")
    photo = f"data:image/png;base64,{base64.b64encode(png.getvalue()).decode()}"
    content = [{"type": "image_url", "image_url": {"url": photo, "detail": "low"}}, {"type": "text", "text": QUESTION}]
    return {
        "model": "assistant",
        "messages": [{"role": "user", "content": content}],
        "stream": True,
        "max_tokens": tokens,
        "temperature": 0,
    }


if __name__ == "__main__":
    main()
