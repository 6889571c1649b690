"""`assistant train`: LLaVA stage-1 alignment (seed §3.3). The encoder and the language model stay
frozen; only the projector learns, to turn patch features into tokens the LM understands.

    1. examples (synthetic scenes or the user's data) -> unique images
    2. encoder features of every image, computed once and cached on disk (the encoder is frozen)
    3. prompts tokenized with the LM's chat template, the answer as the only supervised tokens
    4. AdamW, linear warm-up then cosine decay, gradient clipping; checkpoints to resume from
    5. the composed model directory: composed.json + projector.safetensors
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from ..models.composed import (
    ComposedSpec,
    ComposedVLM,
    render_prompt,
    save_projector,
    tokenize_with_images,
)
from ..vision.colour import RECOMMENDED_GAIN, colour_channels
from ..vision.projectors import ProjectorConfig
from .datasets import DatasetError, VQAExample, load_dataset, scenes_to_examples
from .evaluate import SHORT_ANSWER
from .scenes import make_split

IGNORE_INDEX = -100  # label of positions the loss skips (the prompt and the image tokens)
CHECKPOINT_FILE = "checkpoint.pt"
FEATURE_BATCH = 32  # images per encoder call while caching features


@dataclass(frozen=True)
class TrainConfig:
    output: Path  # the composed model directory to write
    fusion: Literal["mlp", "resampler"] = "mlp"
    image_tokens: int = 16  # mlp: a square number <= the encoder's patches; resampler: learned queries
    encoder: str = "efficientnet-lite0"
    language_model: str = "smollm2-135m"
    colour_features: str = "histogram"  # what each patch's colours add to its features (vision.colour)
    colour_gain: float | None = None  # what they are multiplied by; None: the layout's RECOMMENDED_GAIN
    # The saved model names what the encoder's ImageNet head sees in each photo in its prompts (real
    # objects the synthetic scenes never show); inference only, so training is the same either way.
    object_hints: bool = True
    data: str | None = None  # a dataset folder/.jsonl/.json; None: the built-in synthetic scenes
    # Train only on these question types (None: all). The starter trains on colour and shape: with
    # the frozen LM, mixing in the long caption answers kept colour at chance (see docs/starter.md).
    question_types: tuple[str, ...] | None = None
    scenes: int = 2000  # synthetic training scenes (each gives several questions)
    steps: int = 600
    batch_size: int = 16
    learning_rate: float = 1e-3  # LLaVA stage 1 uses 1e-3 for the projector
    warmup_steps: int = 30
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100  # steps between checkpoints (and the end)
    stop_after: int | None = None  # end this run at this step, checkpointed, to resume later
    cache_dir: Path = Path.home() / ".cache" / "assistant"
    # The frozen LM's weights during training: bf16 runs the step faster on CPUs with AMX or
    # AVX-512-BF16; the projector itself always trains in fp32.
    lm_dtype: Literal["float32", "bfloat16"] = "bfloat16"


@dataclass
class TrainingExamples:
    """Tokenized examples with the index of their image's cached features."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    image_masks: list[list[bool]]
    image_index: list[int]
    features: torch.Tensor  # [images, P, D]
    question_types: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


def train(config: TrainConfig, command: Sequence[str] = ()) -> Path:
    """Train a projector as `config` says; returns the composed model directory."""
    started = time.perf_counter()
    vlm = build_for_training(config)
    examples = prepare_examples(vlm, _training_examples(config), config)
    optimizer, scheduler = _optimizer(vlm, config)
    step, generator = _resume(vlm, optimizer, scheduler, config)
    losses = _loop(vlm, examples, optimizer, scheduler, step, generator, config)
    if config.stop_after is not None and config.stop_after < config.steps:
        print(f"stopped at step {config.stop_after}; run again without --stop-after to finish", file=sys.stderr)
        return config.output
    provenance = {
        "command": " ".join(command),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items() if k != "cache_dir"},
        "final_loss": losses[-1] if losses else None,
        "training_minutes": round((time.perf_counter() - started) / 60, 1),
    }
    vlm.spec = ComposedSpec(**{**vlm.spec.__dict__, "provenance": provenance})
    save_projector(vlm, config.output)
    return config.output


