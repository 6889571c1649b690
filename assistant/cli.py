"""The `assistant` command: serve the browser chat, or ask one question from the terminal.

    assistant serve [--host 127.0.0.1] [--port 7860] [--profile NAME] ...
    assistant ask [--image PATH]... [--profile NAME] [--persona NAME] [--max-new-tokens N] [--seed N] "question"

Every setting is also a flag (see `assistant ask --help`); flags win over ASSISTANT_* variables,
which win over the config file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .errors import AssistantError
from .profiles import PROFILE_NAMES
from .settings import Settings, load_settings

EXIT_ERROR = 1  # a clear, expected problem (bad file, unknown model, ...), reported in one line


def main(argv: Sequence[str] | None = None) -> int:
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

    serve = commands.add_parser("serve", parents=[_model_flags(), _generation_flags()], help="start the browser chat")
    serve.add_argument("--host", default=argparse.SUPPRESS, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", default=argparse.SUPPRESS, help="port to listen on (default 7860)")
    serve.add_argument("--queue-size", default=argparse.SUPPRESS, help="requests that may wait for the model")
    serve.set_defaults(run=_serve)

    ask = commands.add_parser("ask", parents=[_model_flags(), _generation_flags()], help="ask one question")
    ask.add_argument("question", help="the question (may be empty when an image is given)")
    ask.add_argument("--image", action="append", default=[], metavar="PATH", help="a photo; repeat for several")
    ask.set_defaults(run=_ask)
    return parser


def _model_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--config", default=None, metavar="PATH", help="TOML config file")
    flag = _setting_adder(flags)
    flag("--profile", help=f"model profile: {', '.join(PROFILE_NAMES)} (default auto)")
    flag("--model", help="a hub id or local directory instead of the profile's model")
    flag("--device", help="auto, cpu, cuda or cuda:N")
    flag("--dtype", help="auto, float32, bfloat16 or float16")
    flag("--device-map", help="e.g. auto: spread the model over several GPUs")
    flag("--trust-remote-code", action="store_const", const=True, help="allow code shipped with a model")
    flag("--context-tokens", help="cap on the model's context length")
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
    return flags


def _setting_adder(parser: argparse.ArgumentParser):
    def add(flag: str, **kwargs) -> None:
        # Values stay strings here: the settings object converts and validates them all in one
        # place, with the same messages as for the config file and the environment.
        parser.add_argument(flag, default=argparse.SUPPRESS, **kwargs)

    return add


def _setting_flags(args: argparse.Namespace) -> dict:
    return {name: value for name, value in vars(args).items() if name in Settings.model_fields}


def _quiet_libraries() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from .ui import launch

    assistant = _load(settings)
    try:
        launch(assistant)
    finally:
        assistant.close()
    return 0


def _ask(settings: Settings, args: argparse.Namespace) -> int:
    from .engine import TextDelta, TurnsDropped, Usage

    assistant = _load(settings)
    try:
        conversation = assistant.new_conversation()
        conversation.add(assistant.user_message(args.question, args.image))
        for event in assistant.reply(conversation):
            if isinstance(event, TextDelta):
                print(event.text, end="", flush=True)
            elif isinstance(event, TurnsDropped):
                print(f"note: {event.message}", file=sys.stderr)
            elif isinstance(event, Usage):
                print()
                print(format_usage(event), file=sys.stderr)
    finally:
        # End the engine's worker before the interpreter tears torch down under it.
        assistant.close()
    return 0


def _load(settings: Settings):
    from .core import Assistant

    print(f"loading profile {settings.profile}{f' with model {settings.model}' if settings.model else ''}…", file=sys.stderr)
    assistant = Assistant.from_settings(settings)
    model = assistant.model
    print(
        f"loaded {model.name} on {model.device} ({str(model.dtype).removeprefix('torch.')}) "
        f"in {model.load_seconds:.1f} s; {model.details.get('reason', '')}",
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
