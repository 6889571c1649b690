"""The assistant as the UI, the CLI and the HTTP API see it: settings, a loaded model behind an
engine, speech, personas and media limits. Front ends only translate their types into these calls."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .conversation import Conversation, Image, Message
from .engine import Engine, Reply
from .errors import AssistantError, MediaError
from .media import ImageLimits, decode_image, read_image_file
from .models import LoadedModel, load_model
from .personas import Persona, available_personas, load_persona
from .remote import load_remote
from .sampling import GenerationOptions
from .settings import Settings
from .speech import SpeechError, TranscribeOptions, Transcriber, Transcript, load_speech, transcribe_options
from .speech.audio import SAMPLE_RATE, AudioLimits, decode_audio, read_audio_file
from .speech.live import Heard, LiveTranscription
from .speech.speakable import speakable
from .speech.spoken_reply import spoken
from .speech.synthesizer import Speech, SynthesisError, Synthesizer, load_synthesizer
from .threads import reserve_for_model

log = logging.getLogger(__name__)
NO_SPEECH = "no speech detected in the recording; try again, closer to the microphone"


@dataclass
class Assistant:
    settings: Settings
    engine: Engine
    _transcriber: Transcriber | None = None
    _synthesizer: Synthesizer | None = None
    _speech_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings) -> Assistant:
        load_persona(settings.persona, settings.prompts_dir)  # a wrong persona fails before a long load
        if settings.backend == "openai":
            model, workers = load_remote(settings), settings.remote_concurrency
        else:
            reserve_for_model()  # this thread loads; the engine's worker computes (see threads.py)
            model, workers = load_model(settings), 1
        return cls(
            settings, Engine(model, queue_size=settings.queue_size, workers=workers, max_batch=settings.max_batch)
        )

    @property
    def model(self) -> LoadedModel:
        return self.engine.model

    @property
    def transcriber(self) -> Transcriber:
        """The speech model, loaded on first use (text-only users never pay for it)."""
        with self._speech_lock:
            if self._transcriber is None:
                self._transcriber = load_speech(self.settings)
            return self._transcriber

    def warm_speech(self) -> threading.Thread:
        """Load the speech model and run it once, in the background: the app calls this as it starts,
        so the first voice question costs only its own transcription (not a load of several seconds
        and the backend's first-call set-up). A failure is logged; the first question reports it."""
        thread = threading.Thread(target=self._warm_speech, name="speech-warm-up", daemon=True)
        thread.start()
        return thread

    def _warm_speech(self) -> None:
        noise = np.random.default_rng(0).normal(0, 0.1, SAMPLE_RATE).astype(np.float32)  # one second
        try:
            self.transcriber.transcribe(noise, TranscribeOptions(language="en"))  # voice activity detection
            self.transcriber.transcribe(noise, TranscribeOptions(language="en", vad=False))  # encoder and decoder
        except AssistantError as error:
            log.warning("the speech model could not be loaded at start: %s", error)

    @property
    def synthesizer(self) -> Synthesizer:
        """The voice, loaded on first use."""
        with self._speech_lock:
            if self._synthesizer is None:
                self._synthesizer = load_synthesizer(self.settings.voice, self.settings.sentence_silence_s)
            return self._synthesizer

    def speak(self, text: str, speed: float | None = None) -> Speech:
        """Text (Markdown allowed) as speech; code, links and emoji are not read out."""
        spoken_text = speakable(text)
        if not spoken_text:
            raise SynthesisError("there is nothing to say: the text is empty once symbols and code are left out")
        return self.synthesizer.synthesize(spoken_text, speed or self.settings.speech_speed)

    def spoken(self, reply: Iterable, speed: float | None = None) -> Iterator:
        """The reply's events with a SpeechChunk for each sentence as soon as it is spoken."""
        return spoken(reply, self.synthesizer, speed or self.settings.speech_speed)

    def personas(self) -> dict[str, Persona]:
        return available_personas(self.settings.prompts_dir)

    def new_conversation(self, persona: str | None = None) -> Conversation:
        chosen = load_persona(persona or self.settings.persona, self.settings.prompts_dir)
        return Conversation(system_prompt=chosen.system_prompt)

    def transcribe(self, samples: np.ndarray, **overrides) -> Transcript:
        """Transcribe 16 kHz mono samples; `overrides`: language, translate, timestamps."""
        return self.transcriber.transcribe(samples, transcribe_options(self.settings, **overrides))

    def live_transcription(self, language_hint: str | None = None) -> LiveTranscription:
        """A recording to transcribe while it is being made (the browser's streamed microphone)."""
        return LiveTranscription(lambda samples, hint: self.transcribe(samples, language_hint=hint), language_hint)

    def user_message(
        self,
        text: str,
        image_paths: Iterable[str | os.PathLike] = (),
        audio_paths: Iterable[str | os.PathLike] = (),
        language_hint: str | None = None,
        heard: Heard | None = None,
    ) -> Message:
        """A user message from typed text, image files and voice recordings. Each file is validated
        against the limits; each recording is transcribed and becomes the user's words.
        `language_hint`: the language the person last spoke in this conversation. `heard`: a
        recording already transcribed live, whose words come first."""
        image_paths = list(image_paths)
        self._check_image_count(len(image_paths))
        limits = ImageLimits.from_settings(self.settings)
        images = [Image(read_image_file(path, limits), name=os.path.basename(path)) for path in image_paths]
        audio_limits = AudioLimits.from_settings(self.settings)
        recordings = [read_audio_file(path, audio_limits) for path in audio_paths]
        return self._compose(text, images, recordings, language_hint, heard)

    def user_message_from_bytes(
        self, text: str, images: Iterable[bytes] = (), recordings: Iterable[bytes] = ()
    ) -> Message:
        """The same from media received as bytes (the HTTP API): validated, decoded, transcribed."""
        images = list(images)
        self._check_image_count(len(images))
        limits = ImageLimits.from_settings(self.settings)
        audio_limits = AudioLimits.from_settings(self.settings)
        return self._compose(
            text,
            [Image(decode_image(data, limits)) for data in images],
            [decode_audio(data, audio_limits) for data in recordings],
        )

    def transcribe_bytes(self, data: bytes, **overrides) -> Transcript:
        """Transcribe an uploaded recording (any common format); `overrides` as for `transcribe`."""
        return self.transcribe(decode_audio(data, AudioLimits.from_settings(self.settings)), **overrides)

    def _compose(
        self,
        text: str,
        images: list[Image],
        recordings: list[np.ndarray],
        language_hint: str | None = None,
        heard: Heard | None = None,
    ) -> Message:
        spoken, language = [], language_hint
        if heard is not None and heard.text:
            spoken.append(heard.text)
            language = heard.language
        for samples in recordings:
            transcript = self.transcribe(samples, language_hint=language)
            if transcript.has_speech:
                spoken.append(transcript.text)
                language = transcript.language  # the next recording is likely in the same language
        if not text.strip() and not images and not spoken:
            if recordings or heard is not None:
                raise SpeechError(NO_SPEECH)
            raise AssistantError("the message is empty: type a question or attach a photo")
        return Message.user(text.strip(), images, spoken=spoken, spoken_language=language if spoken else None)

    def reply(self, conversation: Conversation, **overrides) -> Reply:
        """Start the reply to the conversation's last user message; `overrides` are GenerationOptions
        fields (None keeps the settings' default)."""
        return self.engine.reply(conversation, GenerationOptions.from_settings(self.settings, **overrides))

    def close(self) -> None:
        self.engine.close()

    def _check_image_count(self, count: int) -> None:
        if count > self.settings.max_images_per_message:
            raise MediaError(f"{count} images in one message; the limit is {self.settings.max_images_per_message}")
