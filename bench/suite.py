"""`assistant bench`: every speed figure of the project in one run, each beside its baseline.

    assistant bench [--out bench/results/bench.md] [--tokens 64] [--skip http,speech,...]
    python -m bench.suite ...   (the same: `assistant bench` runs this module)

Writes a Markdown table (printed too) and the same numbers as JSON (`--out` with .json), with the
machine's details and its memory bandwidth, measured in the same run. Sections:

    decode   the starter (text, photo + text) and a realistic-size hub LM: engine vs transformers,
             % of the bandwidth limit, greedy agreement with the baseline
    peer     llama.cpp on the same SmolLM2 GGUF, when llama-cpp-python is installed
    vlm      the `cpu` profile's VLM at full size (published geometry, models/configs.py): photo
             question at each detail level, follow-up, decode; the fast loop vs transformers' generate
    images   encoding time per vision encoder
    speech   Whisper real-time factor per backend; the piper voice
    http     1, 4, 8 concurrent clients of `assistant serve --profile starter`
    memory   peak resident memory per profile (fresh process each)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch
import transformers
from PIL import Image, ImageDraw

from . import decode, machine
from .common import command, markdown_table, publish, timed

SECTIONS = ("decode", "peer", "vlm", "images", "speech", "http", "memory")
# The `cpu` profile's model (SmolVLM-500M-Instruct) has SmolVLM2-500M's geometry, which is built here.
CPU_PROFILE_LOOK_ALIKE = "smolvlm2-500m"
VLM_PHOTO = (1024, 768)  # a phone photo's shape, scaled down
MB = 1e6
TARGET_SPEEDUP, TARGET_LIMIT_PERCENT, TARGET_PHOTO_TTFT_S = 2.0, 50.0, 1.0


def red_circle() -> Image.Image:
    image = Image.new("RGB", (224, 224), (235, 235, 235))
    ImageDraw.Draw(image).ellipse((60, 60, 164, 164), fill=(210, 30, 30))
    return image


def run(args) -> dict:
    from assistant.threads import reserve_for_model, run_in_model_thread

    reserve_for_model()  # as the app does: this thread loads, other threads compute (assistant/threads.py)
    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    bandwidth = run_in_model_thread(machine.read_bandwidth, device)
    report: dict = {
        "command": args.command,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine.details(device, bandwidth),
    }

    def section(name: str, work):
        if name in args.skip:
            return
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        report[name], seconds = timed(lambda: _outcome(work))
        print(f"bench: {name} took {seconds:.0f} s", file=sys.stderr, flush=True)

    section("decode", lambda: _decode(args, device))
    section("peer", lambda: _peer(args))
    section("vlm", lambda: _vlm(args))
    section("images", lambda: run_in_model_thread(_images, device))
    section("speech", lambda: run_in_model_thread(_speech, args))
    section("http", lambda: _http(args))
    section("memory", lambda: _memory(args))
    return report


def _outcome(work):
    """work()'s result, or {"error": why} when it raised."""
    try:
        return work()
    except Exception as error:  # noqa: BLE001 - one section failing must not lose the others
        return {"error": f"{type(error).__name__}: {error}"}


def _decode(args, device) -> list[dict]:
    from assistant.settings import load_settings

    def settings_for(**overrides):
        values = {"profile": "starter", "device": device.type, "fast_decode": args.fast_decode, **overrides}
        if args.cache_dir:
            values["cache_dir"] = args.cache_dir
        return load_settings(cli=values, env={}, config_file=None)

    results = decode.starter(settings_for, red_circle(), args.tokens)
    if not args.quick:
        results += decode.hub_language_model(args.tokens, device)
    return [dataclasses.asdict(result) for result in results]


def _peer(args) -> dict:
    from . import peer

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return {"error": f"llama-cpp-python is not installed: {peer.INSTALL}"}
    from assistant.models.causal_lm import load_causal_lm

    _, tokenizer = load_causal_lm("smollm2-135m", cache_dir=_cache_dir(args), progress=None)
    prompt_ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": decode.TEXT_QUESTION}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    return dataclasses.asdict(peer.llama_cpp(list(prompt_ids), args.tokens))


