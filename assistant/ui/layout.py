"""The page: a chat with one input box, and a side panel. Here Gradio's components and events are
wired to `ChatHandlers`; values are only translated (Gradio's event data, numbers as floats, the
chat as Gradio shows it), never interpreted.

Each browser session has its own chat (a `gr.State` on the server); the browser keeps a copy
(`gr.BrowserState`) so that a reload brings the conversation back.
"""

from __future__ import annotations

from pathlib import Path

from ..core import DETAILS, Assistant, encode_speech
from ..errors import AssistantError
from . import chat as bubbles
from .gradio_import import gr
from .handlers import ChatHandlers, Panel, reply_stats

TITLE = "Multimodal assistant"
DESCRIPTION = "Ask by typing or speaking, attach photos, and get a streamed answer from a model that sees them."
EXAMPLES_FOLDER = Path(__file__).parent / "examples"
BROWSER_KEY = "assistant-chat"  # the browser's storage key for this session's chat
# On a phone the side panel would cover the chat: start it closed there (its toggle opens it).
CLOSE_PANEL_ON_PHONES = """() => {
  if (window.innerWidth < 768) document.querySelector('.sidebar.open .toggle-button')?.click();
}"""


def build_app(assistant: Assistant) -> gr.Blocks:
    handlers = ChatHandlers(assistant, upload_folder=Path(gr.utils.get_upload_folder()))
    gr.set_static_paths([EXAMPLES_FOLDER])  # the example photo and recording, wherever the package lives
    # Gradio's telemetry (on unless told) would report each launch to its servers: a private assistant sends nothing.
    with gr.Blocks(title=TITLE, fill_height=True, analytics_enabled=False) as app:
        chat_state = gr.State([])
        usages = gr.State([])
        speak_choice = gr.State(None)  # the person's own setting of "Speak answers", once they touch it
        saved = gr.BrowserState([], storage_key=BROWSER_KEY)
        panel, stats, history_controls, speak_box = _side_panel(assistant)
        gr.Markdown(f"## {TITLE}")
        gr.Markdown(DESCRIPTION)
        chatbot = gr.Chatbot(
            label="Chat",
            editable="user",
            scale=1,
            height="70vh",
            buttons=["copy", "copy_all"],
            placeholder="**Ask a question**, attach photos, or record a voice question. Or try one of these:",
            examples=_examples(),
        )
        textbox = gr.MultimodalTextbox(
            sources=["upload"],
            file_types=["image", "audio"],
            file_count="multiple",
            elem_id="input",
            placeholder="Ask something, or attach photos and recordings…",
            show_label=False,
            stop_btn=False,
            autofocus=True,
        )
        microphone, heard, calling = _microphone()
        speaker = gr.Audio(
            label="Spoken answer",
            streaming=True,
            autoplay=True,
            interactive=False,
            visible=True,
            show_label=False,
            elem_id="speaker",
        )
        speak_box.input(lambda choice: choice, [speak_box], [speak_choice], queue=False, api_visibility="undocumented")
        _wire_chat(
            handlers,
            chatbot,
            textbox,
            chat_state,
            usages,
            stats,
            [speak_choice, *panel],
            (speaker, speak_box),
            (microphone, heard, calling),
        )
        _wire_history(handlers, app, chatbot, chat_state, saved, history_controls, persona=panel[0])
    return app


