"""Several users at once through the HTTP API, and peak memory per profile.

Clients: `assistant serve` is started on loopback; after one warm-up reply, 1, 4 and 8 clients each
send the same number of streamed chat requests at once (`/v1/chat/completions`, greedy, a fixed
budget of tokens). Reported: replies per second, p50/p95 time to the first streamed text, errors.
Every request has a time limit, so a stuck server shows up as errors and not as a hung benchmark.

Memory: each profile is loaded in a fresh process that answers one question; its peak resident
set (VmHWM) is what the machine must have for it.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from .common import timed

ASSISTANT = str(Path(sys.executable).parent / "assistant")
REQUEST_TIMEOUT_S = 120


@dataclass
class LoadResult:
    clients: int
    replies: int
    errors: int
    seconds: float
    first_text_s: list[float]

    @property
    def replies_per_s(self) -> float:
        return self.replies / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.first_text_s)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(profile: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """`assistant serve --profile PROFILE EXTRA...` on a free loopback port, once it answers:
    (the server process, its API's base URL)."""
    port = free_port()
    command = [ASSISTANT, "serve", "--profile", profile, "--port", str(port), *extra]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode}: {shlex.join(command)}")
        try:
            if requests.get(f"{url}/models", timeout=2).ok:
                return server, url
        except requests.ConnectionError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"the server did not start: {shlex.join(command)}")


def stream_chat(url: str, question: str, max_tokens: int) -> float:
    """Seconds to the first streamed text of one reply (the reply is read to its end)."""
    body = {
        "model": "assistant",
        "messages": [{"role": "user", "content": question}],
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    started = time.perf_counter()
    first = None
    with requests.post(f"{url}/chat/completions", json=body, stream=True, timeout=REQUEST_TIMEOUT_S) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"]
            if first is None and delta.get("content"):
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the reply had no text")
    return first


def load_test(url: str, clients: int, requests_each: int, max_tokens: int) -> LoadResult:
    first_text: list[float] = []
    errors = []
    lock = threading.Lock()

    def client(index: int) -> None:
        for turn in range(requests_each):
            try:
                seconds = stream_chat(url, f"Client {index}, question {turn}: name three colours.", max_tokens)
                with lock:
                    first_text.append(seconds)
            except Exception as error:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(repr(error))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]

    def run_all() -> None:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    _, seconds = timed(run_all)
    return LoadResult(clients, len(first_text), len(errors), seconds, first_text)


def concurrent_clients(
    profile: str, counts: tuple[int, ...], requests_each: int, max_tokens: int, extra: list[str]
) -> list[LoadResult]:
    server, url = serve(profile, extra)
    try:
        stream_chat(url, "Hello!", 4)  # waits for the decode step's compile, which belongs to start-up
        return [load_test(url, clients, requests_each, max_tokens) for clients in counts]
    finally:
        server.terminate()
        server.wait(timeout=30)


_PEAK_MEMORY_SCRIPT = """
import sys, time
from assistant.core import Assistant
from assistant.conversation import Message
from assistant.settings import load_settings
from assistant.sampling import GenerationOptions
started = time.perf_counter()
cli = {"profile": sys.argv[1], **({"cache_dir": sys.argv[2]} if len(sys.argv) > 2 else {})}
assistant = Assistant.from_settings(load_settings(cli=cli))
loaded = time.perf_counter() - started
conversation = assistant.new_conversation()
conversation.add(Message.user("Say hello."))
assistant.engine.reply(conversation, GenerationOptions(temperature=0.0, max_new_tokens=16)).text()
assistant.close()
# VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(loaded, peak_kib)
"""


def peak_memory(profile: str, cache_dir: str | None) -> tuple[float, float]:
    """(load seconds, peak resident MiB) of a fresh process that loads `profile` and answers once."""
    command = [sys.executable, "-c", _PEAK_MEMORY_SCRIPT, profile, *([cache_dir] if cache_dir else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    load_s, kib = done.stdout.split()[-2:]
    return float(load_s), int(kib) / 1024
