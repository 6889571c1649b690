"""The engine's own work, with a fake model that answers at once (tests/fake_model.py): the events of a
reply, the queue, batching, stop and errors, in milliseconds. The real models' generation is tested
in test_engine.py and test_fast_decode.py."""

import threading
import time

import pytest

from assistant.conversation import Conversation, Message
from assistant.engine import Engine
from assistant.errors import AssistantError, BusyError, ContextOverflowError
from assistant.events import TextDelta, Usage
from assistant.models.base import ChatModel
from assistant.sampling import GenerationOptions
from fake_model import FakeModel

OPTIONS = GenerationOptions(max_new_tokens=64)


def ask(text: str) -> Conversation:
    return Conversation("system").add(Message.user(text))


@pytest.fixture
def make_engine():
    engines = []

    def make(model: FakeModel, **options) -> Engine:
        engines.append(Engine(model, **options))
        return engines[-1]

    yield make
    for engine in engines:
        engine.close()


def held(model: FakeModel) -> FakeModel:
    """The model busy with a first request (it waits at its gate), so that later ones queue."""
    model.gate.clear()
    return model


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_the_fake_model_meets_the_model_contract():
    assert isinstance(FakeModel(), ChatModel), "the engine's tests would otherwise test another contract"


def test_a_reply_streams_its_text_then_ends_with_usage(make_engine):
    events = list(make_engine(FakeModel()).reply(ask("the quick brown fox"), OPTIONS))
    assert [type(event) for event in events] == [TextDelta] * 4 + [Usage], events
    assert "".join(event.text for event in events[:-1]) == "the quick brown fox"
    assert events[-1].finish_reason == "stop" and events[-1].completion_tokens == 4


def test_requests_are_answered_in_the_order_they_came(make_engine):
    model = held(FakeModel(can_batch=False))
    engine = make_engine(model, queue_size=8, max_batch=4)
    replies = [engine.reply(ask(f"question {i}"), OPTIONS) for i in range(4)]
    model.gate.set()
    assert [reply.text() for reply in replies] == [f"question {i}" for i in range(4)]
    assert model.batches == [[f"question {i}"] for i in range(4)], (
        "a model that cannot batch gets one request at a time"
    )


def test_requests_waiting_together_are_answered_together_up_to_max_batch(make_engine):
    model = held(FakeModel())
    engine = make_engine(model, queue_size=8, max_batch=4)
    first = engine.reply(ask("first"), OPTIONS)
    assert wait_until(model.busy.is_set), "the worker should have taken the first request"
    waiting = [engine.reply(ask(f"waiting {i}"), OPTIONS) for i in range(5)]
    model.gate.set()
    assert first.text() == "first" and [reply.text() for reply in waiting] == [f"waiting {i}" for i in range(5)]
    assert model.batches == [["first"], [f"waiting {i}" for i in range(4)], ["waiting 4"]], model.batches


def test_photos_attached_ahead_are_prepared_in_turn_with_the_replies(make_engine):
    model = held(FakeModel())
    engine = make_engine(model, queue_size=3, max_batch=4)
    first = engine.reply(ask("first"), OPTIONS)
    assert wait_until(model.busy.is_set)
    assert engine.prepare(["photo", "photo"]), "queued behind the reply being generated"
    second = engine.reply(ask("second"), OPTIONS)
    assert engine.prepare(["photo"])
    assert not engine.prepare(["photo"]), "a full queue: no head start, and no error"
    model.gate.set()
    assert first.text() == "first" and second.text() == "second"
    assert wait_until(lambda: engine.idle)
    assert model.batches == [["first"], ["<2 photos prepared>"], ["second"], ["<1 photos prepared>"]], model.batches


def test_a_full_queue_says_busy_and_loses_nothing(make_engine):
    model = held(FakeModel())
    engine = make_engine(model, queue_size=2)
    running = engine.reply(ask("running"), OPTIONS)
    assert wait_until(model.busy.is_set)
    waiting = [engine.reply(ask(f"waiting {i}"), OPTIONS) for i in range(2)]
    with pytest.raises(BusyError, match="busy .*2 requests are waiting"):
        engine.reply(ask("one too many"), OPTIONS)
    model.gate.set()
    assert running.text() == "running" and [reply.text() for reply in waiting] == ["waiting 0", "waiting 1"]


