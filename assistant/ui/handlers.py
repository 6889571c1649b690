"""What each control of the chat does, in the core's terms. Gradio calls these with plain values
(the input box's {"text", "files"}, the side panel's numbers, the session's chat) and shows what
they return; nothing here imports Gradio.

Every streaming handler yields `Update`s. An error never escapes as a traceback: it becomes an
error bubble in the chat, and whatever the person typed goes back into the input box.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import (
    NO_SPEECH,
    SAMPLE_RATE,
    Assistant,
    CallListener,
    CallTurn,
    Detail,
    Heard,
    LiveTranscription,
    Speech,
    encode_speech,
)
from ..errors import AssistantError
from ..events import Event, SpeechChunk, TextDelta, TurnsDropped, Usage
from . import chat as bubbles
from .chat import Bubble

EMPTY_INPUT = {"text": "", "files": []}
KEPT_REPLY_STATS = 5  # replies listed in the side panel
KEPT_TRANSCRIPTS = 256  # live recordings' transcripts waiting to be sent (a few words each)
# An exported conversation is a file for the browser to download (Gradio copies it to its own cache as
# the handler returns); ours is removed at a later export once it is this old.
KEPT_EXPORT_S = 3600.0


@dataclass(frozen=True)
class Panel:
    """The side panel's choices for the next reply."""

    persona: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    seed: int | None = None
    speak: bool | None = None  # "Speak answers" as the person set it; None: speak after a voice question
    detail: Detail | None = None  # how much of the photos the model sees; None: the settings' own

    @classmethod
    def from_values(cls, speak, persona, temperature, top_p, max_new_tokens, seed, detail=None) -> Panel:
        """Gradio gives numbers as floats and an empty seed box as None."""
        whole = lambda value: None if value is None or value == "" else int(value)  # noqa: E731
        return cls(persona or None, temperature, top_p, whole(max_new_tokens), whole(seed), speak, detail or None)

    def speaks_after(self, asked: list[Bubble]) -> bool:
        """The person's choice wins; otherwise answers are spoken after a voice question."""
        start = bubbles.last_user_message(asked)
        voiced = start is not None and any(b["kind"] == "spoken" for b in asked[start:])
        return voiced if self.speak is None else self.speak

    def generation_overrides(self) -> dict:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }


@dataclass
class Update:
    chat: list[Bubble]
    input: dict | None = None  # the input box's new value; None leaves it as it is
    usage: Usage | None = None  # set once, when a reply has finished
    speech: Speech | None = None  # the next spoken sentence, to play now
    speaking: bool | None = None  # whether this reply is spoken (set on the first update)


