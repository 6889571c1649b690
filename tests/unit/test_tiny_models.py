"""The tiny random VLMs load through the Auto classes and keep the image-token invariant.

For every family: the processor must write as many image placeholder tokens as the model
computes image features, for one image, several images, images in several turns, odd sizes
and aspect ratios, and text only; forward and generate must run on what the processor returns.
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file
from transformers.video_utils import VideoMetadata

from assistant.models.tiny import FAMILIES, build_tiny_model

# Image sizes as PIL (width, height): wide, square, and tall-and-thin.
WIDE, SQUARE, THIN = (20, 12), (64, 64), (7, 30)

# The end-of-turn token each family's chat template closes an assistant turn with.
END_OF_TURN = {
    "llava": "</s>",
    "llava_onevision": "<|im_end|>",
    "idefics3": "<end_of_utterance>",
    "smolvlm": "<end_of_utterance>",
    "qwen2_vl": "<|im_end|>",
}
# Image tokens for one 64x64 image, as documented in each builder.
TOKENS_FOR_64PX = {"llava": 16, "llava_onevision": 24, "idefics3": 4, "smolvlm": 4, "qwen2_vl": 16}


def _image(size: tuple[int, int], shade: int = 0) -> Image.Image:
    """A plain RGB image; its content does not matter to a random model."""
    return Image.new("RGB", size, (shade, 120, 200))


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


IMAGE = {"type": "image"}

# name -> (chat messages, image sizes in the order their placeholders appear)
CASES: dict[str, tuple[list[dict], list[tuple[int, int]]]] = {
    "one_square_image": ([{"role": "user", "content": [IMAGE, _text("What is this?")]}], [SQUARE]),
    "one_wide_image": ([{"role": "user", "content": [IMAGE, _text("And this?")]}], [WIDE]),
    "one_thin_image": ([{"role": "user", "content": [_text("Read it:"), IMAGE]}], [THIN]),
    "several_images_one_message": (
        [
            {"role": "system", "content": [_text("You are brief.")]},
            {"role": "user", "content": [IMAGE, IMAGE, _text("Compare them."), IMAGE]},
        ],
        [WIDE, SQUARE, THIN],
    ),
    "images_in_two_turns": (
        [
            {"role": "user", "content": [IMAGE, _text("What is it?")]},
            {"role": "assistant", "content": [_text("A cat.")]},
            {"role": "user", "content": [_text("And now?"), IMAGE]},
        ],
        [SQUARE, THIN],
    ),
    "text_only": (
        [
            {"role": "system", "content": [_text("Answer in French.")]},
            {"role": "user", "content": [_text("Hello, café naïve 日本 🙂")]},
        ],
        [],
    ),
}


class Tiny(NamedTuple):
    family: str
    directory: pathlib.Path
    model: transformers.PreTrainedModel
    processor: transformers.ProcessorMixin


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory) -> Tiny:
    """Build one family once per module and load it the way the project does."""
    family = request.param
    directory = build_tiny_model(family, tmp_path_factory.mktemp(family))
    model = transformers.AutoModelForImageTextToText.from_pretrained(directory).eval()
    processor = transformers.AutoProcessor.from_pretrained(directory)
    return Tiny(family, directory, model, processor)


def _inputs(processor: transformers.ProcessorMixin, messages: list[dict], sizes: list[tuple[int, int]]):
    """Render the chat with a generation prompt and run the processor on it, as the engine does."""
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    images = [_image(size, shade=40 * i) for i, size in enumerate(sizes)] or None
    return processor(text=prompt, images=images, return_tensors="pt")


def _feature_count(model: transformers.PreTrainedModel, inputs) -> int:
    """Number of image features the model itself computes for the processed images."""
    image_kwargs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    with torch.no_grad():
        features = model.get_image_features(**image_kwargs).pooler_output
    if isinstance(features, torch.Tensor):
        features = [features]
    return sum(f.numel() for f in features) // model.config.text_config.hidden_size


@pytest.mark.parametrize("case", list(CASES))
def test_image_tokens_match_model_features_and_generate_runs(tiny, case):
    family, _, model, processor = tiny
    messages, sizes = CASES[case]
    inputs = _inputs(processor, messages, sizes)
    input_ids = inputs["input_ids"]
    n_image_tokens = int((input_ids == model.config.image_token_id).sum())

    if sizes:
        n_features = _feature_count(model, inputs)
        assert n_image_tokens == n_features, (
            f"{family}/{case}: processor wrote {n_image_tokens} image tokens for images {sizes}, "
            f"model computes {n_features} image features"
        )
    else:
        assert n_image_tokens == 0, f"{family}/{case}: text-only prompt has {n_image_tokens} image tokens"

    with torch.no_grad():
        logits = model(**inputs).logits
    expected_shape = (1, input_ids.shape[1], model.config.text_config.vocab_size)
    assert tuple(logits.shape) == expected_shape, (
        f"{family}/{case}: logits shape {tuple(logits.shape)}, expected {expected_shape}"
    )

    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    n_new = generated.shape[1] - input_ids.shape[1]
    assert 1 <= n_new <= 5, f"{family}/{case}: generate added {n_new} tokens, expected 1 to 5"
    assert torch.equal(generated[:, : input_ids.shape[1]], input_ids), (
        f"{family}/{case}: generate did not keep the prompt as the prefix of its output"
    )


def test_one_64px_image_has_the_documented_token_count(tiny):
    family, _, model, processor = tiny
    inputs = _inputs(processor, CASES["one_square_image"][0], [SQUARE])
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    expected = TOKENS_FOR_64PX[family]
    assert n_image_tokens == expected, (
        f"{family}: a 64x64 image gives {n_image_tokens} image tokens, the builder documents {expected}"
    )


@pytest.mark.parametrize("tiny", ["smolvlm"], indirect=True)
def test_smolvlm_video_frames_are_images_the_model_sees(tiny):
    """SmolVLM writes each sampled video frame as one image (4 tokens) after its timestamp."""
    family, _, model, processor = tiny
    messages = [{"role": "user", "content": [{"type": "video"}, _text("What happens?")]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    frames = torch.randint(0, 256, (3, 24, 40, 3), dtype=torch.uint8).numpy()
    metadata = VideoMetadata(total_num_frames=3, fps=1.0, frames_indices=[0, 1, 2])
    inputs = processor(text=prompt, videos=[frames], video_metadata=[metadata], return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == 3 * TOKENS_FOR_64PX[family], f"{family}: {n_image_tokens} image tokens for 3 frames"
    assert n_image_tokens == _feature_count(model, inputs), f"{family}: video tokens != model features"
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1], f"{family}: generate added nothing after a video"


def test_saved_files_and_configs(tiny):
    family, directory, model, processor = tiny
    assert (directory / "model.safetensors").is_file(), f"{family}: weights not saved as model.safetensors"
    assert model.num_parameters() < 200_000, f"{family}: {model.num_parameters()} parameters is not tiny"

    tokenizer = processor.tokenizer
    assert model.config.image_token_id == processor.image_token_id, (
        f"{family}: config image token {model.config.image_token_id} != processor's {processor.image_token_id}"
    )
    assert model.config.text_config.max_position_embeddings == 2048, f"{family}: max_position_embeddings"
    assert tokenizer.eos_token == END_OF_TURN[family], f"{family}: eos is {tokenizer.eos_token!r}"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id, f"{family}: generation eos"
    assert tokenizer.pad_token_id is not None, f"{family}: no pad token"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id, f"{family}: generation pad"


def test_chat_template_renders_system_turns_and_generation_prompt(tiny):
    family, _, _, processor = tiny
    messages = [
        {"role": "system", "content": [_text("Be kind.")]},
        {"role": "user", "content": [_text("Hi")]},
        {"role": "assistant", "content": [_text("Sure.")]},
        {"role": "user", "content": [_text("Again")]},
    ]
    closed = processor.apply_chat_template(messages, tokenize=False)
    opened = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "Be kind." in closed, f"{family}: system text missing from {closed!r}"
    assert "Sure." + END_OF_TURN[family] in closed, f"{family}: assistant turn not closed by eos in {closed!r}"
    assert opened.startswith(closed) and len(opened) > len(closed), f"{family}: no generation prompt in {opened!r}"


def test_tokenizer_is_byte_level_and_lossless(tiny):
    family, _, _, processor = tiny
    tokenizer = processor.tokenizer
    backend = tokenizer.backend_tokenizer
    assert type(backend.pre_tokenizer).__name__ == "ByteLevel", f"{family}: pre-tokenizer {backend.pre_tokenizer}"
    assert type(backend.decoder).__name__ == "ByteLevel", f"{family}: decoder {backend.decoder}"

    text = "Ωmega – naïve café, 日本語, 🦄 and\ttabs\n  spaces"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text, f"{family}: text does not round-trip through the tokenizer"
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids, f"{family}: unknown token emitted"
    # "Ω" is two bytes and not in the training corpus: each byte token alone is partial UTF-8.
    omega_ids = tokenizer("Ω", add_special_tokens=False)["input_ids"]
    assert len(omega_ids) == 2 and all("\ufffd" in tokenizer.decode([i]) for i in omega_ids), (
        f"{family}: expected 'Ω' to split into two partial-UTF-8 byte tokens, got {omega_ids}"
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_gives_identical_weights(family, tmp_path):
    first = load_file(build_tiny_model(family, tmp_path / "a", seed=3) / "model.safetensors")
    again = load_file(build_tiny_model(family, tmp_path / "b", seed=3) / "model.safetensors")
    other = load_file(build_tiny_model(family, tmp_path / "c", seed=4) / "model.safetensors")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first), (
        f"{family}: two builds with seed 3 differ"
    )
    assert any(not torch.equal(first[k], other[k]) for k in first), f"{family}: seeds 3 and 4 give the same weights"


def test_unknown_family_raises_listing_the_families(tmp_path):
    with pytest.raises(ValueError) as error:
        build_tiny_model("no_such_family", tmp_path)
    for family in FAMILIES:
        assert family in str(error.value), f"error message {str(error.value)!r} does not name {family!r}"
