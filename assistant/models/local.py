"""A vision-language model from transformers, run in this process: what `load_pretrained` loads,
and the base of the composed models.

    encode(conversation)   the model's own chat template and processor -> Encoded prompt
    answer(requests)       each reply generated with the engine's sampler, stop check and token
                           stream (models/streaming.py), several at once when the model can batch

With a `FastDecoder` (models/fast_decode.py) the language model decodes in the fast loop: the prompt
goes in as the embeddings the VLM's own forward merges (text and image features, `merged_prompt`),
and the loop drives the VLM's decoder and head as one causal LM (`text_causal_lm`), sharing their
weights. Without one, transformers' `generate` runs the whole VLM.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import PIL.Image
import torch
from jinja2 import TemplateError
from torch.utils.weak import WeakTensorKeyDictionary
from transformers import AutoModelForCausalLM, GenerationConfig

from ..conversation import Conversation, Image, Message, to_chat_messages
from ..errors import ModelUnavailableError
from ..vision.detail import tiling_for
from .base import Encoded, GenerationRequest, ReplyRequest
from .fast_decode import FastDecoder, Prompt
from .fast_vision import compiling_here, package_tower, vision_tower
from .streaming import start_generation
from .view_cache import ViewCache, add_tensor

# Text decoders the fast loop runs for a hub VLM: 1-D positions (not Qwen2-VL's M-RoPE), and their
# one-token step checked against `generate` (tests/unit/test_fast_decode.py).
FAST_TEXT_MODELS = ("llama", "qwen2")


@dataclass
class LocalModel:
    """A vision-language model with its processor, ready for the engine (a `ChatModel`).

    `encode` renders a conversation with the model's own chat template and processes its images;
    `answer` generates the engine's requests: `generate` one, `generate_batch` several (a model that
    can batch overrides both `can_batch` and `generate_batch`).
    """

    name: str  # what was loaded: a hub id or a local directory
    model: Any  # a transformers PreTrainedModel
    processor: Any  # its AutoProcessor
    device: torch.device
    dtype: torch.dtype
    context_tokens: int  # prompt + reply must fit in this many tokens
    image_token_id: int | None  # the placeholder token that image features replace
    eos_token_ids: list[int]
    load_seconds: float = 0.0
    details: dict[str, str] = field(default_factory=dict)  # shown to the user: profile, reason, ...
    decoder: FastDecoder | None = None  # the fast decode loop over the language model; None: `generate`
    image_budget_s: float = 1.5  # seconds of vision encoding `auto` detail may spend on a photo
    views: ViewCache | None = None  # the vision tower's output for the views seen lately
    _seconds_per_view: float | None = field(default=None, repr=False)  # measured at the first `auto` photo

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def encode(self, conversation: Conversation) -> Encoded:
        chat, images = to_chat_messages(conversation)
        prompt = self._render(chat)
        tiling = tiling_for(self.processor.image_processor, conversation.detail, images, self._views_affordable)
        images = tiling.prepared(images) if images else None
        inputs = self.processor(text=prompt, images=images, return_tensors="pt", **tiling.processor_kwargs)
        input_ids = inputs["input_ids"][0]
        image_tokens = int((input_ids == self.image_token_id).sum()) if self.image_token_id is not None else 0
        return Encoded(inputs, prompt_tokens=int(input_ids.numel()), image_tokens=image_tokens)

    def _views_affordable(self) -> int:
        """The views of a photo that `image_budget_s` pays for, at this machine's speed (one at least;
        one while the warm-up compiles, which measures it)."""
        if self._seconds_per_view is None and self.decoder is not None and self.decoder.warming:
            return 1
        if self._seconds_per_view is None:
            with self._turn():
                if self._seconds_per_view is None:  # the warm-up, waited for, may have measured it
                    self._seconds_per_view = self._time_one_view()
        return max(1, int(self.image_budget_s // self._seconds_per_view))

    def _warm_vision(self) -> None:
        """The warm-up's first part (in the decoder's compile thread): the vision tower from its
        package where the decoder keeps packages, else its first run, which compiles it where it is
        compiled; then its speed measured (once with a package: the time is kept beside it)."""
        if self._package_vision(build=True):
            packaged = vision_tower(self.model).quickened.packaged
            self._seconds_per_view = self._seconds_per_view or packaged.kept_seconds_per_view()
            if self._seconds_per_view is None:
                self._seconds_per_view = self._time_one_view()
                packaged.keep_seconds_per_view(self._seconds_per_view)
            return
        with compiling_here():
            self._seconds_per_view = self._time_one_view(first_compiles=True)

    def _package_vision(self, build: bool) -> bool:
        """The vision tower from its package, built first where `build` says; whether it is."""
        if self.decoder is None:
            return False

        def one_view():  # run only where the package must be built: a restart does not process a photo
            self._merge(self._one_view_prompt("dimgray"))

        return package_tower(self.model, one_view, self.decoder.exclusively, build=build)

    def _time_one_view(self, first_compiles: bool = False) -> float:
        """Seconds the vision tower and merge take for one view here: the second of two runs (the
        first pays one-time costs). Each takes its turn with the replies (beside one, it would slow it
        and time the sharing of the cores), but for a first run that compiles: replies go beside that."""
        first, second = (self._one_view_prompt(grey) for grey in ("gray", "darkgray"))  # the second: not cached
        with contextlib.nullcontext() if first_compiles else self._turn():
            self._merge(first)
        with self._turn():
            started = time.perf_counter()
            self._merge(second)
            return time.perf_counter() - started

    def _one_view_prompt(self, colour: str) -> Encoded:
        photo = Image(PIL.Image.new("RGB", (64, 64), colour), detail="low")
        return self.encode(Conversation().add(Message.user("", [photo])))

    def _render(self, chat: list[dict]) -> str:
        try:
            return self.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        except TemplateError:
            if chat[0]["role"] != "system":
                raise
            # Some templates (e.g. Gemma's, LLaVA-1.5's) refuse a system role: give its text to the
            # first user message instead, which is what those models were trained with.
            return self.processor.apply_chat_template(_fold_system(chat), add_generation_prompt=True, tokenize=False)

    def answer(self, requests: Sequence[ReplyRequest]) -> None:
        """Generate each request's reply, together when the model can batch them. A request whose
        prompt cannot be made (too long for the context, say) fails alone; the others go on."""
        started = []
        for request in requests:
            try:
                started.append(start_generation(self, request))
            except Exception as error:  # noqa: BLE001 - this request's own problem, raised to its caller
                request.fail(error)
        if len(started) == 1:
            self.generate(started[0])
        elif started:
            self.generate_batch(started)

    def prepare_images(self, images: Sequence[Image]) -> None:
        """Run the vision tower on photos attached to a question still being typed: their views are
        kept (`views`), and the question's prompt finds them there, sparing its first token the
        tower's time (0.65 s a 512-px view on 2 cores)."""
        if self.views is None or not images:
            return
        encoded = self.encode(Conversation().add(Message.user("", list(images))))
        with self._turn():
            self._merge(encoded)

    def generate(self, request: GenerationRequest) -> None:
        """One streamed reply: through the fast decoder when there is one, else transformers' `generate`."""
        if self.decoder is None:
            self._generate_whole(request)
            return
        hooks = (request.logits_processor, request.stopping_criteria, request.streamer)
        self.decoder.generate(self._prompt(request.encoded), request.max_new_tokens, *hooks, self.eos_token_ids)

    def _prompt(self, encoded: Encoded) -> Prompt:
        """The prompt as the fast decoder compares it with what its cache holds (token ids; image
        positions marked by a digest of the prompt's pixels) and embeds it from any position on: words
        after the cached beginning need no vision run, which is what makes a follow-up quick."""
        ids = encoded.inputs["input_ids"][0]
        images = self._image_positions(encoded)
        key = ids.clone()
        if images.any():
            key[images] = -2 - pixels_digest(encoded.inputs["pixel_values"])  # never a token id

        def embed(start: int) -> torch.Tensor:
            if start == 0 or images[start:].any():
                return self._embeddings(encoded)[:, start:]
            return self._token_embeddings(ids[start:])

        return Prompt(int(ids.shape[0]), embed, key)

    def _image_positions(self, encoded: Encoded) -> torch.Tensor:
        ids = encoded.inputs["input_ids"][0]
        return (
            ids == self.image_token_id if self.image_token_id is not None else torch.zeros_like(ids, dtype=torch.bool)
        )

    def _token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.get_input_embeddings()(ids[None].to(self.device))

    def _generate_whole(self, request: GenerationRequest) -> None:
        """The reply from transformers' `generate` on the whole VLM."""
        transformers_generate(
            self.model, request, self.generation_config(request.max_new_tokens), **self._inputs(request.encoded)
        )

    @property
    def can_batch(self) -> bool:
        """Whether `generate_batch` decodes several replies at once: the fast decoder does."""
        return self.decoder is not None and self.decoder.speed.batch > 1

    def generate_batch(self, requests: list[GenerationRequest]) -> None:
        """Replies to several prompts at once, each streamed to its own streamer as it goes."""
        prompts = [self._embeddings(request.encoded) for request in requests]
        self.decoder.generate_batch(prompts, requests, self.eos_token_ids)

    def _embeddings(self, encoded: Encoded) -> torch.Tensor:
        """The prompt [1, L, H] as the language model receives it, image features merged."""
        with self._turn():
            return self._merge(encoded)

    def _merge(self, encoded: Encoded) -> torch.Tensor:
        return merged_prompt(self.model, self._inputs(encoded))

    def _turn(self):
        """Takes turns with the decoder's replies (beside its warm-up, which compiles the tower too)."""
        return self.decoder.turn() if self.decoder is not None else contextlib.nullcontext()

    def _inputs(self, encoded: Encoded):
        inputs = encoded.inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def warm_up(self) -> threading.Thread | None:
        """Start getting ready in the background (a decoder that compiles does it here), returning the
        thread; None when there is nothing to do. What an earlier start built as packages is loaded
        first, before any question. The engine calls it once."""
        if self.decoder is None:
            return None
        if self.decoder.load_packages():
            self._package_vision(build=False)
            self.details["compiled"] = "loaded from disk (built by an earlier start)"
        return self.decoder.warm_up(before=self._warm_vision)

    def generation_config(self, max_new_tokens: int) -> GenerationConfig:
        pad = self.tokenizer.pad_token_id
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,  # the engine's sampler (a logits processor) has already chosen the token
            eos_token_id=self.eos_token_ids,
            pad_token_id=pad if pad is not None else self.eos_token_ids[0],
        )


