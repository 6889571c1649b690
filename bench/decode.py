"""Language-model speed: the engine against plain transformers on the same model and prompt, and
both against the memory-bandwidth limit measured in the same run.

    baseline  model.generate(..., do_sample=False) as transformers' docs show it, float32 weights
    engine    what `assistant serve` runs (for the starter: assistant.models.fast_decode)
    limit     bandwidth / bytes of weights read per token = the most tokens/s the memory allows

Decode speed counts the tokens after the first; time to first token includes encoding the prompt
(and the photo). Every reply is forced to the same length: the end-of-turn token is ignored. Each
row is the median of RUNS timed replies, after a warm-up.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass

import torch

from assistant.conversation import Conversation, Message
from assistant.engine import Engine
from assistant.events import TextDelta
from assistant.sampling import GenerationOptions
from assistant.threads import run_in_model_thread

from .common import repeat, timed

# An end-of-turn id no token has: every reply runs to max_new_tokens, past the model's own end of turn
# (forbidding that token instead, as min_new_tokens does, would change the greedy reply).
NEVER = -1
RUNS = 3  # timed replies per row; the median is reported (this machine is shared and noisy)
TEXT_QUESTION = "Tell me a story about a cat who finds a garden."
PHOTO_QUESTION = "What colour is the shape in this picture?"


@dataclass
class DecodeResult:
    model: str
    prompt: str  # "text" or "photo + text"
    runtime: str  # "engine: ..." or "baseline: transformers generate"
    prompt_tokens: int
    new_tokens: int
    time_to_first_token_s: float
    tokens_per_s: float
    weight_bytes_per_token: int
    same_tokens_as_baseline: str = ""  # "64/64" = the greedy replies agree that far
    linear_layers_bytes_per_s: float = 0.0  # the model's linear layers alone, one token's worth, back to back

    def limit_percent(self, bandwidth_bytes_per_s: float) -> float:
        return 100.0 * self.tokens_per_s * self.weight_bytes_per_token / bandwidth_bytes_per_s


def weight_bytes_per_token(language_model: torch.nn.Module) -> int:
    """Bytes of weights one decoded token reads: every parameter once, except the input embedding
    (one row is looked up) unless the output head shares it; quantized tensors count their parts."""
    embedding = language_model.get_input_embeddings().weight
    head = language_model.get_output_embeddings()
    tied = head is not None and head.weight is embedding
    total = 0
    for parameter in {id(p): p for p in language_model.parameters()}.values():
        if parameter is embedding and not tied:
            continue
        total += _storage_bytes(parameter)
    return total


def _storage_bytes(tensor: torch.Tensor) -> int:
    if hasattr(tensor, "__tensor_flatten__"):  # e.g. torchao's Int8Tensor: qdata + scales
        names, _ = tensor.__tensor_flatten__()
        return sum(_storage_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def linear_layers_speed(language_model: torch.nn.Module, runs: int = 5) -> float:
    """Bytes/s at which the LM's own float linear layers stream their weights for one token, called
    back to back with nothing else: the ceiling any decode loop on these kernels can reach, whatever
    it does about Python, caches or compilation. 0 for quantized weights (not measured)."""
    linears = [m for m in language_model.modules() if isinstance(m, torch.nn.Linear)]
    if any(hasattr(m.weight, "__tensor_flatten__") for m in linears):
        return 0.0  # quantized: eager calls would time the wrapper's Python, not the kernel
    dtype = language_model.get_input_embeddings().weight.dtype
    device = language_model.get_input_embeddings().weight.device
    inputs = {m.in_features: torch.randn(1, m.in_features, dtype=dtype, device=device) for m in linears}
    total = sum(_storage_bytes(m.weight) for m in linears)

    def one_token() -> None:
        for module in linears:
            module(inputs[module.in_features])
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        return total / min(repeat(one_token, runs + 1))


def forced_length(model):
    """The loaded model with no end-of-turn token, so that every reply has exactly max_new_tokens."""
    return dataclasses.replace(model, eos_token_ids=[NEVER])


def engine_run(
    model, conversation: Conversation, new_tokens: int, name: str, prompt: str, runtime: str
) -> tuple[DecodeResult, str]:
    engine = Engine(forced_length(model))
    try:
        if engine.warming_up is not None:
            engine.warming_up.join()  # the compile belongs to start-up, not to this reply
        engine.reply(conversation, GenerationOptions(temperature=0.0, max_new_tokens=8)).text()  # warm caches
        usages = []
        for _ in range(RUNS):
            reply = engine.reply(conversation, GenerationOptions(temperature=0.0, max_new_tokens=new_tokens))
            text = "".join(event.text for event in reply if isinstance(event, TextDelta))
            usages.append(reply.usage)
    finally:
        engine.close()
    usage = dataclasses.replace(
        usages[0],
        time_to_first_token_s=statistics.median(u.time_to_first_token_s for u in usages),
        tokens_per_s=statistics.median(u.tokens_per_s for u in usages),
    )
    language_model = model.model.language_model  # a fast decoder converts this very module in place
    result = DecodeResult(
        name,
        prompt,
        runtime,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.time_to_first_token_s,
        usage.tokens_per_s,
        weight_bytes_per_token(language_model),
        linear_layers_bytes_per_s=run_in_model_thread(linear_layers_speed, language_model),
    )
    return result, text


def composed_baseline_run(
    model, conversation: Conversation, new_tokens: int, name: str, prompt: str
) -> tuple[DecodeResult, list[int]]:
    """transformers' generate on the composed model's LM, given the same prompt embeddings."""
    language_model = model.model.language_model

    def generate(count: int) -> torch.Tensor:
        with torch.inference_mode():
            encoded = model.encode(conversation)  # as the engine does: template, photo, embeddings
            inputs = encoded.inputs.to(model.device)
            pixel_values = inputs.get("pixel_values")
            features = None if pixel_values is None else model.model.patch_features(pixel_values.to(model.dtype))
            embeddings = model.model.embed(inputs["input_ids"], inputs["image_mask"], features)
            output = language_model.generate(
                inputs_embeds=embeddings,
                attention_mask=inputs["attention_mask"],
                max_new_tokens=count,
                do_sample=False,
                eos_token_id=NEVER,
                pad_token_id=model.eos_token_ids[0],
            )
        return output[0]

    generate(2)  # warm-up
    first_s = statistics.median(repeat(lambda: generate(1), RUNS))
    totals = [timed(lambda: generate(new_tokens)) for _ in range(RUNS)]
    total_s, ids = statistics.median(seconds for _, seconds in totals), totals[0][0]
    prompt_tokens = model.encode(conversation).prompt_tokens
    result = DecodeResult(
        name,
        prompt,
        "baseline: transformers generate, float32",
        prompt_tokens,
        new_tokens,
        first_s,
        (new_tokens - 1) / (total_s - first_s),
        weight_bytes_per_token(language_model),
        linear_layers_bytes_per_s=linear_layers_speed(language_model),
    )
    return result, ids.tolist()


def agreement(tokenizer, engine_text: str, baseline_ids: list[int]) -> str:
    """How many of the baseline's tokens the engine's streamed text begins with (the engine streams
    text, not ids, and re-encoding text need not give back the same ids)."""
    same = 0
    while same < len(baseline_ids) and engine_text.startswith(
        tokenizer.decode(baseline_ids[: same + 1], skip_special_tokens=True)
    ):
        same += 1
    return f"{same}/{len(baseline_ids)}"


def starter(settings_for, photo, new_tokens: int) -> list[DecodeResult]:
    """The starter through the engine as `serve` runs it, and plain transformers on its float32 LM."""
    from assistant.models import load_model

    questions = {
        "text": Conversation().add(Message.user(TEXT_QUESTION)),
        "photo + text": Conversation().add(Message.user(PHOTO_QUESTION, [photo])),
    }
    results = []
    baseline_model = load_model(settings_for(fast_decode="off"))
    engine_model = load_model(settings_for(compile_decode="on"))
    runtime = f"engine: {engine_model.details['decode']}"
    for prompt, conversation in questions.items():
        baseline, baseline_ids = run_in_model_thread(
            composed_baseline_run, baseline_model, conversation, new_tokens, "starter", prompt
        )
        engine, text = engine_run(engine_model, conversation, new_tokens, "starter", prompt, runtime)
        engine.same_tokens_as_baseline = agreement(baseline_model.tokenizer, text, baseline_ids)
        results += [baseline, engine]
    return results


# LLaVA-OneVision-0.5B's language model (Qwen2-0.5B), the `cpu` profile's: sizes from its config.json.
QWEN2_05B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151647,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
    rms_norm_eps=1e-6,
)


def hub_language_model(new_tokens: int, device: torch.device) -> list[DecodeResult]:
    """A realistic-size hub LM, random weights (speed does not depend on their values): transformers'
    generate against the fast decode loop the starter uses."""
    from transformers import LogitsProcessorList, Qwen2Config, Qwen2ForCausalLM, StoppingCriteriaList

    from assistant.models.fast_decode import DecodeSpeed, FastDecoder, can_compile

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN2_05B)).eval().to(device)
    ids = torch.randint(0, 150_000, (1, 48), device=device)
    name, runtime_name = "Qwen2-0.5B (LLaVA-OneVision-0.5B's LM, random)", "text"

    def baseline(count: int) -> None:
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=count, do_sample=False, eos_token_id=NEVER, pad_token_id=0)

    def baseline_times() -> tuple[float, float, float]:
        baseline(2)
        first = statistics.median(repeat(lambda: baseline(1), RUNS))
        return first, statistics.median(repeat(lambda: baseline(new_tokens), RUNS)), linear_layers_speed(model)

    first_s, total_s, linear_speed = run_in_model_thread(baseline_times)
    results = [
        DecodeResult(
            name,
            runtime_name,
            "baseline: transformers generate, float32",
            48,
            new_tokens,
            first_s,
            (new_tokens - 1) / (total_s - first_s),
            weight_bytes_per_token(model),
            linear_layers_bytes_per_s=linear_speed,
        )
    ]
    compile_step = device.type == "cuda" or can_compile()
    speed = DecodeSpeed("int8", compile=compile_step, batch=1)  # one reply at a time: no batch step to compile
    decoder = FastDecoder(model, speed)
    if (thread := decoder.warm_up()) is not None:
        thread.join()
    with torch.inference_mode():
        embeddings = decoder.language_model.get_input_embeddings()(ids)

    def fast_times() -> tuple[float, float]:
        decoder.generate(embeddings, 8, LogitsProcessorList(), StoppingCriteriaList(), None, [])
        firsts, speeds = [], []
        for _ in range(RUNS):
            timings = _TimedStream()
            started = time.perf_counter()
            decoder.generate(embeddings, new_tokens, LogitsProcessorList(), StoppingCriteriaList(), timings, [])
            firsts.append(timings.first - started)
            speeds.append((new_tokens - 1) / (timings.last - timings.first))
        return statistics.median(firsts), statistics.median(speeds)

    first_s, tokens_per_s = run_in_model_thread(fast_times)
    runtime = f"fast decode: int8 weights, {'compiled' if compile_step else 'eager'} static-cache step"
    results.append(
        DecodeResult(
            name,
            runtime_name,
            runtime,
            48,
            new_tokens,
            first_s,
            tokens_per_s,
            weight_bytes_per_token(decoder.language_model),
        )
    )
    return results


class _TimedStream:
    def __init__(self):
        self.first = self.last = None

    def put(self, ids: torch.Tensor) -> None:
        if ids.numel():
            if ids.is_cuda:
                torch.cuda.synchronize()
            self.last = time.perf_counter()
            self.first = self.first or self.last

    def end(self) -> None:
        pass