def test_stop_from_another_thread_ends_the_reply_within_a_word(make_engine):
    engine = make_engine(FakeModel(step_s=0.005))  # 100 words take half a second: a stop lands long before
    reply = engine.reply(ask("word " * 2000), OPTIONS)
    words = 0
    for event in reply:
        if isinstance(event, TextDelta):
            words += 1
            threading.Thread(target=reply.stop).start()
    assert reply.usage.finish_reason == "cancelled"
    assert reply.usage.completion_tokens < 100, (
        f"stop should land within a few words, got {reply.usage.completion_tokens}"
    )
    assert engine.reply(ask("still there"), OPTIONS).text() == "still there", "the engine answers after a stop"


def test_a_reply_stopped_while_it_waits_is_never_generated(make_engine):
    model = held(FakeModel())
    engine = make_engine(model, max_batch=1)
    running = engine.reply(ask("running"), OPTIONS)
    assert wait_until(model.busy.is_set)
    waiting = engine.reply(ask("never mind"), OPTIONS)
    waiting.stop()
    model.gate.set()
    assert list(waiting) == [Usage.cancelled_before_start()]
    assert running.text() == "running" and ["never mind"] not in model.batches


def test_a_listener_that_goes_away_stops_its_reply(make_engine):
    engine = make_engine(FakeModel(step_s=0.001))
    stream = iter(engine.reply(ask("word " * 2000), OPTIONS))
    next(stream)
    stream.close()  # what a web framework does when the client disconnects
    assert wait_until(lambda: engine.idle), "an abandoned reply must not keep the model busy"


def test_one_requests_error_does_not_sink_its_batch(make_engine):
    model = held(FakeModel())
    engine = make_engine(model, max_batch=4)
    first = engine.reply(ask("first"), OPTIONS)
    assert wait_until(model.busy.is_set)
    good, bad, other = (engine.reply(ask(text), OPTIONS) for text in ("good one", "fail: the photo is broken", "other"))
    model.gate.set()
    assert first.text() == "first"
    with pytest.raises(AssistantError, match="the photo is broken"):
        bad.text()
    assert (good.text(), other.text()) == ("good one", "other")
    assert model.batches[1] == ["good one", "fail: the photo is broken", "other"], "they were one batch"


def test_a_model_failure_reaches_every_reply_it_held_and_the_engine_goes_on(make_engine):
    model = held(FakeModel())
    engine = make_engine(model, max_batch=4)
    first = engine.reply(ask("first"), OPTIONS)
    assert wait_until(model.busy.is_set)
    together = [engine.reply(ask(text), OPTIONS) for text in ("innocent", "crash")]
    model.gate.set()
    first.text()
    for reply in together:
        with pytest.raises(RuntimeError, match="the fake model crashed"):
            reply.text()
    assert engine.reply(ask("next"), OPTIONS).text() == "next"


def test_a_reply_the_model_never_ends_raises_instead_of_hanging(make_engine):
    engine = make_engine(FakeModel())
    with pytest.raises(RuntimeError, match="fake ended without finishing the reply"):
        engine.reply(ask("forget"), OPTIONS).text()


def test_max_new_tokens_that_leave_no_room_for_the_prompt_are_refused_at_once(make_engine):
    engine = make_engine(FakeModel(context_tokens=100))
    with pytest.raises(ContextOverflowError, match="max_new_tokens=100 leaves no room"):
        engine.reply(ask("hi"), GenerationOptions(max_new_tokens=100))


def test_closing_the_engine_ends_its_worker_threads():
    before = threading.active_count()
    engine = Engine(FakeModel(), workers=3)
    engine.reply(ask("hi"), OPTIONS).text()
    engine.close()
    assert threading.active_count() == before, "no thread may outlive its engine"
