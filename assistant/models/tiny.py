"""Tiny random-weight vision-language models of real Hugging Face architectures.

Tests and benchmarks need a model that the project's real loading path accepts::

    model = transformers.AutoModelForImageTextToText.from_pretrained(directory)
    processor = transformers.AutoProcessor.from_pretrained(directory)

without network access and in seconds on a CPU. Each builder here makes a model of a real
architecture (LLaVA-1.5, LLaVA-OneVision, Idefics3, SmolVLM, Qwen2-VL) with under 100k
parameters, a byte-level BPE tokenizer trained in-process, a small image processor and a chat
template modelled on the real model's, and saves them with ``save_pretrained``.

The one invariant that matters: the number of image placeholder tokens the processor writes
for an image equals the number of image features the model computes for it. Each builder keeps
the processor's and the model's geometry (image size, patch size, feature selection, tiling)
in step, from one set of constants.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# SmolVLM's processor refuses to start without the num2words package.
FAMILIES: tuple[str, ...] = ("llava", "llava_onevision", "idefics3", "smolvlm", "qwen2_vl")

# A small English corpus for training the tokenizer's merges. Byte-level BPE can encode any text
# anyway (every byte is in the base alphabet); the corpus only decides which multi-byte merges
# exist. The non-ASCII words give merges inside multi-byte UTF-8 sequences, so that decoding an
# arbitrary token sequence can cut a character in half: the engine must cope with that.
_CORPUS: tuple[str, ...] = (
    "Hello! How can I help you today?",
    "What is in this picture? Please describe the image in detail.",
    "The image shows a small red house next to a tall green tree.",
    "There is a cat sitting on the table and a dog sleeping on the floor.",
    "The quick brown fox jumps over the lazy dog.",
    "I can see two people walking along the beach at sunset.",
    "Can you read the text on the sign? It says: open every day from 9 to 5.",
    "Thank you very much. You are welcome, have a nice day!",
    "What color is the car? The car is blue, and the sky is bright.",
    "Compare the first photo with the second one, and tell me what changed.",
    "We had coffee at a café near the station; the waiter was friendly.",
    "It was a naïve question, but the answer was interesting.",
    "日本 is the name of Japan in Japanese. 日本語 means the Japanese language.",
    "Zürich, München and São Paulo are cities. The price was 5 € or £4.",
    "That made me smile 😀 and I sent a thumbs up 👍 to my friend.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2024. Symbols: + - * / = ( ) [ ] { } < > # @ & %.",
)
_VOCAB_SIZE = 384

# Shared sizes of the text decoder: tiny, but with grouped-query attention as in the real models.
_TEXT_SIZES: dict[str, int] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}
# Shared sizes of the vision encoders (CLIP, SigLIP, Idefics3's SigLIP variant).
_VISION_SIZES: dict[str, int] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}


def _train_tokenizer(special_tokens: list[str]) -> Tokenizer:
    """Train a byte-level BPE tokenizer on the built-in corpus; specials take ids 0..n-1."""
    tokenizer = Tokenizer(models.BPE())
    # No prefix space, as in the GPT-2 / Llama-3 / Qwen2 BPEs: text is encoded exactly as written.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=special_tokens,
        # All 256 byte symbols, seen in the corpus or not, so no text ever needs an unknown token.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    return tokenizer


def _make_tokenizer(
    *, eos: str, pad: str, extra: list[str], bos: str | None = None
) -> transformers.PreTrainedTokenizerFast:
    """Build the family's tokenizer: byte-level BPE plus its special tokens.

    ``eos`` is the family's end-of-turn token, so that generation stops where the chat template
    closes an assistant turn. Padding is on the left because generation appends on the right.
    """
    named = [bos, eos, pad] if bos else [eos, pad]
    tokenizer = _train_tokenizer(named + extra)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens=extra,
        padding_side="left",
    )


def _text_config(tokenizer: transformers.PreTrainedTokenizerFast) -> dict:
    """Keyword arguments of a tiny text decoder config that matches ``tokenizer``."""
    return {
        **_TEXT_SIZES,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _save(
    model: transformers.PreTrainedModel, processor: transformers.ProcessorMixin, directory: pathlib.Path
) -> pathlib.Path:
    """Point the generation config at the end-of-turn and pad tokens, then save both halves."""
    tokenizer = processor.tokenizer
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)  # safetensors, the only format transformers 5 writes
    processor.save_pretrained(directory)
    return directory


# LLaVA-1.5 (Vicuna) layout: "SYSTEM USER: <image>\nQ ASSISTANT: A</s>USER: ... ASSISTANT:".
_LLAVA_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- for part in parts if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}{{ ' ' }}"
    "{%- else -%}"
    "{{ message['role'] | upper }}{{ ': ' }}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if message['role'] == 'assistant' -%}{{ '</s>' }}{%- else -%}{{ ' ' }}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)


def _build_llava() -> tuple[transformers.PreTrainedModel, transformers.ProcessorMixin]:
    """LLaVA-1.5: CLIP vision tower, one fixed-size crop, Llama decoder.

    CLIP prepends a CLS token to its (32 / 8) ** 2 = 16 patches; the "default" feature selection
    drops it, so each image is 16 features and 16 ``<image>`` tokens.
    """
    image_size, patch_size = 32, 8
    tokenizer = _make_tokenizer(bos="<s>", eos="</s>", pad="<pad>", extra=["<image>"])
    image_processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = transformers.LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=_LLAVA_TEMPLATE,
    )
    config = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(
            **_VISION_SIZES, image_size=image_size, patch_size=patch_size, projection_dim=32
        ),
        text_config=transformers.LlamaConfig(**_text_config(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return transformers.LlavaForConditionalGeneration(config), processor


# ChatML as in LLaVA-OneVision (Qwen2 decoder): "<|im_start|>user\n<image>\nQ<|im_end|>\n...".
_LLAVA_ONEVISION_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


def _build_llava_onevision() -> tuple[transformers.PreTrainedModel, transformers.ProcessorMixin]:
    """LLaVA-OneVision: SigLIP vision tower, "anyres" tiling, Qwen2 decoder.

    A tile is 16 px, so (16 / 8) ** 2 = 4 features. An image is split into up to 2x2 tiles (the
    pinpoints) plus a base view, and its feature count depends on its aspect ratio (unpadding
    plus one newline feature per row): 24 for a square of 32 px or more. When the images are passed nested
    per prompt (``[[a, b]]``) and a prompt holds several, each is only the base view plus a
    newline, 5 features. The processor and the model both follow ``batch_num_images``.
    """
    tile, patch_size = 16, 8
    pinpoints = [[tile, tile], [tile, 2 * tile], [2 * tile, tile], [2 * tile, 2 * tile]]
    tokenizer = _make_tokenizer(eos="<|im_end|>", pad="<|endoftext|>", extra=["<|im_start|>", "<image>", "<video>"])
    size = {"height": tile, "width": tile}
    processor = transformers.LlavaOnevisionProcessor(
        image_processor=transformers.LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer,
        video_processor=transformers.LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(tile // patch_size) ** 2,
        vision_feature_select_strategy="full",  # SigLIP has no CLS token to drop
        chat_template=_LLAVA_ONEVISION_TEMPLATE,
    )
    config = transformers.LlavaOnevisionConfig(
        vision_config=transformers.SiglipVisionConfig(
            **_VISION_SIZES, image_size=tile, patch_size=patch_size, vision_use_head=False
        ),
        text_config=transformers.Qwen2Config(**_text_config(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
    )
    return transformers.LlavaOnevisionForConditionalGeneration(config), processor


def _idefics3_style_template(bos: str, *, video: bool = False) -> str:
    """Idefics3's chat layout, which SmolVLM keeps with its own first token and a video part:
    "<bos>User:<image>Q<end_of_utterance>\nAssistant: A<end_of_utterance>\n...Assistant:".
    """
    video_part = "{%- elif part['type'] == 'video' -%}{{ '<video>' }}" if video else ""
    return (
        "{{ '" + bos + "' }}"
        "{%- for message in messages -%}"
        "{%- if message['content'] is string -%}"
        "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
        "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
        "{{ message['role'] | capitalize }}"
        # As in the real template: no space after the colon when the turn opens with an image.
        "{%- if parts and parts[0]['type'] == 'image' -%}{{ ':' }}{%- else -%}{{ ': ' }}{%- endif -%}"
        "{%- for part in parts -%}"
        "{%- if part['type'] == 'image' -%}{{ '<image>' }}"
        + video_part
        + "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}"
        "{{ '<end_of_utterance>\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
    )


_IDEFICS3_TEMPLATE = _idefics3_style_template("<|begin_of_text|>")
# SmolVLM2's template: Idefics3's, opened by <|im_start|>, with a <video> placeholder.
_SMOLVLM_TEMPLATE = _idefics3_style_template("<|im_start|>", video=True)

# Geometry of the Idefics3-style builders: image splitting is off, so every image (and every
# video frame) is squared to 32 px: (32 / 8) ** 2 = 16 patches, pixel-shuffled by scale factor 2
# into 4 features.
_IDEFICS3_STYLE_IMAGE_SIZE, _IDEFICS3_STYLE_PATCH_SIZE, _IDEFICS3_STYLE_SCALE_FACTOR = 32, 8, 2
_IDEFICS3_STYLE_SPECIALS = ["<fake_token_around_image>", "<image>", "<global-img>"]


def _build_idefics3_style(
    *,
    tokenizer: transformers.PreTrainedTokenizerFast,
    image_processor_class: type,
    processor_class: type,
    vision_config_class: type,
    config_class: type,
    model_class: type,
    chat_template: str,
    video_processor_class: type | None = None,
    video_processor_kwargs: dict | None = None,
) -> tuple[transformers.PreTrainedModel, transformers.ProcessorMixin]:
    """The shared build of Idefics3 and SmolVLM: SigLIP-style vision tower, pixel-shuffle
    connector, Llama decoder, and a processor that writes ``<fake_token_around_image><global-img>``
    + ``image_seq_len`` x ``<image>`` + ``<fake_token_around_image>`` per image (or video frame).
    """
    image_size, patch_size = _IDEFICS3_STYLE_IMAGE_SIZE, _IDEFICS3_STYLE_PATCH_SIZE
    scale_factor = _IDEFICS3_STYLE_SCALE_FACTOR
    image_seq_len = (image_size // patch_size) ** 2 // scale_factor**2
    longest_edge = {"longest_edge": image_size}
    image_processor = image_processor_class(size=longest_edge, max_image_size=longest_edge, do_image_splitting=False)
    videos = {}
    if video_processor_class is not None:
        videos["video_processor"] = video_processor_class(
            size=longest_edge, max_image_size=longest_edge, **(video_processor_kwargs or {})
        )
    processor = processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        **videos,
        image_seq_len=image_seq_len,
        chat_template=chat_template,
    )
    config = config_class(
        vision_config=vision_config_class(**_VISION_SIZES, image_size=image_size, patch_size=patch_size),
        text_config=transformers.LlamaConfig(**_text_config(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor,
        # Deprecated top-level field, but its default (Llama-3's 128002) is outside this vocab.
        pad_token_id=tokenizer.pad_token_id,
    )
    return model_class(config), processor


def _build_idefics3() -> tuple[transformers.PreTrainedModel, transformers.ProcessorMixin]:
    """Idefics3: SigLIP-style vision tower, pixel-shuffle connector, Llama decoder.

    Image splitting is off, so every image is squared to 32 px: (32 / 8) ** 2 = 16 patches,
    pixel-shuffled by ``scale_factor`` 2 into 4 features, written by the processor as
    ``<fake_token_around_image><global-img>`` + 4 x ``<image>`` + ``<fake_token_around_image>``.
    """
    tokenizer = _make_tokenizer(
        bos="<|begin_of_text|>", eos="<end_of_utterance>", pad="<pad>", extra=_IDEFICS3_STYLE_SPECIALS
    )
    return _build_idefics3_style(
        tokenizer=tokenizer,
        image_processor_class=transformers.Idefics3ImageProcessor,
        processor_class=transformers.Idefics3Processor,
        vision_config_class=transformers.Idefics3VisionConfig,
        config_class=transformers.Idefics3Config,
        model_class=transformers.Idefics3ForConditionalGeneration,
        chat_template=_IDEFICS3_TEMPLATE,
    )


def _build_smolvlm() -> tuple[transformers.PreTrainedModel, transformers.ProcessorMixin]:
    """SmolVLM(2): Idefics3's architecture and geometry, SmolLM2's special tokens, plus videos.

    As for Idefics3, a 64x64 image (any image: splitting is off) is 4 ``<image>`` tokens. A video
    is sampled at 1 frame per second, at most 4 frames, each frame squared to 32 px and written
    as one image (4 ``<image>`` tokens) after its timestamp. Its processor needs ``num2words``.
    """
    tokenizer = _make_tokenizer(
        bos="<|im_start|>",
        eos="<end_of_utterance>",
        pad="<|im_end|>",  # as in the real SmolVLM2 tokenizer
        extra=[*_IDEFICS3_STYLE_SPECIALS, "<video>"],
    )
    return _build_idefics3_style(
        tokenizer=tokenizer,
        image_processor_class=transformers.SmolVLMImageProcessor,
        processor_class=transformers.SmolVLMProcessor,
        vision_config_class=transformers.SmolVLMVisionConfig,
        config_class=transformers.SmolVLMConfig,
        model_class=transformers.SmolVLMForConditionalGeneration,
        chat_template=_SMOLVLM_TEMPLATE,
        video_processor_class=transformers.SmolVLMVideoProcessor,
        video_processor_kwargs={"num_frames": 4, "fps": 1},
    )


# Qwen2-VL's ChatML, default system prompt included.
_QWEN2_VL_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


def _build_qwen2_vl() -> tuple[transformers.PreTrainedModel, transformers.ProcessorMixin]:
    """Qwen2-VL: native-resolution vision tower with 2D rotary positions, Qwen2 decoder with M-RoPE.

    Images are resized (aspect ratio kept) to multiples of patch 4 x merge 2 = 8 px, between
    8x8 and 32x32 pixels in area; every 2x2 patches merge into one feature, so a 64x64 image is
    (32 / 8) ** 2 = 16 ``<|image_pad|>`` tokens and a thin one as few as one.
    """
    patch_size, merge_size, temporal_patch_size = 4, 2, 2
    factor = patch_size * merge_size
    tokenizer = _make_tokenizer(
        eos="<|im_end|>",
        pad="<|endoftext|>",
        extra=["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
    )
    pixels = {"shortest_edge": factor * factor, "longest_edge": (4 * factor) ** 2}
    geometry = {
        "patch_size": patch_size,
        "merge_size": merge_size,
        "temporal_patch_size": temporal_patch_size,
    }
    processor = transformers.Qwen2VLProcessor(
        image_processor=transformers.Qwen2VLImageProcessor(size=pixels, **geometry),
        tokenizer=tokenizer,
        video_processor=transformers.Qwen2VLVideoProcessor(size=pixels, **geometry),
        chat_template=_QWEN2_VL_TEMPLATE,
    )
    text_config = _text_config(tokenizer)
    config = transformers.Qwen2VLConfig(
        vision_config=transformers.Qwen2VLVisionConfig(
            depth=2,
            embed_dim=32,
            hidden_size=text_config["hidden_size"],
            num_heads=4,
            patch_size=patch_size,
            spatial_merge_size=merge_size,
            temporal_patch_size=temporal_patch_size,
        ),
        text_config=transformers.Qwen2VLTextConfig(
            **text_config,
            # M-RoPE shares each head's rotary frequency pairs (head_dim 8 / 2 = 4 of them) out
            # between time, height and width, as the real [16, 24, 24] does with 64.
            rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1]},
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    )
    return transformers.Qwen2VLForConditionalGeneration(config), processor


_BUILDERS: dict[str, Callable[[], tuple[transformers.PreTrainedModel, transformers.ProcessorMixin]]] = {
    "llava": _build_llava,
    "llava_onevision": _build_llava_onevision,
    "idefics3": _build_idefics3,
    "smolvlm": _build_smolvlm,
    "qwen2_vl": _build_qwen2_vl,
}


def build_tiny_model(family: str, directory: str | os.PathLike, seed: int = 0) -> pathlib.Path:
    """Build a tiny random model of `family` and save model + processor to `directory`; returns the directory.

    The same ``family`` and ``seed`` give identical weights. Unknown family -> ValueError naming
    the families that exist.
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown model family {family!r}; known families: {', '.join(FAMILIES)}")
    # A private RNG stream: the build is reproducible and leaves the caller's torch RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = _BUILDERS[family]()
    return _save(model, processor, pathlib.Path(directory))


