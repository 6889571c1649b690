"""Per-request generation options and next-token sampling.

Sampling is a small pure function with an explicit, seeded `torch.Generator`, so a seed makes a
reply repeatable whatever else the process is doing; temperature 0 is greedy and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from transformers import LogitsProcessor, RepetitionPenaltyLogitsProcessor

from .errors import GenerationOptionsError

MAX_STOP_STRINGS = 4  # as in OpenAI's API


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 512  # upper bound on the reply's length, in tokens
    temperature: float = 0.7  # 0 = greedy (deterministic); higher = more varied
    top_p: float = 0.9  # nucleus sampling: sample from the smallest set holding this much probability
    top_k: int = 0  # sample from the k most likely tokens only; 0 = no limit
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the context (CTRL-style)
    seed: int | None = None  # makes sampling repeatable; None = fresh randomness per reply
    stop: tuple[str, ...] = ()  # the reply ends before the first of these strings (at most 4)

    def __post_init__(self) -> None:
        checks = [
            (
                isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
                "max_new_tokens must be an integer >= 1",
            ),
            (0.0 <= self.temperature <= 5.0, "temperature must be between 0 (greedy) and 5"),
            (0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]"),
            (isinstance(self.top_k, int) and self.top_k >= 0, "top_k must be an integer >= 0 (0 turns it off)"),
            (0.0 < self.repetition_penalty <= 10.0, "repetition_penalty must be in (0, 10] (1 turns it off)"),
            (self.seed is None or (isinstance(self.seed, int) and self.seed >= 0), "seed must be an integer >= 0"),
            (
                len(self.stop) <= MAX_STOP_STRINGS and all(isinstance(s, str) and s for s in self.stop),
                f"stop takes at most {MAX_STOP_STRINGS} non-empty strings",
            ),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            got = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
            raise GenerationOptionsError(f"{'; '.join(problems)} (got {got})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def from_settings(cls, settings, **overrides) -> GenerationOptions:
        """The settings' defaults, with per-request `overrides` (None means "use the default")."""
        values = {f.name: getattr(settings, f.name) for f in fields(cls) if f.name in type(settings).model_fields}
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)


def sample_next_token(logits: torch.Tensor, options: GenerationOptions, generator: torch.Generator) -> int:
    """Pick the next token id from `logits` (shape [vocab]) by temperature, top-k and top-p."""
    if options.greedy:
        return int(logits.argmax())
    logits = logits.float() / options.temperature
    if 0 < options.top_k < logits.numel():
        kth_largest = torch.topk(logits, options.top_k).values[-1]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if options.top_p < 1.0:
        logits = _keep_top_p(logits, options.top_p)
    probabilities = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))


def _keep_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    # Drop a token when the tokens before it already hold top_p; the most likely always stays.
    drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # fresh entropy from the OS
    else:
        generator.manual_seed(seed)
    return generator


class SeededSampler(LogitsProcessor):
    """Adapts `sample_next_token` to `model.generate`: it picks the token itself and leaves
    generate's (greedy) argmax a one-hot choice, so every family's own generation plumbing
    (caches, image inputs, position ids) is reused while sampling stays ours and seeded."""

    def __init__(self, options: GenerationOptions, device: torch.device | str):
        self.options = options
        self.generator = make_generator(options.seed, device)
        self.penalty = (
            RepetitionPenaltyLogitsProcessor(options.repetition_penalty) if options.repetition_penalty != 1.0 else None
        )

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.penalty is not None:
            scores = self.penalty(input_ids, scores)
        chosen = torch.full_like(scores, float("-inf"))
        for row in range(scores.shape[0]):
            chosen[row, sample_next_token(scores[row], self.options, self.generator)] = 0.0
        return chosen