def _vlm(args) -> list[dict] | dict:
    from . import vlm

    if args.quick:
        return {"error": "left out by --quick (a full-size VLM beside generate at every detail: about 15 minutes)"}
    directory = vlm.built(CPU_PROFILE_LOOK_ALIKE, _cache_dir(args))
    rows = []
    for mode in ("generate", "int8-compiled"):
        rows += vlm.measure(directory, mode, tokens=32, runs=2, photos=(VLM_PHOTO,))
    return [dataclasses.asdict(row) for row in rows]


def _images(device) -> list[dict]:
    from . import media

    return [
        dataclasses.asdict(media.starter_encoder(red_circle(), runs=5)),
        dataclasses.asdict(media.hub_encoder(2, device)),
    ]


def _speech(args) -> list[dict]:
    from . import media

    rows = [*media.speech_backends(args.threads), media.spoken_answer(args.threads)]
    return [{**dataclasses.asdict(row), "real_time_factor": row.real_time_factor} for row in rows]


def _http(args) -> list[dict]:
    from . import serving

    extra = ["--cache-dir", args.cache_dir] if args.cache_dir else []
    rows = []
    # The baseline answers one request at a time; the engine batches what waits (serve's default).
    for decoding, flags in (
        ("one at a time (baseline)", ["--max-batch", "1"]),
        ("batched, up to 4", ["--max-batch", "4"]),
    ):
        results = serving.concurrent_clients("starter", (1, 4, 8), requests_each=2, max_tokens=32, extra=extra + flags)
        rows += [
            {
                "clients": r.clients,
                "decoding": decoding,
                "replies": r.replies,
                "errors": r.errors,
                "seconds": r.seconds,
                "replies_per_s": r.replies_per_s,
                "first_text_p50_s": r.percentile(0.5),
                "first_text_p95_s": r.percentile(0.95),
            }
            for r in results
        ]
    baseline = {row["clients"]: row["replies_per_s"] for row in rows if "baseline" in row["decoding"]}
    for row in rows:
        row["vs_baseline"] = row["replies_per_s"] / baseline[row["clients"]] if baseline.get(row["clients"]) else None
    return rows


def _memory(args) -> list[dict]:
    from . import serving

    rows = []
    for profile in ("tiny", "starter"):
        try:
            load_s, peak_mib = serving.peak_memory(profile, args.cache_dir)
            rows.append({"profile": profile, "load_s": load_s, "peak_mib": peak_mib})
        except Exception as error:  # noqa: BLE001 - reported in the table
            rows.append({"profile": profile, "error": str(error)})
    return rows


def _cache_dir(args) -> Path:
    from assistant.settings import load_settings

    return Path(args.cache_dir) if args.cache_dir else load_settings(cli={}, env={}, config_file=None).cache_dir


# --- the Markdown report ---------------------------------------------------------------------


def markdown(report: dict) -> str:
    lines = ["# assistant bench", "", f"`{report['command']}` on {report['date']}", ""]
    bandwidth = report["machine"]["measured read bandwidth GB/s"] * 1e9
    if "decode" in report:
        lines += _decode_table(report["decode"], bandwidth, report.get("peer"))
    for name, title, render in (
        ("vlm", f"Photo questions, the cpu profile's VLM at full size ({CPU_PROFILE_LOOK_ALIKE})", _vlm_table),
        ("http", "Several users at once (HTTP API, starter)", _http_table),
        ("images", "Image encoding", _images_table),
        ("speech", "Speech", _speech_table),
        ("memory", "Peak memory per profile (load + one reply, fresh process)", _memory_table),
    ):
        if name in report:
            lines += [f"## {title}", ""]
            lines += (
                [f"Not measured: {report[name]['error']}", ""]
                if isinstance(report[name], dict) and "error" in report[name]
                else render(report[name])
            )
    lines += ["## Machine", ""] + [f"- {key}: {value}" for key, value in report["machine"].items()] + [""]
    return "\n".join(lines)