def _side_panel(assistant: Assistant):
    personas = assistant.personas()
    settings = assistant.settings
    with gr.Sidebar(label="Settings", open=True):
        model = assistant.model
        profile = model.details.get("profile", settings.profile)
        gr.Markdown(f"**Model:** `{model.name}` (profile `{profile}`)\n\n{model.details.get('reason', '')}")
        speak_box = gr.Checkbox(
            False, label="Speak answers", info="on after a voice question, off after a typed one, until you choose"
        )
        persona = gr.Dropdown(
            [(p.name, key) for key, p in personas.items()],
            value=settings.persona,
            label="Persona",
            info=personas[settings.persona].description if settings.persona in personas else None,
        )
        detail = gr.Radio(
            list(DETAILS),
            value=settings.image_detail,
            label="Photo detail",
            info="low: one view, the quickest answer; high: the model's own tiling; auto: what this machine affords",
        )
        with gr.Accordion("Generation", open=False):
            temperature = gr.Slider(
                0.0,
                2.0,
                value=settings.temperature,
                step=0.05,
                label="Temperature",
                info="0 always picks the likeliest word",
            )
            top_p = gr.Slider(0.05, 1.0, value=settings.top_p, step=0.05, label="Top-p")
            max_new_tokens = gr.Slider(1, 4096, value=settings.max_new_tokens, step=1, label="Longest reply (tokens)")
            seed = gr.Number(
                value=settings.seed, label="Seed", info="empty: a new one each reply", precision=0, minimum=0
            )
        gr.Markdown("**Replies**")
        stats = gr.Markdown(reply_stats([]))
        with gr.Accordion("History", open=False):
            with gr.Row():
                export_json = gr.Button("Export JSON", size="sm")
                export_markdown = gr.Button("Export Markdown", size="sm")
            exported = gr.File(label="Download", visible=False, interactive=False)
            import_button = gr.UploadButton("Import JSON", file_types=[".json"], size="sm")
    return (
        [persona, temperature, top_p, max_new_tokens, seed, detail],
        stats,
        (export_json, export_markdown, exported, import_button),
        speak_box,
    )


def _microphone():
    """The microphone, streamed: what the person says is transcribed while they speak, shown
    below it, and sent (with whatever is in the input box) when they stop."""
    with gr.Row(equal_height=True):
        microphone = gr.Audio(
            sources=["microphone"],
            type="numpy",
            streaming=True,
            show_label=False,
            label="Speak",
            scale=1,
            elem_id="microphone",
            waveform_options=gr.WaveformOptions(show_recording_waveform=False),
        )
        heard = gr.Markdown("", elem_id="heard", min_height=0)
    calling = gr.Checkbox(
        False,
        label="📞 Hands-free call",
        info="Record once and talk: each question is sent when you pause, and answered aloud.",
        elem_id="call",
    )
    return microphone, heard, calling


def _wire_chat(handlers: ChatHandlers, chatbot, textbox, chat_state, usages, stats, panel, voice, listening) -> None:
    speaker, speak_box = voice
    microphone, heard, calling = listening
    streamed = [chat_state, chatbot, textbox, usages, stats, speaker, speak_box]

    def send(message, chat, done, listener, *panel_values):
        yield from _streamed(handlers.send(message, chat, Panel.from_values(*panel_values), listener), done)

    def send_typed(message, chat, done, *panel_values):
        yield from send(message, chat, done, None, *panel_values)

    def retry(chat, done, *panel_values):
        yield from _streamed(handlers.retry(chat, Panel.from_values(*panel_values)), done)

    def edit(chat, done, index, text, *panel_values):
        yield from _streamed(handlers.edit(chat, int(index), text, Panel.from_values(*panel_values)), done)

    def edit_from_chat(chat, done, *panel_values, data: gr.EditData):
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        yield from edit(chat, done, index, _edited_text(data.value), *panel_values)

    def undo(chat):
        update = handlers.undo(chat)
        return update.chat, bubbles.for_display(update.chat), update.input if update.input is not None else gr.skip()

    def clear():
        return [], [], [], reply_stats([])

    call = gr.State(None)  # the call under way (_wire_microphone): told what the answers say aloud
    sending = textbox.submit(send, [textbox, chat_state, usages, call, *panel], streamed, api_name="send")
    textbox.change(  # photos attached: their vision work starts while the question is typed
        handlers.prepare, [textbox, panel[-1]], None, queue=False, trigger_mode="always_last", api_visibility="private"
    )
    example_sending = chatbot.example_select(
        _example_input, None, [textbox], queue=False, api_visibility="undocumented"
    ).then(send_typed, [textbox, chat_state, usages, *panel], streamed, api_visibility="undocumented")
    retrying = chatbot.retry(retry, [chat_state, usages, *panel], streamed, api_name="retry")
    editing = chatbot.edit(edit_from_chat, [chat_state, usages, *panel], streamed, api_visibility="undocumented")
    # The same edit for API clients, which have no chat to click in.
    edit_index, edit_text = gr.Number(visible=False, precision=0), gr.Textbox(visible=False)
    api_editing = gr.Button(visible=False).click(
        edit, [chat_state, usages, edit_index, edit_text, *panel], streamed, api_name="edit"
    )
    chatbot.undo(undo, [chat_state], [chat_state, chatbot, textbox], api_name="undo")
    chatbot.clear(clear, None, [chat_state, chatbot, usages, stats], api_name="clear")
    _wire_microphone(handlers, microphone, heard, textbox, chat_state, (calling, call))
    _stop_button(textbox, speaker, [sending, example_sending, retrying, editing, api_editing])