class ChatHandlers:
    def __init__(self, assistant: Assistant, upload_folder: Path | None = None):
        self.assistant = assistant
        # Imported photos are written here, where the chat may show them from.
        self.upload_folder = Path(upload_folder or tempfile.gettempdir()) / "assistant-imports"
        self._heard: dict[str, Heard] = {}  # recordings transcribed live, by file, until they are sent
        self._prepared: tuple | None = None  # the photos last started on ahead of their question

    def prepare(self, message: dict | None, detail: Detail | None) -> None:
        """Photos attached to the input box are started on while the question is typed (the box
        changes at every key: the same photos are started on once)."""
        photos, _ = bubbles.split_files(_paths((message or {}).get("files") or []))
        attached = (tuple(photos), detail or None)
        if photos and attached != self._prepared:
            self._prepared = attached
            self.assistant.prepare_photos(photos, detail or None)

    # --- sending and answering

    def send(
        self, message: dict | None, chat: list[Bubble], panel: Panel, call: CallListener | None = None
    ) -> Iterator[Update]:
        """A new user message from the input box, then the streamed reply. A recording that was
        transcribed while it was made (see stop_listening) is not transcribed again. In a `call`,
        what the reply says aloud is told to it before it is played (its echo is no question)."""
        message = message or EMPTY_INPUT
        photos, recordings = bubbles.split_files(_paths(message.get("files") or []))
        live = [path for path in recordings if path in self._heard]
        heard = self._heard.get(live[0]) if live else None
        try:
            hint = bubbles.last_spoken_language(chat)
            to_transcribe = [path for path in recordings if path not in live[:1]]
            sent = self.assistant.user_message(
                message.get("text") or "", photos, to_transcribe, language_hint=hint, heard=heard, detail=panel.detail
            )
        except AssistantError as error:
            yield Update([*chat, bubbles.error_bubble(str(error))], input=message)
            return
        if live:
            self._heard.pop(live[0])
        asked = [*chat, *bubbles.user_bubbles(sent, photos, recordings)]
        yield Update(asked, input=EMPTY_INPUT)
        yield from self._answer(asked, panel, restore_on_error=message, call=call)

    # --- the microphone, transcribed while the person speaks

    def start_listening(self, chat: list[Bubble]) -> LiveTranscription:
        """A new recording, heard in the language the person last spoke in this chat."""
        return self.assistant.voice.live_transcription(bubbles.last_spoken_language(chat))

    def listen(self, live: LiveTranscription, samples: np.ndarray, sample_rate: int) -> str:
        """The next chunk of the recording -> what has been heard so far."""
        try:
            return live.add(samples, sample_rate)
        except AssistantError as error:
            return f"⚠️ {error}"

    def stop_listening(self, live: LiveTranscription, message: dict | None) -> Update:
        """The person stopped recording: the rest is transcribed, and the recording is attached to
        the input box (`Update.input`) with its transcript remembered, for `send`. Nothing heard is
        an error bubble (`Update.chat`) and the box stays as it was."""
        try:
            heard = live.finish()
        except AssistantError as error:
            return Update([bubbles.error_bubble(str(error))])
        if not heard.text:
            return Update([bubbles.error_bubble(NO_SPEECH)])
        path = self._remember_recording(heard)
        message = message or EMPTY_INPUT
        return Update(
            [], input={"text": message.get("text") or "", "files": [*_paths(message.get("files") or []), path]}
        )

    def _remember_recording(self, heard: Heard) -> str:
        """Keep a recording transcribed live as a file, its transcript remembered for `send`."""
        path = str(self._keep_audio(Speech(heard.audio, SAMPLE_RATE), "question"))
        self._heard[path] = Heard(heard.text, heard.language, np.zeros(0, np.float32))  # the words, not the audio
        while len(self._heard) > KEPT_TRANSCRIPTS:
            self._heard.pop(next(iter(self._heard)))  # the oldest: a recording never sent
        return path

    # --- a hands-free call: the microphone stays open, and each turn is sent as its silence ends

    def start_call(self, chat: list[Bubble]) -> CallListener:
        """A call's listening side, in the language the person last spoke in this chat."""
        return self.assistant.voice.call_listener(bubbles.last_spoken_language(chat))

    def hear_in_call(self, call: CallListener, samples: np.ndarray, sample_rate: int) -> dict | None:
        """The next chunk of a call's microphone -> the input box's value that sends the turns it
        ended (their recordings attached, transcripts remembered), or None while none has."""
        return self._turns_to_send(call.add(samples, sample_rate))

    def hang_up(self, call: CallListener) -> dict | None:
        """The call ended: the input box's value that sends what was being said, if anything."""
        turn = call.hang_up()
        return self._turns_to_send([turn] if turn else [])

    def _turns_to_send(self, turns: list[CallTurn]) -> dict | None:
        """The input box's value that sends a call's turns as one recording (none: None)."""
        if not turns:
            return None
        return {"text": "", "files": [self._remember_recording(_heard_turn(turns))]}

    def retry(self, chat: list[Bubble], panel: Panel) -> Iterator[Update]:
        """Answer the last user message again (whatever came after it is replaced)."""
        start = bubbles.last_user_message(chat)
        if start is None:
            yield Update(chat)
            return
        yield from self._answer(chat[: bubbles.end_of_message(chat, start)], panel)

    def edit(self, chat: list[Bubble], index: int, text: str, panel: Panel) -> Iterator[Update]:
        """Replace the words of the user bubble at `index`, forget what came after it, answer again."""
        if not 0 <= index < len(chat) or chat[index]["role"] != "user" or chat[index]["kind"] == "file":
            yield Update(
                [*chat, bubbles.error_bubble(f"message {index} is not one of your messages with words to edit")]
            )
            return
        edited = [*chat[:index], {**chat[index], "kind": "text", "content": text}]
        edited += [b for b in chat[index + 1 : bubbles.end_of_message(chat, index)] if b["kind"] == "file"]
        yield from self._answer(edited, panel)

    def _answer(
        self,
        asked: list[Bubble],
        panel: Panel,
        restore_on_error: dict | None = None,
        call: CallListener | None = None,
    ) -> Iterator[Update]:
        shown = asked
        speaking = panel.speaks_after(asked)
        yield Update(asked, speaking=speaking)
        try:
            conversation = bubbles.to_conversation(asked, self.assistant, panel.persona, panel.detail)
            reply = self.assistant.reply(conversation, **panel.generation_overrides())
            events = self.assistant.voice.spoken(reply) if speaking else reply
            said: list[Speech] = []
            usage = None
            for shown, event in _streamed(asked, events):
                match event:
                    case SpeechChunk(text=text, speech=speech):
                        if call is not None:
                            call.assistant_said(text)
                        said.append(speech)
                        yield Update(shown, speech=speech)
                    case Usage():
                        usage = event
                    case _:
                        yield Update(shown)
            if said:
                shown = [
                    *shown,
                    bubbles.file_bubble("assistant", str(self._keep_audio(Speech.join(said), "answer"))),
                ]  # to replay
            yield Update(shown, usage=usage)
        except AssistantError as error:
            if restore_on_error is not None and shown is asked:
                # Nothing was answered: take the message back out and hand it back to be sent again.
                start = bubbles.last_user_message(asked)
                yield Update([*asked[:start], bubbles.error_bubble(str(error))], input=restore_on_error)
            else:
                yield Update([*shown, bubbles.error_bubble(str(error))])

    def _keep_audio(self, speech: Speech, kind: str) -> Path:
        """A WAV file the chat can play back (a spoken answer, or a question recorded live)."""
        data, _ = encode_speech(speech, "wav")
        folder = self.upload_folder.parent / "assistant-speech"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{kind}-{uuid.uuid4().hex[:12]}.wav"
        path.write_bytes(data)
        return path

    # --- the rest of the controls

    def undo(self, chat: list[Bubble]) -> Update:
        """Take back the last user message and its reply; what was sent goes back into the input box."""
        start = bubbles.last_user_message(chat)
        if start is None:
            return Update(chat)
        return Update(chat[:start], input=bubbles.as_input(chat[start : bubbles.end_of_message(chat, start)]))

    def export(self, chat: list[Bubble], panel: Panel, kind: str) -> Path:
        """The chat as a file to download: "json" (photos inside; can be imported) or "markdown"."""
        conversation = bubbles.to_conversation(chat, self.assistant, panel.persona)
        text = self.assistant.export_conversation(conversation, kind)
        exports = self.upload_folder.parent / "assistant-exports"
        _remove_older_than(exports, KEPT_EXPORT_S)  # one folder an export: they added up for good
        exports.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=exports))  # its own: the file keeps the name a person expects
        path = folder / ("conversation.json" if kind == "json" else "conversation.md")
        path.write_text(text, encoding="utf-8")
        return path

    def import_file(self, path: str, chat: list[Bubble]) -> list[Bubble]:
        """A conversation exported as JSON replaces the chat; a bad file leaves it and says why."""
        try:
            conversation = self.assistant.import_conversation(Path(path).read_bytes())
        except (AssistantError, OSError) as error:
            return [*chat, bubbles.error_bubble(f"could not import {Path(path).name}: {error}")]
        self.upload_folder.mkdir(parents=True, exist_ok=True)
        return bubbles.from_conversation(conversation, Path(tempfile.mkdtemp(dir=self.upload_folder)))

    def restore(self, saved: list | None, allowed_folders: list[Path]) -> list[Bubble]:
        """The chat this browser kept across a reload. It comes from the browser, so it is checked:
        only well-formed bubbles, and files only from the folders uploads and imports live in
        (a file the server no longer has is left out)."""
        chat = []
        for bubble in saved or []:
            if not _well_formed(bubble):
                continue
            if bubble["kind"] == "file" and not _inside(bubble["content"].get("path"), allowed_folders):
                continue
            kept = {key: bubble[key] for key in ("role", "kind", "content")}
            if bubble["kind"] == "spoken" and _is_language_code(bubble.get("language")):
                kept["language"] = bubble["language"]
            chat.append(kept)
        return chat


