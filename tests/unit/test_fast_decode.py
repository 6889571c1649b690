"""The fast decode path of composed models (static cache, compiled step, int8/bf16 weights) against
transformers' generate, through the real engine, on a tiny composed model with a trained projector."""

import dataclasses
import logging
import os

import pytest
import torch
from PIL import Image as PILImage
from transformers import LogitsProcessorList, StoppingCriteriaList

from assistant.conversation import Conversation, Message
from assistant.engine import Engine
from assistant.errors import ContextOverflowError
from assistant.events import TextDelta
from assistant.models import decode_attention, fast_decode, loader
from assistant.models.composed import load_composed
from assistant.models.fast_decode import DecodeSpeed, FastDecoder
from assistant.models.tiny import build_tiny_parts
from assistant.sampling import GenerationOptions
from assistant.training.train import TrainConfig, train


@pytest.fixture(scope="module")
def composed_dir(tmp_path_factory, cache_dir):
    vision, lm = build_tiny_parts(tmp_path_factory.mktemp("parts"))
    config = TrainConfig(
        output=tmp_path_factory.mktemp("composed"),
        encoder=str(vision),
        language_model=str(lm),
        fusion="mlp",
        image_tokens=4,
        scenes=8,
        steps=2,
        batch_size=4,
        cache_dir=cache_dir,
        lm_dtype="float32",
    )
    return train(config)


def load(directory, cache_dir, speed):
    return load_composed(directory, torch.device("cpu"), torch.float32, cache_dir, speed)


def a_photo_question():
    photo = PILImage.new("RGB", (48, 40), (200, 40, 30))
    return Conversation("be brief").add(Message.user("What colour is this?", [photo]))


def answer(model, options, conversation=None):
    engine = Engine(model)
    try:
        if engine.warming_up is not None:
            engine.warming_up.join()
        reply = engine.reply(conversation or a_photo_question(), options)
        pieces = [event.text for event in reply if isinstance(event, TextDelta)]
    finally:
        engine.close()
    return pieces, reply.usage


GREEDY = GenerationOptions(temperature=0.0, max_new_tokens=24)
SAMPLED = GenerationOptions(temperature=1.0, top_p=0.9, seed=7, max_new_tokens=24)


@pytest.mark.parametrize("options", [GREEDY, SAMPLED], ids=["greedy", "seeded sampling"])
def test_float32_static_cache_answers_exactly_as_generate(composed_dir, cache_dir, options):
    reference, reference_usage = answer(load(composed_dir, cache_dir, None), options)
    fast, fast_usage = answer(load(composed_dir, cache_dir, DecodeSpeed("float32", compile=False)), options)
    assert "".join(fast) == "".join(reference) and len(fast) > 1, "same weights, same tokens, streamed in pieces"
    assert (fast_usage.completion_tokens, fast_usage.finish_reason) == (
        reference_usage.completion_tokens,
        reference_usage.finish_reason,
    )
    assert fast_usage.image_tokens == 4


@pytest.mark.parametrize("packaged", [True, False], ids=["packaged", "compiled here"])
def test_the_compiled_step_answers_as_the_eager_one(composed_dir, cache_dir, packaged):
    eager, _ = answer(load(composed_dir, cache_dir, DecodeSpeed("float32", compile=False)), GREEDY)
    compiled_model = load(composed_dir, cache_dir, DecodeSpeed("float32", compile=True, batch=1))
    if not packaged:
        compiled_model.decoder._packages = None  # torch.compile in this process, as on a GPU
    torch._dynamo.utils.counters.clear()
    compiled, usage = answer(compiled_model, GREEDY)
    assert "".join(compiled) == "".join(eager)
    assert compiled_model.decoder._step is not compiled_model.decoder._one_token, "the compile did not fall back"
    assert isinstance(compiled_model.decoder._step, fast_decode._ByCacheLength) == packaged
    assert compiled_model.decoder.language_model.config._attn_implementation == decode_attention.NAME
    # The warm-up and a 24-token reply: every length of the filled cache is one graph, compiled once
    # (in a process of its own when packaged).
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == (0 if packaged else 1)
    assert compiled_model.details["decode"] == "float32 weights, compiled static-cache step"