DECODE_HEADER = (
    "model",
    "prompt",
    "runtime",
    "first token (s)",
    "decode tok/s",
    "vs baseline",
    "weights read per token (MB)",
    "% of bandwidth limit",
    "linear layers alone, eager, % of bandwidth",
    "greedy tokens as baseline",
)


def _decode_table(rows, bandwidth: float, peer_result) -> list[str]:
    lines = ["## Language model: decode and time to first token", ""]
    if isinstance(rows, dict):
        return lines + [f"Not measured: {rows['error']}", ""]
    baselines = {(r["model"], r["prompt"]): r for r in rows if r["runtime"].startswith("baseline")}

    def vs_baseline(tokens_per_s: float, model: str, prompt: str) -> str:
        base = baselines.get((model, prompt))
        ratio = tokens_per_s / base["tokens_per_s"] if base else math.nan
        return f"{ratio:.2f}x"

    def percent(tokens_per_s: float, bytes_per_token: float) -> str:
        return f"{100.0 * tokens_per_s * bytes_per_token / bandwidth:.0f}%"

    cells = [
        [
            r["model"],
            r["prompt"],
            r["runtime"],
            f"{r['time_to_first_token_s']:.2f}",
            f"{r['tokens_per_s']:.1f}",
            vs_baseline(r["tokens_per_s"], r["model"], r["prompt"]),
            f"{r['weight_bytes_per_token'] / MB:.0f}",
            percent(r["tokens_per_s"], r["weight_bytes_per_token"]),
            _percent_or_dash(r["linear_layers_bytes_per_s"], bandwidth),
            r["same_tokens_as_baseline"] or "-",
        ]
        for r in rows
    ]
    peer_measured = isinstance(peer_result, dict) and "error" not in peer_result
    if peer_measured:
        cells.append(
            [
                "SmolLM2-135M Q4_1 GGUF",
                "text",
                f"peer: {peer_result['name']}",
                f"{peer_result['time_to_first_token_s']:.2f}",
                f"{peer_result['tokens_per_s']:.1f}",
                vs_baseline(peer_result["tokens_per_s"], "starter", "text"),
                f"{peer_result['file_bytes'] / MB:.0f} (file)",
                percent(peer_result["tokens_per_s"], peer_result["file_bytes"]),  # the tied head reads it all
                "-",
                "-",
            ]
        )
    lines += markdown_table(DECODE_HEADER, cells, "lllrrrrrrl")
    if isinstance(peer_result, dict) and not peer_measured:
        lines += ["", f"Peer not measured: {peer_result['error']}"]
    lines += ["", *_targets(rows, bandwidth), ""]
    return lines


def _percent_or_dash(bytes_per_s: float, bandwidth: float) -> str:
    return f"{100 * bytes_per_s / bandwidth:.0f}%" if bytes_per_s else "-"