# Digests of the pixels seen lately, by tensor: the processor's output for a photo already processed
# comes back as the same tensors (models/processed_images.py), which nothing writes to, so a follow-up
# about a photo at `high` detail (41 MB of pixels) does not hash them again.
_DIGESTS = WeakTensorKeyDictionary()


def pixels_digest(pixels: torch.Tensor) -> int:
    """A digest of a prompt's pixels (and their shape: the tiling), 56 bits."""
    known = _DIGESTS.get(pixels)
    if known is None:
        digest = hashlib.blake2b(digest_size=7)
        add_tensor(digest, pixels)
        known = _DIGESTS[pixels] = int.from_bytes(digest.digest(), "big")
    return known


class _Merged(Exception):
    """Raised by `merged_prompt`'s hook: the prompt is merged, the rest of the forward is not needed."""


def merged_prompt(vlm, inputs) -> torch.Tensor:
    """The prompt [1, L, H] as the VLM's decoder receives it: token embeddings with the image features in
    the image positions. The VLM's own forward merges them (its tiling, projector and checks, whatever
    the family) and is stopped as it calls the decoder, whose input is kept."""
    merged = {}
    caller = threading.get_ident()

    def keep(decoder, args, kwargs):
        if threading.get_ident() != caller:  # another thread's forward (hooks are the module's): its own hook
            return
        merged["inputs_embeds"] = kwargs["inputs_embeds"]
        raise _Merged

    hook = vlm.get_decoder().register_forward_pre_hook(keep, with_kwargs=True)
    try:
        with torch.inference_mode():
            vlm(**inputs, use_cache=False)
    except _Merged:
        pass
    finally:
        hook.remove()
    return merged["inputs_embeds"]