def _heard_turn(turns: list[CallTurn]) -> Heard:
    """A call's turns (one, or the rare two a chunk ended) as one recording transcribed live."""
    return Heard(" ".join(turn.text for turn in turns), turns[-1].language, np.concatenate([t.audio for t in turns]))


def reply_stats(usages: list[Usage]) -> str:
    """The side panel's table of the latest replies: time to first token and decoding speed."""
    if not usages:
        return "_No replies yet._"
    rows = ["| # | 1st token | tok/s | tokens |", "|---:|---:|---:|---:|"]
    first_number = len(usages) - min(len(usages), KEPT_REPLY_STATS) + 1
    for number, usage in enumerate(usages[-KEPT_REPLY_STATS:], start=first_number):
        first = "–" if usage.time_to_first_token_s is None else f"{usage.time_to_first_token_s:.2f} s"
        ended = "" if usage.finish_reason == "stop" else f" ({usage.finish_reason})"
        rows.append(f"| {number} | {first} | {usage.tokens_per_s:.1f} | {usage.completion_tokens}{ended} |")
    return "\n".join(rows)


def _streamed(asked: list[Bubble], events: Iterator[Event]) -> Iterator[tuple[list[Bubble], Event]]:
    """(the chat with the reply growing at its end, the event) for each event of the reply."""
    notes, text, shown = "", "", asked
    for event in events:
        match event:
            case TurnsDropped(message=message):
                notes += f"_(Note: {message}.)_\n\n"
            case TextDelta(text=piece):
                text += piece
        if notes or text:
            shown = [*asked, {"role": "assistant", "kind": "text", "content": notes + text}]
        yield shown, event