# Sends the input box as Enter would, once a recording transcribed live is attached to it (not after
# an error, which the "heard" line shows, nor after a call, whose turns were sent as they ended): it
# goes through the same send and stop button as the rest.
SUBMIT_HEARD = """(heard, calling) => {
    if (!calling && !heard.startsWith('⚠️')) document.querySelector('#input .submit-button')?.click();
}"""


def _wire_microphone(handlers: ChatHandlers, microphone, heard, textbox, chat_state, call_parts) -> None:
    """Recording starts a live transcription (in the language last spoken in this chat); each
    chunk adds to it and shows what has been heard. Stopping finishes it, attaches the recording
    to the input box (its transcript is kept, not made again) and sends the box.

    With the call box ticked, a recording is a hands-free call instead: the microphone stays open,
    and each turn (ended by a pause, speech/turns.py) goes into the input box and is sent at once;
    the answer is spoken, as after any voice question. Stopping ends the call (what was being
    said is sent).

    Sending through the input box keeps one way of sending, stopping and retrying a message. (A
    press on Record in the page's first second, while its load events run, can get no stream at
    all from Gradio 6.31: the recording is then "no speech detected".)"""
    calling, call = call_parts  # the call box, and the call under way
    live = gr.State(None)
    turns = gr.Number(0, visible=False)  # a call's turns so far: each change sends the input box

    def start(chat, on):
        return (None, handlers.start_call(chat)) if on else (handlers.start_listening(chat), None)

    def listen(audio, transcription, listener, count):
        if audio is None:
            return gr.skip(), gr.skip(), gr.skip()
        sample_rate, samples = audio
        if listener is not None:
            return _hear_in_call(handlers, listener, samples, sample_rate, count)
        if transcription is None:
            return gr.skip(), gr.skip(), gr.skip()
        text = handlers.listen(transcription, samples, sample_rate)
        return (f"🎙️ {text}" if text else "🎙️ …"), gr.skip(), gr.skip()

    def finish(transcription, listener, message, count):
        if listener is not None:
            sent = handlers.hang_up(listener)
            if sent is None:
                return gr.skip(), None, None, "", gr.skip()
            return gr.MultimodalTextbox(value=sent), None, None, "", count + 1
        if transcription is None:
            return gr.skip(), None, None, "", gr.skip()
        update = handlers.stop_listening(transcription, message)
        shown = update.chat[-1]["content"] if update.chat else ""  # an error, shown where the words were
        box = gr.MultimodalTextbox(value=update.input) if update.input else gr.skip()
        return box, None, None, shown, gr.skip()

    microphone.start_recording(start, [chat_state, calling], [live, call], api_visibility="undocumented")
    microphone.stream(
        listen,
        [microphone, live, call, turns],
        [heard, textbox, turns],
        stream_every=STREAM_EVERY_S,
        # A recording longer than this would be refused when sent; a call ends there too (for now).
        time_limit=handlers.assistant.settings.max_audio_seconds,
        concurrency_limit=None,
        show_progress="hidden",
        api_visibility="undocumented",
    )
    handed_over = microphone.stop_recording(
        finish, [live, call, textbox, turns], [textbox, live, call, heard, turns], api_visibility="undocumented"
    )
    handed_over.then(lambda: None, None, microphone, queue=False, api_visibility="undocumented").then(
        None, [heard, calling], None, js=SUBMIT_HEARD, queue=False, api_visibility="undocumented"
    )
    turns.change(None, None, None, js=SUBMIT_TURN, queue=False, api_visibility="undocumented")


def _hear_in_call(handlers: ChatHandlers, listener, samples, sample_rate: int, count: int):
    """A call's chunk -> (the line under the microphone, the input box, the turn count)."""
    try:
        message = handlers.hear_in_call(listener, samples, sample_rate)
    except AssistantError as error:
        return f"⚠️ {error}", gr.skip(), gr.skip()
    shown = "📞 🎙️ …" if listener.speaking else "📞 listening"
    if message is None:
        return shown, gr.skip(), gr.skip()
    return shown, gr.MultimodalTextbox(value=message), count + 1