def build_tiny_parts(directory: str | os.PathLike, seed: int = 0) -> tuple[pathlib.Path, pathlib.Path]:
    """Tiny random parts for a composed model: a CLIP vision tower (32 px, 8 px patches: a 4x4 grid
    of 16 patch features of width 32) and a Qwen2 causal LM with a ChatML template.

    Returns (vision encoder directory, language model directory); both load through the same code
    as real parts (`load_vision_encoder`, `load_causal_lm`)."""
    root = pathlib.Path(directory)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vision = transformers.CLIPVisionModel(
            transformers.CLIPVisionConfig(**_VISION_SIZES, image_size=32, patch_size=8, projection_dim=32)
        )
        image_processor = transformers.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
        tokenizer = _make_tokenizer(eos="<|im_end|>", pad="<|endoftext|>", extra=["<|im_start|>"])
        tokenizer.chat_template = _LLAVA_ONEVISION_TEMPLATE  # ChatML, as SmolLM2's
        # A wider initialisation than the default 0.02: at that scale a tiny random LM's logits are
        # flat whatever its input, and tests of training need inputs that can move the output.
        language_model = transformers.Qwen2ForCausalLM(
            transformers.Qwen2Config(**_text_config(tokenizer), initializer_range=0.3)
        )
    vision.save_pretrained(root / "vision")
    image_processor.save_pretrained(root / "vision")
    language_model.generation_config.eos_token_id = tokenizer.eos_token_id
    language_model.generation_config.pad_token_id = tokenizer.pad_token_id
    language_model.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    return root / "vision", root / "lm"