def build_for_training(config: TrainConfig) -> ComposedVLM:
    """The frozen parts named in `config` and a fresh projector whose initial weights follow the seed."""
    from ..models.causal_lm import load_causal_lm
    from ..vision.encoders import load_vision_encoder

    encoder = load_vision_encoder(config.encoder)
    language_model, tokenizer = load_causal_lm(config.language_model, cache_dir=config.cache_dir)
    spec = ComposedSpec(
        encoder=config.encoder,
        language_model=config.language_model,
        projector=ProjectorConfig(
            kind=config.fusion,
            feature_dim=encoder.feature_dim + colour_channels(config.colour_features),
            embed_dim=language_model.get_input_embeddings().embedding_dim,
            num_patches=encoder.num_patches,
            num_tokens=config.image_tokens,
        ),
        colour_features=config.colour_features,
        colour_gain=config.colour_gain if config.colour_gain is not None else RECOMMENDED_GAIN[config.colour_features],
        object_hints=config.object_hints,
    )
    torch.manual_seed(config.seed)
    return ComposedVLM(spec, encoder, language_model.eval(), tokenizer)


def _training_examples(config: TrainConfig) -> list[VQAExample]:
    examples = (
        load_dataset(config.data)
        if config.data
        else scenes_to_examples(make_split("train", config.scenes, seed=config.seed))
    )
    if config.question_types is None:
        return examples
    kept = [example for example in examples if example.question_type in config.question_types]
    if not kept:
        found = sorted({example.question_type for example in examples})
        raise DatasetError(
            f"no training question is of type {', '.join(config.question_types)}; the data has: {', '.join(found)}"
        )
    return kept


def prepare_examples(vlm: ComposedVLM, examples: list[VQAExample], config: TrainConfig) -> TrainingExamples:
    """Tokenize every example and attach its image's (cached) encoder features."""
    images, image_index = _unique_images(examples)
    features = cached_features(vlm, images, config)
    tokenized = [tokenize_example(vlm, example) for example in examples]
    return TrainingExamples(
        input_ids=[ids for ids, _, _ in tokenized],
        labels=[labels for _, labels, _ in tokenized],
        image_masks=[mask for _, _, mask in tokenized],
        image_index=image_index,
        features=features,
        question_types=[example.question_type for example in examples],
    )


def tokenize_example(vlm: ComposedVLM, example: VQAExample) -> tuple[list[int], list[int], list[bool]]:
    """The prompt exactly as inference renders it, then the answer and the end-of-turn token; only
    the answer (and the end of turn) are supervised."""
    chat = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": f"{example.question}\n{SHORT_ANSWER}"}],
        }
    ]
    prompt_ids, mask = tokenize_with_images(vlm.tokenizer, render_prompt(vlm.tokenizer, chat), vlm.tokens_per_image)
    answer_ids = vlm.tokenizer.encode(example.answer, add_special_tokens=False) + [vlm.tokenizer.eos_token_id]
    ids = prompt_ids + answer_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    return ids, labels, mask + [False] * len(answer_ids)


def _unique_images(examples: list[VQAExample]) -> tuple[list, list[int]]:
    """Several questions share an image: encode each image once."""
    position: dict[int | str, int] = {}
    images, index = [], []
    for example in examples:
        key = str(example.image) if isinstance(example.image, Path) else id(example.image)
        if key not in position:
            position[key] = len(images)
            images.append(example)
        index.append(position[key])
    return images, index


def cached_features(vlm: ComposedVLM, image_examples: list[VQAExample], config: TrainConfig) -> torch.Tensor:
    """Encoder features [images, P, D] for the images, from the disk cache when this encoder has
    seen exactly these images before."""
    path = Path(config.cache_dir) / "features" / f"{_features_key(vlm, image_examples, config)}.safetensors"
    if path.is_file():
        return load_file(path)["features"]
    chunks = []
    for start in tqdm(
        range(0, len(image_examples), FEATURE_BATCH), desc="encoding images", unit="batch", file=sys.stderr
    ):
        batch = [example.load_image() for example in image_examples[start : start + FEATURE_BATCH]]
        chunks.append(vlm.patch_features(vlm.encoder.preprocess(batch)))
    features = torch.cat(chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".partial")
    save_file({"features": features.contiguous()}, staging)
    staging.replace(path)
    return features


