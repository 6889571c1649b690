"""The engine with a tiny random LLaVA-OneVision: streaming, stop, determinism, queueing,
several images per turn and across turns, and the context budget."""

import dataclasses
import threading
import time

import pytest
from PIL import Image as PILImage

from assistant.conversation import Conversation, Message
from assistant.engine import Engine
from assistant.errors import BusyError, ContextOverflowError
from assistant.events import TextDelta, TurnsDropped, Usage
from assistant.sampling import GenerationOptions

GREEDY = GenerationOptions(temperature=0.0, max_new_tokens=24)


def ask(text: str, images=()) -> Conversation:
    return Conversation("You are a helpful assistant.").add(Message.user(text, images))


def collect(reply) -> tuple[list, str, Usage]:
    events = list(reply)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    return events, text, events[-1]


def test_reply_streams_text_deltas_then_ends_with_usage(engine):
    events, text, usage = collect(engine.reply(ask("What is in this photo?"), GREEDY))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert isinstance(usage, Usage) and all(not isinstance(e, Usage) for e in events[:-1]), "usage comes last, once"
    assert len(deltas) > 1, "the reply should stream in several pieces"
    assert all(d.text for d in deltas), "no empty deltas"
    assert usage.completion_tokens == GREEDY.max_new_tokens or usage.finish_reason == "stop"
    assert usage.prompt_tokens > 0 and usage.image_tokens == 0
    assert usage.time_to_first_token_s is not None and 0 < usage.time_to_first_token_s <= usage.total_s
    assert usage.tokens_per_s > 0


def test_greedy_is_deterministic_and_a_seed_repeats_sampling(engine):
    conversation = ask("Tell me a story.")
    assert engine.reply(conversation, GREEDY).text() == engine.reply(conversation, GREEDY).text()
    sampled = GenerationOptions(temperature=1.0, top_p=1.0, seed=7, max_new_tokens=24)
    first = engine.reply(conversation, sampled).text()
    assert first == engine.reply(conversation, sampled).text(), "the same seed must give the same reply"
    other = engine.reply(conversation, dataclasses.replace(sampled, seed=8)).text()
    assert other != first, "another seed should give another reply"


def test_a_stop_string_ends_the_reply_before_it(engine):
    conversation = ask("Tell me a story.")
    full = engine.reply(conversation, GREEDY).text()
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), f"the tiny model's reply should have text to stop at: {full!r}"
    events, text, usage = collect(engine.reply(conversation, dataclasses.replace(GREEDY, stop=(stop, "never appears"))))
    assert text == full[: full.index(stop)], "the reply is the text before the stop string, without any of it"
    assert usage.finish_reason == "stop" and usage.completion_tokens < GREEDY.max_new_tokens


def test_stop_ends_the_reply_at_once_and_the_engine_stays_usable(engine):
    long = GenerationOptions(temperature=0.0, max_new_tokens=1500)
    reply = engine.reply(ask("Talk for a long time."), long)
    events = []
    for event in reply:
        events.append(event)
        if isinstance(event, TextDelta):
            reply.stop()
    usage = events[-1]
    assert usage.finish_reason == "cancelled"
    assert usage.completion_tokens < 50, (
        f"stop should end generation within a token or two, got {usage.completion_tokens}"
    )
    assert _wait_idle(engine), "the worker should be free again after a stop"
    assert engine.reply(ask("Still there?"), GREEDY).text(), "the next reply works after a stop"


def test_a_listener_that_goes_away_stops_its_generation(engine):
    reply = engine.reply(ask("Talk for a long time."), GenerationOptions(temperature=0.0, max_new_tokens=1500))
    stream = iter(reply)
    next(stream)
    stream.close()  # what a web framework does when the client disconnects
    assert _wait_idle(engine), "an abandoned reply must not keep the model busy"


def test_concurrent_requests_get_their_own_replies(engine):
    options = [GenerationOptions(temperature=1.0, top_p=1.0, seed=seed, max_new_tokens=16) for seed in (1, 2, 3)]
    conversations = [ask(f"Question number {i}?") for i in range(3)]
    alone = [engine.reply(c, o).text() for c, o in zip(conversations, options)]
    together: list[str | None] = [None] * 3

    def run(i):
        together[i] = engine.reply(conversations[i], options[i]).text()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert together == alone, "each concurrent reply must equal the same request run alone"