def _targets(rows, bandwidth: float) -> list[str]:
    engine = {r["prompt"]: r for r in rows if r["model"] == "starter" and not r["runtime"].startswith("baseline")}
    base = {r["prompt"]: r for r in rows if r["model"] == "starter" and r["runtime"].startswith("baseline")}
    if "text" not in engine or "text" not in base:
        return []
    speedup = engine["text"]["tokens_per_s"] / base["text"]["tokens_per_s"]
    percent = 100.0 * engine["text"]["tokens_per_s"] * engine["text"]["weight_bytes_per_token"] / bandwidth
    ttft = engine["photo + text"]["time_to_first_token_s"] if "photo + text" in engine else math.nan

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return [
        "Targets (starter, this machine):",
        f"- engine decode >= {TARGET_SPEEDUP:.0f}x transformers: {speedup:.2f}x, {verdict(speedup >= TARGET_SPEEDUP)}",
        f"- >= {TARGET_LIMIT_PERCENT:.0f}% of the bandwidth limit: {percent:.0f}%, "
        f"{verdict(percent >= TARGET_LIMIT_PERCENT)}",
        f"- time to first token, photo + question <= {TARGET_PHOTO_TTFT_S:.0f} s: {ttft:.2f} s, "
        f"{verdict(ttft <= TARGET_PHOTO_TTFT_S)}",
    ]


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _http_table(rows) -> list[str]:
    header = (
        "clients",
        "decoding",
        "replies",
        "errors",
        "replies/s",
        "vs baseline",
        "first text p50 (s)",
        "first text p95 (s)",
    )
    cells = [
        [
            r["clients"],
            r.get("decoding", "-"),
            r["replies"],
            r["errors"],
            f"{r['replies_per_s']:.2f}",
            _ratio(r.get("vs_baseline")),
            f"{r['first_text_p50_s']:.2f}",
            f"{r['first_text_p95_s']:.2f}",
        ]
        for r in rows
    ]
    return markdown_table(header, cells, "rlrrrrrr") + [""]


def _vlm_table(rows) -> list[str]:
    from . import vlm

    generate = {r["detail"]: r for r in rows if r["decoding"] == "generate"}

    def vs_generate(r: dict, field: str) -> str:
        base = generate.get(r["detail"])
        return "-" if base is None or r is base else f"{base[field] / r[field]:.1f}x faster"

    cells = [
        [
            *vlm.cells(vlm.VlmRow(**r)),
            vs_generate(r, "time_to_first_token_s"),
            vs_generate(r, "follow_up_first_token_s"),
        ]
        for r in rows
    ]
    header = [*vlm.HEADER, "first token vs generate", "follow-up vs generate"]
    return markdown_table(header, cells, "llrrrrrrrrrr") + ["", vlm.FOLLOW_UP_NOTE, ""]


def _images_table(rows) -> list[str]:
    cells = [[r["encoder"], r["image_px"], f"{r['milliseconds']:.0f}"] for r in rows]
    return markdown_table(("encoder", "image (px)", "ms per image"), cells, "lrr") + [""]


def _speech_table(rows) -> list[str]:
    cells = [
        [
            r["runtime"],
            f"{r['audio_s']:.1f}",
            f"{r['seconds']:.2f}",
            f"{r['real_time_factor']:.3f}",
            "-" if math.isnan(r["word_error_rate"]) else f"{r['word_error_rate']:.3f}",
        ]
        for r in rows
    ]
    return markdown_table(("runtime", "audio (s)", "seconds", "real-time factor", "WER"), cells, "lrrrr") + [""]


def _memory_table(rows) -> list[str]:
    cells = [
        [r["profile"], f"{r['load_s']:.1f}", f"{r['peak_mib']:.0f}"]
        if "error" not in r
        else [r["profile"], f"not measured: {r['error']}", ""]
        for r in rows
    ]
    return markdown_table(("profile", "load (s)", "peak memory (MiB)"), cells, "lrr") + [""]


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="assistant bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/bench.md"), help="the Markdown report (JSON beside it)"
    )
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per measured reply (default 64)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--skip", default="", help=f"sections to leave out, comma-separated: {','.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="the starter only in the decode section, no vlm section")
    parser.add_argument(
        "--fast-decode", default="auto", help="the engine's weights for the starter: auto (int8), bfloat16, float32"
    )
    parser.add_argument("--cache-dir", default=None, help="the assistant's cache (converted LMs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    unknown = args.skip - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; the sections are: {', '.join(SECTIONS)}")
    transformers.logging.set_verbosity_error()  # as the `assistant` command does: the report, not library chatter
    if args.threads:
        torch.set_num_threads(args.threads)  # before reserve_for_model: the model threads
    args.threads = torch.get_num_threads()
    args.command = command("bench.suite", argv)
    report = run(args)
    publish(markdown(report), args.out)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