def _remove_older_than(folder: Path, seconds: float) -> None:
    """Remove the folders in `folder` last changed more than `seconds` ago."""
    oldest = time.time() - seconds
    for old in folder.glob("*"):
        with contextlib.suppress(OSError):
            if old.is_dir() and old.stat().st_mtime < oldest:
                shutil.rmtree(old, ignore_errors=True)


def _paths(files: list) -> list[str]:
    """Gradio sends uploaded files as paths or as {"path": ...} dicts."""
    return [f["path"] if isinstance(f, dict) else str(f) for f in files]


def _well_formed(bubble) -> bool:
    if not isinstance(bubble, dict) or bubble.get("role") not in ("user", "assistant"):
        return False
    if bubble.get("kind") == "file":
        return isinstance(bubble.get("content"), dict) and isinstance(bubble["content"].get("path"), str)
    return bubble.get("kind") in ("text", "spoken", "error") and isinstance(bubble.get("content"), str)


def _is_language_code(value) -> bool:
    return isinstance(value, str) and 2 <= len(value) <= 3 and value.isalpha()


def _inside(path: str | None, folders: list[Path]) -> bool:
    if not path:
        return False
    resolved = Path(path).resolve()
    return resolved.is_file() and any(resolved.is_relative_to(folder.resolve()) for folder in folders)
