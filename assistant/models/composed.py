"""A vision-language model composed from parts, LLaVA-style: vision encoder -> projector -> causal LM.

    images --encoder (frozen)--> patch features [N, P, D] (+ patch colours [N, P, C])
           --projector (trained)--> image tokens [N, K, H]
    prompt --tokenizer--> ids with K placeholder positions per image --embed + merge--> causal LM

Saved as a directory: `composed.json` (which encoder, which LM, the projector's config and how it
was trained) and `projector.safetensors` (the only trained weights, a few MB). The engine drives a
composed model exactly like a pretrained VLM: same streaming, stop, budget and usage.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BatchFeature

from ..conversation import Conversation, to_chat_messages
from ..errors import ModelUnavailableError
from ..vision.colour import LEGACY_GAIN, check_layout, colour_channels, patch_colours
from ..vision.projectors import ProjectorConfig, build_projector
from .base import Encoded, GenerationRequest
from .fast_decode import DecodeSpeed, describe, fast_decoder
from .local import LocalModel, eos_token_ids, transformers_generate

SPEC_FILE = "composed.json"
PROJECTOR_FILE = "projector.safetensors"
IMAGE_MARKER = "\ue000"  # a private-use character: where an image goes in the rendered prompt
HINT_LABELS = 3  # at most this many ImageNet labels per image ...
HINT_MIN_PROBABILITY = 0.25  # ... each at least this probable (1 in 6 synthetic scenes still gets a wrong one)
HINT_CACHE = 64  # images whose hint is remembered (a prompt is encoded several times to fit)


@dataclass(frozen=True)
class ComposedSpec:
    encoder: str  # a vision encoder name (efficientnet-lite0) or a Hugging Face vision model
    language_model: str  # a packaged LM name (smollm2-135m), a .gguf file, a hub id or a local dir
    projector: ProjectorConfig
    colour_features: str = "histogram"  # what each patch's colours add to its features (vision.colour)
    colour_gain: float = LEGACY_GAIN  # what the colour features are multiplied by (a file without it: legacy)
    # Say in the prompt what the encoder's ImageNet head sees in each image (its confident labels):
    # the projector was trained on synthetic shapes only, so this is how real objects get named.
    object_hints: bool = False
    provenance: dict = field(default_factory=dict)  # how it was trained: command, seed, data, results

    def save(self, directory: Path) -> None:
        data = {**self.__dict__, "projector": self.projector.to_dict()}
        (Path(directory) / SPEC_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    def __post_init__(self) -> None:
        check_layout(self.colour_features)

    @classmethod
    def load(cls, directory: Path) -> ComposedSpec:
        data = json.loads((Path(directory) / SPEC_FILE).read_text(encoding="utf-8"))
        colour = data.get("colour_features", "histogram")
        if isinstance(colour, bool):  # written before the histogram layout: true meant mean colours
            colour = "mean" if colour else "none"
        return cls(**{**data, "colour_features": colour, "projector": ProjectorConfig(**data["projector"])})


def is_composed_dir(path: str | Path) -> bool:
    return (Path(path) / SPEC_FILE).is_file()


class ComposedVLM(nn.Module):
    """The whole model; only `projector` has trainable weights."""

    def __init__(self, spec: ComposedSpec, encoder, language_model, tokenizer):
        super().__init__()
        self.spec = spec
        self.encoder = encoder  # a VisionEncoder (frozen; not an nn.Module attribute on purpose)
        self.language_model = language_model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.projector = build_projector(spec.projector)
        self._hints: dict[
            int, tuple[object, str]
        ] = {}  # id(image) -> (image, hint); holds the image so its id stays its own
        _check_parts_agree(spec, encoder, language_model)

    @property
    def tokens_per_image(self) -> int:
        return self.spec.projector.num_tokens

    @property
    def projector_dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    @torch.no_grad()
    def patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [N, 3, H, W] -> what the projector takes, [N, P, D (+ C colour features)]. The encoder is
        frozen, so training computes these once per image and caches them."""
        features = self.encoder.features(pixel_values).float()
        grid = int(self.encoder.num_patches**0.5)
        colours = patch_colours(self.spec.colour_features, pixel_values, self.encoder, grid, self.spec.colour_gain)
        return features if colours is None else torch.cat([features, colours.to(features.device)], dim=-1)

    def object_hint(self, image) -> str:
        """What the encoder's ImageNet head is fairly sure the image shows, as a sentence for the
        prompt; "" when hints are off, the encoder has no classifier, or no label is probable enough."""
        if not self.spec.object_hints or not hasattr(self.encoder, "classify"):
            return ""
        if id(image) not in self._hints:
            if len(self._hints) >= HINT_CACHE:
                self._hints.pop(next(iter(self._hints)))
            self._hints[id(image)] = (image, self._classify(image))
        return self._hints[id(image)][1]

    def _classify(self, image) -> str:
        from ..vision.encoders import IMAGENET_CLASSES

        probabilities = self.encoder.classify(self.encoder.preprocess([image])).float().softmax(-1)[0]
        top = probabilities.topk(HINT_LABELS)
        labels = [
            IMAGENET_CLASSES[index]
            for probability, index in zip(top.values.tolist(), top.indices.tolist())
            if probability >= HINT_MIN_PROBABILITY
        ]
        return f"(This picture shows: {' or '.join(labels)}.)" if labels else ""

    def embed(self, input_ids: torch.Tensor, image_mask: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with the projected image tokens at the image positions.

        input_ids, image_mask [B, L]; features [N, P, D] for the N images in reading order -> [B, L, H]."""
        embeddings = self.language_model.get_input_embeddings()(input_ids)
        slots = int(image_mask.sum())
        if features is None or features.shape[0] == 0:
            if slots:
                raise ValueError(f"the prompt has {slots} image positions but no image features were given")
            return embeddings
        image_tokens = self.projector(features.to(self.projector_dtype))
        if slots != image_tokens.shape[0] * image_tokens.shape[1]:
            raise ValueError(
                f"image positions and image tokens disagree: the prompt has {slots} positions, the "
                f"{image_tokens.shape[0]} images give {image_tokens.shape[0] * image_tokens.shape[1]} tokens"
            )
        image_tokens = image_tokens.reshape(-1, image_tokens.shape[-1]).to(embeddings.dtype)  # autocast may differ
        return embeddings.masked_scatter(image_mask.unsqueeze(-1), image_tokens)


def tokenize_with_images(tokenizer, text: str, tokens_per_image: int) -> tuple[list[int], list[bool]]:
    """Tokenize a rendered prompt, giving each IMAGE_MARKER `tokens_per_image` placeholder positions.
    Returns the ids and a mask that is True at image positions."""
    placeholder = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids: list[int] = []
    mask: list[bool] = []
    for index, segment in enumerate(text.split(IMAGE_MARKER)):
        if index:
            ids += [placeholder] * tokens_per_image
            mask += [True] * tokens_per_image
        segment_ids = tokenizer.encode(segment, add_special_tokens=False)
        ids += segment_ids
        mask += [False] * len(segment_ids)
    return ids, mask


def render_prompt(tokenizer, chat: list[dict]) -> str:
    """The LM's own chat template over a chat with image parts, up to the assistant's turn."""
    return tokenizer.apply_chat_template(flatten_chat(chat), add_generation_prompt=True, tokenize=False)


def with_object_hints(chat: list[dict], hints: list[str]) -> list[dict]:
    """The chat with each image's hint (in image order) as a text part right after the image."""
    if not any(hints):
        return chat
    remaining = iter(hints)
    hinted = []
    for message in chat:
        content = []
        for part in message["content"]:
            content.append(part)
            if part["type"] == "image" and (hint := next(remaining)):
                content.append({"type": "text", "text": hint})
        hinted.append({**message, "content": content})
    return hinted


def flatten_chat(chat: list[dict]) -> list[dict]:
    """Chat messages with lists of parts -> plain-string content (what text-only LM templates take),
    images as IMAGE_MARKER lines. A marker typed by the user is removed so it can't fake an image."""
    flat = []
    for message in chat:
        pieces = [
            IMAGE_MARKER if part["type"] == "image" else part["text"].replace(IMAGE_MARKER, "")
            for part in message["content"]
        ]
        flat.append({"role": message["role"], "content": "\n".join(pieces)})
    return flat


@dataclass
class ComposedModel(LocalModel):
    """A composed model as the engine sees it: `encode` and `generate` like any pretrained VLM."""

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def encode(self, conversation: Conversation) -> Encoded:
        chat, images = to_chat_messages(conversation)
        chat = with_object_hints(chat, [self.model.object_hint(image) for image in images])
        ids, mask = tokenize_with_images(
            self.tokenizer, render_prompt(self.tokenizer, chat), self.model.tokens_per_image
        )
        inputs = {
            "input_ids": torch.tensor([ids]),
            "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "image_mask": torch.tensor([mask]),
        }
        if conversation.images:
            inputs["pixel_values"] = self.model.encoder.preprocess(conversation.images)
        return Encoded(BatchFeature(inputs), prompt_tokens=len(ids), image_tokens=sum(mask))

    def _generate_whole(self, request: GenerationRequest) -> None:
        """The reply from transformers' `generate` on the language model, given the merged prompt."""
        attention_mask = request.encoded.inputs["attention_mask"].to(self.device)
        config = self.generation_config(request.max_new_tokens)
        embeddings = self._embeddings(request.encoded)
        transformers_generate(
            self.model.language_model, request, config, inputs_embeds=embeddings, attention_mask=attention_mask
        )

    def _image_positions(self, encoded: Encoded) -> torch.Tensor:
        return encoded.inputs["image_mask"][0]

    def _token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.language_model.get_input_embeddings()(ids[None].to(self.device))

    def _merge(self, encoded: Encoded) -> torch.Tensor:
        """The prompt's token embeddings with the projected image features in the image slots."""
        inputs = encoded.inputs.to(self.device)
        with torch.inference_mode():
            pixel_values = inputs.get("pixel_values")
            features = None if pixel_values is None else self.model.patch_features(pixel_values.to(self.dtype))
            return self.model.embed(inputs["input_ids"], inputs["image_mask"], features)


def load_composed(
    directory: str | Path, device: torch.device, dtype: torch.dtype, cache_dir: Path, speed: DecodeSpeed | None = None
) -> ComposedModel:
    """Load a composed model directory: its encoder and LM by name, its trained projector from disk;
    with `speed`, the LM decodes through a FastDecoder (lower-precision weights, compiled step)."""
    started = time.perf_counter()
    spec = ComposedSpec.load(Path(directory))
    vlm = build_composed(spec, device, dtype, cache_dir)
    weights = Path(directory) / PROJECTOR_FILE
    if not weights.is_file():
        raise ModelUnavailableError(f"{directory} has no {PROJECTOR_FILE}: the projector was never trained or saved")
    vlm.projector.load_state_dict({k: v.to(dtype) for k, v in load_file(weights).items()})
    decoder = fast_decoder(vlm.language_model, speed, cache_dir)
    return ComposedModel(
        name=str(directory),
        model=vlm.eval(),
        processor=None,
        device=device,
        dtype=dtype,
        context_tokens=vlm.language_model.config.max_position_embeddings,
        image_token_id=None,
        eos_token_ids=eos_token_ids(vlm.language_model, vlm.tokenizer),
        load_seconds=time.perf_counter() - started,
        details={"decode": describe(decoder)},
        decoder=decoder,
    )


def build_composed(spec: ComposedSpec, device: torch.device, dtype: torch.dtype, cache_dir: Path) -> ComposedVLM:
    """The parts named in `spec`, with a freshly initialised projector (for training)."""
    from ..vision.encoders import load_vision_encoder
    from .causal_lm import load_causal_lm

    encoder = load_vision_encoder(spec.encoder, device=device, dtype=dtype)
    language_model, tokenizer = load_causal_lm(spec.language_model, cache_dir=cache_dir, dtype=dtype, device=device)
    return ComposedVLM(spec, encoder, language_model.eval(), tokenizer).to(device=device, dtype=dtype)


def save_projector(vlm: ComposedVLM, directory: Path, dtype: torch.dtype = torch.float32) -> None:
    """Write a composed model directory: the spec and the projector's weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vlm.spec.save(directory)
    state = {name: tensor.detach().to("cpu", dtype).contiguous() for name, tensor in vlm.projector.state_dict().items()}
    save_file(state, directory / PROJECTOR_FILE)


def _check_parts_agree(spec: ComposedSpec, encoder, language_model) -> None:
    projector = spec.projector
    expected_features = encoder.feature_dim + colour_channels(spec.colour_features)
    problems = []
    if projector.feature_dim != expected_features:
        problems.append(
            f"the projector takes {projector.feature_dim}-wide features but {spec.encoder} gives {expected_features}"
        )
    if projector.num_patches != encoder.num_patches:
        problems.append(
            f"the projector expects {projector.num_patches} patches but {spec.encoder} gives {encoder.num_patches}"
        )
    embed_dim = language_model.get_input_embeddings().embedding_dim
    if projector.embed_dim != embed_dim:
        problems.append(
            f"the projector writes {projector.embed_dim}-wide tokens but {spec.language_model} embeds in {embed_dim}"
        )
    if problems:
        raise ModelUnavailableError("the parts of this composed model do not fit together: " + "; ".join(problems))