def _features_key(vlm: ComposedVLM, image_examples: list[VQAExample], config: TrainConfig) -> str:
    """What the cached features depend on: the encoder, the colour option and the images."""
    if config.data:
        images = [(str(e.image), Path(e.image).stat().st_mtime_ns) for e in image_examples]
    else:
        images = ["scenes", "train", config.scenes, config.seed, len(image_examples)]
    colour = (vlm.spec.colour_features, vlm.spec.colour_gain)  # another colour layout or gain: other features
    key = json.dumps([vlm.spec.encoder, colour, images], default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _optimizer(vlm: ComposedVLM, config: TrainConfig):
    optimizer = torch.optim.AdamW(vlm.projector.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    return optimizer, scheduler


def _resume(vlm: ComposedVLM, optimizer, scheduler, config: TrainConfig) -> tuple[int, torch.Generator]:
    """Continue from the output directory's checkpoint when there is one (same config only)."""
    generator = torch.Generator().manual_seed(config.seed)
    path = Path(config.output) / CHECKPOINT_FILE
    if not path.is_file():
        return 0, generator
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["config"] != _config_fingerprint(config):
        raise ValueError(f"{path} was written by a different training configuration; remove it or use another --output")
    vlm.projector.load_state_dict(state["projector"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    print(f"resuming from step {state['step']} ({path})", file=sys.stderr)
    return state["step"], generator


def _save_checkpoint(vlm: ComposedVLM, optimizer, scheduler, step: int, generator, config: TrainConfig) -> None:
    path = Path(config.output) / CHECKPOINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "config": _config_fingerprint(config),
        "projector": vlm.projector.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
    }
    torch.save(state, path.with_suffix(".partial"))
    path.with_suffix(".partial").replace(path)


def _config_fingerprint(config: TrainConfig) -> str:
    how_run = ("output", "cache_dir", "checkpoint_every", "stop_after", "object_hints")  # do not change what is trained
    relevant = {k: str(v) for k, v in asdict(config).items() if k not in how_run}
    return json.dumps(relevant, sort_keys=True)


def _loop(
    vlm, examples: TrainingExamples, optimizer, scheduler, step: int, generator, config: TrainConfig
) -> list[float]:
    losses: list[float] = []
    vlm.language_model.to(getattr(torch, config.lm_dtype))
    vlm.projector.train()
    bar = tqdm(total=config.steps, initial=step, desc=f"training {config.fusion}", unit="step", file=sys.stderr)
    last = min(config.steps, config.stop_after or config.steps)
    while step < last:
        batch = torch.randint(len(examples), (config.batch_size,), generator=generator).tolist()
        loss = training_loss(vlm, examples, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vlm.projector.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{_smoothed(losses):.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
        if step % config.checkpoint_every == 0 or step == last:
            _save_checkpoint(vlm, optimizer, scheduler, step, generator, config)
    bar.close()
    return losses


def training_loss(vlm: ComposedVLM, examples: TrainingExamples, batch: list[int]) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens of the examples in `batch` (right-padded).

    Only the supervised positions go through the LM head: a 49k-word vocabulary projection at
    every position would cost a fifth of the step for logits nobody reads."""
    length = max(len(examples.input_ids[i]) for i in batch)

    def padded(rows, value):
        return torch.tensor([row + [value] * (length - len(row)) for row in rows])

    input_ids = padded([examples.input_ids[i] for i in batch], vlm.tokenizer.pad_token_id or 0)
    labels = padded([examples.labels[i] for i in batch], IGNORE_INDEX)
    image_mask = padded([examples.image_masks[i] for i in batch], False)
    attention = padded([[1] * len(examples.input_ids[i]) for i in batch], 0)
    features = examples.features[[examples.image_index[i] for i in batch]]
    embeddings = vlm.embed(input_ids, image_mask, features)
    hidden = vlm.language_model.model(inputs_embeds=embeddings, attention_mask=attention).last_hidden_state
    targets = labels[:, 1:]  # position t predicts token t + 1
    supervised = targets != IGNORE_INDEX
    logits = vlm.language_model.lm_head(hidden[:, :-1][supervised]).float()
    return torch.nn.functional.cross_entropy(logits, targets[supervised])


def _smoothed(losses: list[float], window: int = 20) -> float:
    recent = losses[-window:]
    return sum(recent) / len(recent)