def fast_loop_runs(config) -> bool:
    """Whether the fast loop runs the language model of a VLM with this config (FAST_TEXT_MODELS)."""
    return config.get_text_config().model_type in FAST_TEXT_MODELS


def text_causal_lm(vlm) -> torch.nn.Module | None:
    """The VLM's decoder and head as one causal LM, their weights shared (not copied), for the fast
    loop to decode with; None when its text model is not one the loop runs (FAST_TEXT_MODELS)."""
    if not fast_loop_runs(vlm.config):
        return None
    config = vlm.config.get_text_config()
    with torch.device("meta"):  # the empty shell only: its decoder and head are the VLM's
        language_model = AutoModelForCausalLM.from_config(config)
    setattr(language_model, language_model.base_model_prefix, vlm.get_decoder())  # e.g. .model
    language_model.set_output_embeddings(vlm.get_output_embeddings())
    return language_model.eval()


def transformers_generate(model, request: GenerationRequest, config: GenerationConfig, **inputs) -> None:
    """`model.generate(**inputs)` streaming into `request`'s hooks; `config` stops at the reply's end."""
    with torch.inference_mode():
        model.generate(
            **inputs,
            generation_config=config,
            logits_processor=request.logits_processor,
            stopping_criteria=request.stopping_criteria,
            streamer=request.streamer,
        )


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every token that ends a reply: the generation config's and the tokenizer's end of sequence."""
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ModelUnavailableError("the model defines no end-of-sequence token, so replies could never end")
    return list(dict.fromkeys(int(i) for i in ids))


def _fold_system(chat: list[dict]) -> list[dict]:
    system_text = "\n".join(part["text"] for part in chat[0]["content"])
    rest = [dict(message) for message in chat[1:]]
    for message in rest:
        if message["role"] == "user":
            message["content"] = [{"type": "text", "text": system_text + "\n\n"}, *message["content"]]
            break
    return rest
