"""`assistant ask` end to end, as a user runs it: a real subprocess, the real console script."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ASSISTANT = str(Path(sys.executable).parent / "assistant")
PROJECT = Path(__file__).resolve().parents[2]


def run(*args, env_extra=None, timeout=180):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([*args], capture_output=True, text=True, env=env, timeout=timeout, cwd=PROJECT)


@pytest.fixture(scope="module")
def built(cache_dir, tiny_model):
    """The tiny model is built once by the session fixtures; the subprocesses reuse the cache."""
    return cache_dir


def test_ask_streams_an_answer_about_photos_and_ends_with_usage(built, photo_files):
    ask = [ASSISTANT, "ask", "--profile", "tiny", "--image", str(photo_files[0]), "--image", str(photo_files[1])]
    ask += ["--seed", "3", "--max-new-tokens", "12", "what is this?"]
    result = run(*ask)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the answer goes to stdout"
    usage = result.stderr.strip().splitlines()[-1]
    assert usage.startswith("[usage: ") and "12 completion tokens" in usage, usage
    image_tokens = int(usage.split("(")[1].split(" for images")[0])
    assert image_tokens > 0, f"two photos should take image tokens: {usage}"
    again = run(*ask)
    assert again.stdout == result.stdout, "the same seed gives the same answer"


def test_a_corrupt_photo_exits_non_zero_with_one_line_and_no_traceback(built, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = run(ASSISTANT, "ask", "--profile", "tiny", "--image", str(bad), "what is this?")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: bad.png: "), result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--temperature", "-1"], "setting 'temperature' from --temperature"),
        (["--persona", "pirate"], "unknown persona 'pirate'; the personas are: default, describer, tutor"),
        (["--profile", "huge"], "unknown profile 'huge'; the profiles are: auto, tiny, starter, cpu, gpu"),
    ],
)
def test_wrong_options_are_explained(built, args, expected):
    result = run(ASSISTANT, "ask", *args, "hello")
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_profile_whose_model_cannot_be_had_says_what_to_do(tmp_path):
    result = run(ASSISTANT, "ask", "--profile", "cpu", "hello", env_extra={"HF_HOME": str(tmp_path)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    for advice in (
        "SmolVLM-500M-Instruct",
        "not in the local Hugging Face cache",
        "--profile tiny",
        "--model PATH",
        "HF_HUB_OFFLINE",
    ):
        assert advice in message, f"{advice!r} missing from: {message}"


def test_app_py_takes_the_serve_flags():
    result = run(sys.executable, "app.py", "--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--profile", "--persona", "--max-new-tokens"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (
            ["--host", "0.0.0.0"],
            {},
            "refusing to serve the chat on 0.0.0.0 (reachable from other machines) without a password",
        ),
        (["--share"], {}, "refusing to serve the chat on a public --share link without a password"),
        (["--host", "0.0.0.0", "--auth", "nocolon"], {}, "setting 'auth' from --auth: expected USER:PASSWORD"),
        (["--host", "0.0.0.0"], {"ASSISTANT_AUTH": "ann"}, "from environment ASSISTANT_AUTH: expected USER:PASSWORD"),
    ],
)
def test_serving_beyond_this_machine_needs_a_password(args, env, expected):
    result = run(sys.executable, "app.py", "--profile", "tiny", *args, env_extra=env, timeout=60)
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "nocolon" not in result.stderr, "a bad password is never echoed"


@pytest.mark.parametrize("when", ["the port opens", "the API answers"])
def test_a_service_managers_stop_ends_the_app_cleanly(built, when):
    """SIGTERM (systemd, `docker stop`) killed the app where it stood: no server closed, no engine
    ended, a package build's scratch left on disk. It ends as Ctrl-C does, with status 0, also when
    it comes while the server is still starting (it ended with 130 there)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    app = subprocess.Popen(
        [sys.executable, "app.py", "--profile", "tiny", "--port", str(port), "--compile-decode", "off"],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = _port_open if when == "the port opens" else _answers
    try:
        deadline = time.monotonic() + 120
        while not ready(port):
            assert app.poll() is None and time.monotonic() < deadline, "the app did not start"
            time.sleep(0.01)
        app.send_signal(signal.SIGTERM)
        _, errors = app.communicate(timeout=60)
    finally:
        app.kill()
    assert app.returncode == 0, errors[-2000:]
    assert "Traceback" not in errors


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).ok
    except requests.ConnectionError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