@pytest.mark.parametrize("weights", ["int8", "bfloat16"])
def test_lower_precision_weights_stream_a_whole_reply(composed_dir, cache_dir, weights):
    model = load(composed_dir, cache_dir, DecodeSpeed(weights, compile=False))
    linear = model.model.language_model.model.layers[0].mlp.gate_proj
    assert linear.weight.dtype != torch.float32 or weights == "int8" and "Int8" in type(linear.weight).__name__
    pieces, usage = answer(model, GenerationOptions(temperature=0.0, max_new_tokens=12))
    assert pieces and usage.completion_tokens >= 1 and usage.finish_reason in ("stop", "length")


def test_stop_and_length_end_a_fast_reply_as_they_end_generate(composed_dir, cache_dir):
    model = load(composed_dir, cache_dir, DecodeSpeed("float32", compile=False))
    model = dataclasses.replace(model, eos_token_ids=[10**6])  # nothing ends the reply but its budget
    _, usage = answer(model, GenerationOptions(temperature=0.0, max_new_tokens=9))
    assert (usage.completion_tokens, usage.finish_reason) == (9, "length")
    engine = Engine(model)
    try:
        reply = engine.reply(a_photo_question(), GenerationOptions(temperature=0.0, max_new_tokens=500))
        for count, _event in enumerate(reply):
            if count == 2:
                reply.stop()
    finally:
        engine.close()
    assert reply.usage.finish_reason == "cancelled" and reply.usage.completion_tokens < 500


def test_the_cache_grows_in_power_of_two_buckets_up_to_the_context(composed_dir, cache_dir):
    decoder = load(composed_dir, cache_dir, DecodeSpeed("float32", compile=False)).decoder
    sizes = [decoder._cache_for(decoder._lane, tokens).get_max_length() for tokens in (10, 1024, 1025, 3000, 10**6)]
    assert sizes == [1024, 1024, 2048, 2048, decoder.context_tokens]


def test_a_long_conversation_moves_to_a_bigger_cache_and_keeps_answering(composed_dir, cache_dir):
    model = load(composed_dir, cache_dir, DecodeSpeed("float32", compile=False))
    long_question = Conversation().add(Message.user("word " * 300))
    pieces, usage = answer(model, GREEDY, long_question)
    assert usage.prompt_tokens > 1024 and usage.completion_tokens >= 1
    assert 2048 in model.decoder._lane.caches