def test_a_full_queue_says_busy_and_loses_nothing(tiny_model):
    engine = Engine(tiny_model, queue_size=2)
    try:
        long = GenerationOptions(temperature=0.0, max_new_tokens=1500)
        running = engine.reply(ask("first"), long)
        stream = iter(running)
        next(stream)  # the worker is now generating this one
        waiting = [engine.reply(ask(f"waiting {i}"), GREEDY) for i in range(2)]
        with pytest.raises(BusyError, match="busy .*2 requests are waiting"):
            engine.reply(ask("one too many"), GREEDY)
        running.stop()
        list(stream)
        assert all(reply.text() for reply in waiting), "queued requests are still answered"
    finally:
        engine.close()


def photos(*sizes):
    colours = ["red", "green", "blue", "yellow"]
    return [PILImage.new("RGB", size, colours[i % 4]) for i, size in enumerate(sizes)]


def test_several_images_per_turn_and_across_turns_reach_the_model(engine, tiny_model):
    first_turn, second_turn = photos((64, 48), (40, 40)), photos((30, 70))
    per_image = [tiny_model.encode(ask("x", [image])).image_tokens for image in first_turn + second_turn]
    assert all(count > 0 for count in per_image)
    conversation = ask("Compare these two photos.", first_turn)
    conversation.add(Message.assistant("The first is red, the second green."))
    conversation.add(Message.user("And this one?", second_turn))
    _, text, usage = collect(engine.reply(conversation, GREEDY))
    assert usage.image_tokens == sum(per_image), (
        f"the prompt holds {usage.image_tokens} image tokens; the three photos need {per_image}"
    )
    assert text, "generation ran with the merged image features of all three photos"


def test_old_turns_are_dropped_to_fit_the_context_and_the_reply_says_so(tiny_model):
    conversation = ask("first question, about this photo", photos((64, 64)))
    for i in range(8):
        conversation.add(Message.assistant(f"answer number {i} " * 5))
        conversation.add(Message.user(f"follow-up question number {i} " * 3))
    full = tiny_model.encode(conversation).prompt_tokens
    small = dataclasses.replace(tiny_model, context_tokens=full // 2 + 40)
    engine = Engine(small)
    try:
        events, text, usage = collect(engine.reply(conversation, GenerationOptions(temperature=0.0, max_new_tokens=40)))
    finally:
        engine.close()
    dropped = [e for e in events if isinstance(e, TurnsDropped)]
    assert len(dropped) == 1 and dropped[0].count > 0 and "oldest" in dropped[0].message
    limit = small.context_tokens - 40
    kept = conversation.without_oldest_turns(dropped[0].count)
    assert usage.prompt_tokens == tiny_model.encode(kept).prompt_tokens <= limit
    one_fewer = conversation.without_oldest_turns(dropped[0].count - 1)
    assert tiny_model.encode(one_fewer).prompt_tokens > limit, "no more turns than needed were dropped"
    assert usage.image_tokens == 0, "the photo's turn was the oldest and went first"
    assert kept.system_prompt == conversation.system_prompt and kept.messages[-1] == conversation.messages[-1]


def test_a_message_too_long_for_the_context_is_refused_clearly(tiny_model):
    engine = Engine(dataclasses.replace(tiny_model, context_tokens=120))
    try:
        with pytest.raises(ContextOverflowError, match="too long for the model"):
            engine.reply(ask("word " * 200), GenerationOptions(max_new_tokens=20)).text()
        with pytest.raises(ContextOverflowError, match="max_new_tokens=500 leaves no room"):
            engine.reply(ask("hi"), GenerationOptions(max_new_tokens=500))
    finally:
        engine.close()


def test_closing_the_engine_ends_its_worker_thread(tiny_model):
    before = threading.active_count()
    engine = Engine(tiny_model)
    engine.reply(ask("hi"), GREEDY).text()
    engine.close()
    assert threading.active_count() == before, "no thread may outlive its engine"


def _wait_idle(engine, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.idle:
            return True
        time.sleep(0.01)
    return False
