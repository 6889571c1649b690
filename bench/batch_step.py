"""Decode steps of the starter's compiled int8 LM: four replies one after another against the same
four as one batch, in one process (the batch step reads the weights once for all rows).

    python -m bench.batch_step          # prints one line per way; the compiles come first (cached: ~1 min)
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from assistant.models.base import GenerationRequest
from assistant.models.causal_lm import load_causal_lm
from assistant.models.fast_decode import DecodeSpeed, FastDecoder
from assistant.settings import Settings
from assistant.threads import reserve_for_model

from .common import repeat, timed

PROMPT_LENGTHS = (40, 25, 60, 33)


def main() -> None:
    reserve_for_model()  # this thread loads; the compile thread and the decode below get the cores
    language_model, _ = load_causal_lm("smollm2-135m", cache_dir=Settings().cache_dir)
    decoder = FastDecoder(language_model.eval(), DecodeSpeed("int8", compile=True, batch=len(PROMPT_LENGTHS)))
    _, seconds = timed(lambda: decoder.warm_up().join())
    print(f"compiled both steps in {seconds:.0f} s")
    embed = decoder.language_model.get_input_embeddings()
    with torch.inference_mode():
        prompts = [embed(torch.arange(10, 10 + length)[None]) for length in PROMPT_LENGTHS]

    def one_after_another(new_tokens: int) -> None:
        for prompt in prompts:
            decoder.generate(prompt, new_tokens, LogitsProcessorList(), StoppingCriteriaList(), None, [])

    def as_one_batch(new_tokens: int) -> None:
        requests = [
            GenerationRequest(None, new_tokens, LogitsProcessorList(), StoppingCriteriaList(), None) for _ in prompts
        ]
        decoder.generate_batch(prompts, requests, [])

    for name, decode in (("one after another", one_after_another), ("as one batch", as_one_batch)):
        step_s = _seconds_per_step(decode)
        speed = f"{len(prompts) / step_s:.0f} tokens/s over {len(prompts)} replies"
        print(f"{name}: {speed}, {1000 * step_s:.1f} ms for a token of each")


def _seconds_per_step(decode, runs: int = 3) -> float:
    """Seconds per decode step of every reply, the prompt's pass excluded: 72 new tokens minus 8."""

    def best(new_tokens: int) -> float:
        return min(repeat(lambda: decode(new_tokens), runs))

    return (best(72) - best(8)) / 64


if __name__ == "__main__":
    main()