def test_settings_choose_the_decode_path(make_settings, monkeypatch, caplog):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(loader, "can_compile", lambda: True)
    assert loader.decode_speed(make_settings(), cpu) == DecodeSpeed("bfloat16", compile=False), "one-shot commands"
    assert loader.decode_speed(make_settings(compile_decode="on"), cpu) == DecodeSpeed("int8", compile=True), "serve"
    assert loader.decode_speed(make_settings(), cuda) is None, "transformers' generate on CUDA"
    assert loader.decode_speed(make_settings(fast_decode="off"), cpu) is None
    assert loader.decode_speed(make_settings(max_batch=1), cpu) == DecodeSpeed("bfloat16", compile=False, batch=1)
    assert loader.decode_speed(make_settings(fast_decode="float32", compile_decode="on"), cpu) == DecodeSpeed(
        "float32", compile=True
    )
    monkeypatch.setattr(loader, "can_compile", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert loader.decode_speed(make_settings(compile_decode="on"), cpu) == DecodeSpeed("bfloat16", compile=False)
    assert "no C++ compiler found" in caplog.text


def test_a_failed_compile_falls_back_to_the_eager_step(composed_dir, cache_dir, caplog):
    model = load(composed_dir, cache_dir, DecodeSpeed("float32", compile=True))
    decoder: FastDecoder = model.decoder

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler today")

    decoder._step = broken
    decoder._packages = None  # the compile in this process (a package that fails: test_packaged_step.py)
    with caplog.at_level(logging.WARNING):
        decoder.warm_up().join()
    assert "the compiled decode step failed, continuing without it: no compiler today" in caplog.text
    assert decoder._step == decoder._one_token
    pieces, usage = answer(model, GREEDY)
    assert pieces and usage.completion_tokens >= 1


def test_a_compiled_step_failing_mid_reply_hands_over_to_the_eager_step(composed_dir, cache_dir, caplog):
    reference, _ = answer(load(composed_dir, cache_dir, DecodeSpeed("float32", compile=False)), GREEDY)
    model = load(composed_dir, cache_dir, DecodeSpeed("float32", compile=True))
    decoder: FastDecoder = model.decoder
    calls = []

    def fails_on_the_third_token(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("a new graph would not compile")
        return decoder._one_token(*args)

    model.warm_up = lambda: None  # no background compile: the step below is the one in use
    decoder._step = fails_on_the_third_token
    with caplog.at_level(logging.WARNING):
        pieces, usage = answer(model, GREEDY)
    assert "".join(pieces) == "".join(reference), "the reply goes on where it was, as the eager step gives it"
    assert "the compiled decode step failed, continuing without it: a new graph would not compile" in caplog.text
    assert decoder._step == decoder._one_token


def test_replies_asked_together_are_decoded_together_each_as_it_would_be_alone(composed_dir, cache_dir):
    """Requests waiting at once share the decode steps (one read of the weights for all); each reply
    keeps its own prompt, length, sampler and end, and says the same as when asked alone."""
    model = load(composed_dir, cache_dir, DecodeSpeed("float32", compile=False))
    long_text = Conversation("be brief").add(Message.user("Tell me about shapes, colours and the sky " * 6))
    asks = [
        (a_photo_question(), GREEDY),
        (long_text, GenerationOptions(temperature=0.0, max_new_tokens=7)),
        (Conversation().add(Message.user("Hi")), SAMPLED),
        (a_photo_question(), GenerationOptions(temperature=0.0, max_new_tokens=3, stop=["zzz"])),
    ]
    alone = [answer(model, options, conversation) for conversation, options in asks]
    engine = Engine(model, max_batch=4)
    try:
        with model.decoder._lock:  # the worker waits here with the first request; the others queue
            replies = [engine.reply(conversation, options) for conversation, options in asks]
        together = [
            ("".join(event.text for event in reply if isinstance(event, TextDelta)), reply.usage) for reply in replies
        ]
    finally:
        engine.close()
    assert any(isinstance(key, tuple) and key[1] >= 3 for key in model.decoder._lane.caches), (
        "they were decoded as one batch"
    )
    for (pieces, usage_alone), (text, usage) in zip(alone, together):
        assert text == "".join(pieces)
        assert (usage.completion_tokens, usage.finish_reason, usage.prompt_tokens) == (
            usage_alone.completion_tokens,
            usage_alone.finish_reason,
            usage_alone.prompt_tokens,
        )
    assert together[1][1].completion_tokens == 7 and together[3][1].completion_tokens == 3, (
        "each ends at its own budget"
    )


def test_a_request_that_fails_alone_does_not_sink_the_batch(composed_dir, cache_dir):
    model = load(composed_dir, cache_dir, DecodeSpeed("float32", compile=False))
    too_long = GenerationOptions(temperature=0.0, max_new_tokens=model.context_tokens - 2)
    engine = Engine(model, max_batch=4)
    try:
        with model.decoder._lock:
            good = [engine.reply(a_photo_question(), GREEDY) for _ in range(2)]
            bad = engine.reply(a_photo_question(), too_long)
        texts = [reply.text() for reply in good]
        with pytest.raises(ContextOverflowError):
            bad.text()
    finally:
        engine.close()
    assert texts[0] == texts[1] and texts[0], "the others are answered in full"


def test_an_int8_decoder_batches_with_bf16_weights(composed_dir, cache_dir):
    """int8's kernels are slow eagerly at any batch size, so batches run on a bf16 copy of the LM."""
    model = load(composed_dir, cache_dir, DecodeSpeed("int8", compile=False))
    batch_linear = model.decoder.batch_model.model.layers[0].mlp.gate_proj.weight
    assert type(batch_linear) is torch.nn.Parameter and batch_linear.dtype == torch.bfloat16
    assert "Int8" in type(model.decoder.language_model.model.layers[0].mlp.gate_proj.weight).__name__
    engine = Engine(model, max_batch=4)
    try:
        with model.decoder._lock:
            replies = [
                engine.reply(a_photo_question(), GenerationOptions(temperature=0.0, max_new_tokens=6)) for _ in range(3)
            ]
        texts = [reply.text() for reply in replies]
    finally:
        engine.close()
    assert texts[0] and texts.count(texts[0]) == 3, "the same question, the same greedy answer in every row"
    assert all(reply.usage.finish_reason in ("stop", "length") for reply in replies)
    unbatched = load(composed_dir, cache_dir, DecodeSpeed("int8", compile=False, batch=1))
    assert unbatched.decoder.batch_model is unbatched.decoder.language_model and not unbatched.can_batch, (
        "no copy when batching is off"
    )


def test_compiled_batches_answer_as_each_reply_alone_in_one_graph(composed_dir, cache_dir):
    """Compiled, a batch is always `batch` rows (here 3 replies and an idle row): one graph (here a
    package) for any batch and any length, made in the background after the one-token step's, and
    each reply as the compiled step gives it alone."""
    model = load(composed_dir, cache_dir, DecodeSpeed("float32", compile=True, batch=4))
    torch._dynamo.utils.counters.clear()
    asks = [
        (a_photo_question(), GREEDY),
        (
            Conversation("be brief").add(Message.user("Tell me about shapes " * 5)),
            GenerationOptions(temperature=0.0, max_new_tokens=5),
        ),
        (Conversation().add(Message.user("Hi")), SAMPLED),
    ]
    alone = [answer(model, options, conversation) for conversation, options in asks]
    engine = Engine(model, max_batch=4)
    try:
        with model.decoder._lock:
            replies = [engine.reply(conversation, options) for conversation, options in asks]
        together = [(reply.text(), reply.usage) for reply in replies]
    finally:
        engine.close()
    assert any(isinstance(key, tuple) and key[1] == 4 for key in model.decoder._lane.caches), "one batch of four rows"
    assert model.decoder._rows_step is not model.decoder._rows_one_token, "the compile did not fall back"
    for step in (model.decoder._step, model.decoder._rows_step):
        assert isinstance(step, fast_decode._ByCacheLength), "the steps from their packages"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0, "nothing compiled in this process"
    for (pieces, usage_alone), (text, usage) in zip(alone, together):
        assert text == "".join(pieces)
        assert usage.completion_tokens == usage_alone.completion_tokens


def test_two_compiled_decoders_of_one_architecture_each_answer_with_their_own_weights(tmp_path):
    """Frozen weights live in the compiled graph, and the step's code is the same for every decoder:
    each decoder must keep its own graphs, or the second would answer with the first one's weights."""
    from transformers import AutoModelForCausalLM

    _, lm_dir = build_tiny_parts(tmp_path)

    def replies(seed: int) -> tuple[list[int], list[int]]:
        lm = AutoModelForCausalLM.from_pretrained(str(lm_dir)).eval()
        with torch.no_grad():
            for parameter in lm.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(seed)) * 0.2)
        prompt = lm.get_input_embeddings()(torch.tensor([[5, 6, 7, 8]])).detach()
        ids = []
        for speed in (DecodeSpeed("float32", compile=False, batch=1), DecodeSpeed("float32", compile=True, batch=1)):
            decoder = FastDecoder(lm, speed)
            ids.append(
                decoder.generate(prompt, 8, LogitsProcessorList(), StoppingCriteriaList(), None, eos_token_ids=[])[
                    0
                ].tolist()
            )
        return ids

    first_eager, first_compiled = replies(1)
    second_eager, second_compiled = replies(2)
    assert first_eager != second_eager, "the two models differ"
    assert first_compiled == first_eager and second_compiled == second_eager


def test_compiled_steps_are_kept_in_the_assistants_cache(composed_dir, cache_dir, monkeypatch):
    """Inductor's cache defaults to /tmp, which a restart may empty; compiling again takes minutes."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what importing Inductor writes there
    load(composed_dir, cache_dir, DecodeSpeed("float32", compile=False))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == default_cache_dir(), "nothing to compile, nothing to keep"
    load(composed_dir, cache_dir, DecodeSpeed("float32", compile=True))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache_dir / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/the/user/chose")
    load(composed_dir, cache_dir, DecodeSpeed("float32", compile=True))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/the/user/chose"