# Sends a call's turn, put in the input box: a reply still under way is stopped first (the person
# spoke over it), then the box is sent as Enter would.
SUBMIT_TURN = """() => {
    const stop = document.querySelector('#input .stop-button');
    if (stop) stop.click();
    const send = (tries) => {
        const button = document.querySelector('#input .submit-button');
        if (button) button.click(); else if (tries > 0) setTimeout(() => send(tries - 1), 100);
    };
    setTimeout(() => send(50), stop ? 200 : 0);
}"""
STREAM_EVERY_S = 0.2  # a call's turn is sent this much late at most, on top of its closing silence


def _stop_button(textbox, speaker, generating) -> None:
    """While a reply streams, the input box's send button is a stop button (each stream turns it on
    with its first update, see `_streamed`). Stop cancels this session's reply only, and the
    engine ends it at once; the send button comes back however the reply ended. Stop also
    silences the spoken answer."""
    for event in generating:
        event.then(
            lambda: gr.MultimodalTextbox(submit_btn=True, stop_btn=False),
            None,
            textbox,
            queue=False,
            api_visibility="undocumented",
        )
    textbox.stop(lambda: None, None, speaker, cancels=generating, queue=False, api_visibility="undocumented")


def _wire_history(handlers: ChatHandlers, app, chatbot, chat_state, saved, controls, persona) -> None:
    export_json, export_markdown, exported, import_button = controls
    allowed = [Path(gr.utils.get_upload_folder()), handlers.upload_folder, EXAMPLES_FOLDER]

    def restore(kept):
        chat = handlers.restore(kept, allowed)
        return chat, bubbles.for_display(chat)

    def export(kind):
        return lambda chat, persona: gr.File(
            value=str(handlers.export(chat, Panel(persona=persona), kind)), visible=True
        )

    def import_conversation(file, chat):
        chat = handlers.import_file(file if isinstance(file, str) else file.name, chat)
        return chat, bubbles.for_display(chat)

    app.load(restore, [saved], [chat_state, chatbot], api_visibility="undocumented")
    app.load(None, js=CLOSE_PANEL_ON_PHONES)
    chat_state.change(lambda chat: chat, [chat_state], [saved], queue=False, api_visibility="undocumented")
    export_json.click(export("json"), [chat_state, persona], [exported], api_name="export_json")
    export_markdown.click(export("markdown"), [chat_state, persona], [exported], api_name="export_markdown")
    import_button.upload(
        import_conversation, [import_button, chat_state], [chat_state, chatbot], api_name="import_json"
    )


def _streamed(updates, done: list):
    """`Update`s as the streamed outputs: chat state, chatbot, input box, reply usages, stats.
    The first one also turns the send button into a stop button."""
    for number, update in enumerate(updates):
        if update.usage is not None:
            done = [*done, update.usage]
        value = {} if update.input is None else {"value": update.input}  # no value: leave what is typed
        if number == 0:
            box = gr.MultimodalTextbox(**value, submit_btn=False, stop_btn=True)
        else:
            box = gr.MultimodalTextbox(**value) if value else gr.skip()
        speech = encode_speech(update.speech, "wav")[0] if update.speech is not None else None
        speaking = gr.Checkbox(value=update.speaking) if update.speaking is not None else gr.skip()
        stats = reply_stats(done) if update.usage is not None else gr.skip()
        yield update.chat, bubbles.for_display(update.chat), box, done, stats, speech, speaking


def _example_input(data: gr.SelectData) -> dict:
    value = data.value or {}
    return {"text": value.get("text") or "", "files": [_path(f) for f in value.get("files") or []]}


def _path(file) -> str:
    return file.get("path") if isinstance(file, dict) else str(file)


def _edited_text(value) -> str:
    """Gradio gives an edited message as a string or as a list of content blocks."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("text", "")
    return "".join(_edited_text(item) for item in value or [])


def _examples() -> list[dict]:
    """What a new user can click: a photo question, a voice question and a text question."""
    return [
        {
            "text": "What animal is this?",
            "files": [str(EXAMPLES_FOLDER / "cat.jpg")],
            "display_text": "Photo: What animal is this?",
        },
        {"text": "", "files": [str(EXAMPLES_FOLDER / "question.wav")], "display_text": "Voice: a spoken question"},
        {"text": "Write a haiku about the sea.", "display_text": "Text: write a haiku about the sea"},
    ]
