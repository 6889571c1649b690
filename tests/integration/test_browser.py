"""The chat in a real browser: Playwright drives Debian's Chromium (headless) against a loopback
launch with the tiny model. Screenshots go to $ASSISTANT_TEST_ARTIFACTS (default tests/artifacts).

Without /usr/bin/chromium these tests are skipped, unless ASSISTANT_REQUIRE_BROWSER=1 (as in CI),
where a missing browser is a failure."""

from __future__ import annotations

import contextlib
import os
import re
import time
import wave
from pathlib import Path

import pytest

from assistant.core import Assistant
from assistant.ui import launch
from speech_samples import needs_espeak, speak

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
ARTIFACTS = Path(os.environ.get("ASSISTANT_TEST_ARTIFACTS", Path(__file__).parents[1] / "artifacts"))
LAPTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}

if not CHROMIUM.exists():
    if os.environ.get("ASSISTANT_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"the browser tests need {CHROMIUM} (apt-get install chromium)")
    pytest.skip(f"no {CHROMIUM}: apt-get install chromium to run the browser tests", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def url(make_settings, engine):
    # Long replies (the tiny model writes noise until max_new_tokens) leave time to watch and stop them;
    # a fixed seed makes each run see the same replies.
    assistant = Assistant(make_settings(max_new_tokens=300, temperature=1.0, seed=1), engine)
    app = launch(assistant, server_port=None, prevent_thread_lock=True, quiet=True)
    yield app.local_url
    app.close()


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
    yield browser
    browser.close()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport=LAPTOP)  # a fresh context: its own session and storage
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("textarea", timeout=30_000)
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def ask(page, text: str, files=()) -> None:
    if files:
        page.set_input_files("input[type=file]", [str(f) for f in files])
        page.wait_for_selector("[data-testid='user'] img, .thumbnails img, .thumbnail-image", timeout=10_000)
    page.locator("textarea").first.fill(text)
    page.keyboard.press("Enter")


def bot_texts(page) -> list[str]:
    return page.locator("[data-testid='bot']").all_inner_texts()


def wait_until(condition, timeout: float = 30, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message or "timed out"
        time.sleep(0.1)


def wait_for_reply_end(page, timeout: float = 60) -> None:
    wait_until(lambda: bot_texts(page), timeout, "no reply appeared")
    wait_until(
        lambda: page.locator("button.submit-button").count() > 0 and not page.locator("button.stop-button").count(),
        timeout,
        "the reply never ended",
    )


def record_answer_lengths(page) -> None:
    """From now on, the page notes the length of the last answer each time it changes on screen:
    every rendered step counts, however fast the tiny model streams."""
    page.evaluate("""() => {
        window.answerLengths = [];
        new MutationObserver(() => {
            const answers = document.querySelectorAll("[data-testid='bot']");
            if (answers.length) window.answerLengths.push(answers[answers.length - 1].innerText.length);
        }).observe(document.body, {childList: true, subtree: true, characterData: true});
    }""")


def test_a_question_with_a_photo_gets_an_answer_that_grows_on_screen(page, photo_files):
    record_answer_lengths(page)
    ask(page, "What is in this photo?", [photo_files[0]])
    wait_for_reply_end(page)
    lengths = [length for length in page.evaluate("window.answerLengths") if length]
    # Markdown may hide a marker once its closing half arrives, so the shown length can dip by a little.
    assert len(set(lengths)) >= 3 and lengths[0] < lengths[-1] // 2 and lengths[-1] == max(lengths), (
        f"the answer should grow as it streams: {lengths}"
    )
    screenshot(page, "streaming")
    user = page.locator("[data-testid='user']")
    assert user.locator("img").count() == 1, "the photo shows in the chat"
    assert "What is in this photo?" in " ".join(user.all_inner_texts())
    assert page.get_by_text("tok/s").count() >= 1, "the side panel shows the reply's speed"


def test_a_photo_is_seen_while_its_question_is_typed(page, engine, tmp_path):
    from PIL import Image as PILImage

    photo = tmp_path / "teal.png"
    PILImage.new("RGB", (70, 50), "teal").save(photo)  # a photo no other test shows: its views are new
    views = engine.model.views
    before = views.misses
    page.set_input_files("input[type=file]", [str(photo)])
    wait_until(lambda: views.misses > before and engine.idle, 30, "the photo's views were not encoded on upload")
    ahead = views.misses
    page.locator("textarea").first.fill("What colour is it?")
    page.keyboard.press("Enter")
    wait_for_reply_end(page)
    assert views.misses == ahead, "the question found its photo's views ready"


def test_stop_ends_a_long_answer_and_the_chat_stays_usable(page):
    for _ in range(3):  # the tiny model may end a reply on its own before Stop is clicked: ask again
        ask(page, "Tell me a very long story")
        wait_until(lambda: bot_texts(page) and len(bot_texts(page)[-1]) > 20, message="the answer never started")
        try:
            page.locator("#input button.stop-button").click(timeout=2_000)
            break
        except sync_api.TimeoutError:
            wait_for_reply_end(page)
    wait_for_reply_end(page, timeout=10)
    stopped = bot_texts(page)[-1]
    time.sleep(1.0)
    assert bot_texts(page)[-1] == stopped, "after Stop the answer no longer grows"
    screenshot(page, "stopped")
    answers = len(bot_texts(page))
    ask(page, "Short question")
    wait_until(lambda: len(bot_texts(page)) == answers + 1, message="a new question after Stop gets an answer")


def test_a_corrupt_file_shows_an_error_in_the_chat_and_keeps_the_question(page, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a real jpeg")
    page.set_input_files("input[type=file]", [str(broken)])
    page.locator("textarea").first.fill("What is this?")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=broken.jpg: the image data is corrupt", timeout=20_000)
    wait_for_reply_end(page, timeout=10)
    assert page.locator("textarea").first.input_value() == "What is this?", "the question is back in the box"
    assert "Traceback" not in page.content()
    screenshot(page, "error")


def test_the_conversation_survives_a_reload(page):
    ask(page, "Remember this question")
    wait_for_reply_end(page)
    before = bot_texts(page)
    assert before and before[-1]
    page.reload()
    page.wait_for_selector("textarea")
    wait_until(lambda: bot_texts(page) == before, timeout=15, message="the chat should come back after a reload")
    assert "Remember this question" in " ".join(page.locator("[data-testid='user']").all_inner_texts())


def test_clicking_the_photo_example_asks_it(page):
    page.get_by_text("Photo: What animal is this?").click()
    wait_until(lambda: page.locator("[data-testid='user'] img").count() == 1, message="the example photo is sent")
    wait_for_reply_end(page)
    assert "What animal is this?" in " ".join(page.locator("[data-testid='user']").all_inner_texts())


def test_the_page_fits_a_phone(browser, url):
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    page = context.new_page()
    page.goto(url)
    box = page.wait_for_selector("textarea", timeout=30_000).bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], "the input box fits the screen"
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    wait_until(
        lambda: page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.tagName", centre) == "TEXTAREA",
        timeout=10,
        message="nothing (such as the side panel) covers the input box on a phone",
    )
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, f"no sideways scrolling on a phone (page is {width} px wide)"
    screenshot(page, "phone")
    context.close()


@contextlib.contextmanager
def listening_to(playwright, url: str, recording: Path):
    """A page of the chat in a Chromium whose microphone plays `recording` (over and over), ready
    to record."""
    microphone = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={recording}",
    ]
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_FLAGS, *microphone])
    try:
        page = browser.new_context(viewport=LAPTOP, permissions=["microphone"]).new_page()
        page.goto(url)
        page.wait_for_selector("#microphone button.record-button", timeout=30_000)
        time.sleep(3)  # the page's load events first (see layout._wire_microphone)
        yield page
    finally:
        browser.close()


@needs_espeak
def test_speaking_into_the_microphone_shows_the_words_as_they_come_and_sends_them(playwright, url, tmp_path):
    """Chromium's fake microphone plays an espeak-ng question (over and over): the words show under
    the microphone while recording, and Stop sends the recording with its transcript."""
    question = speak("How many people are standing on the beach?", tmp_path / "question.wav")
    with listening_to(playwright, url, question) as page:
        page.locator("#microphone button.record-button").click()
        heard = page.locator("#heard")
        wait_until(
            lambda: "beach" in heard.inner_text().lower(),
            timeout=20,
            message="the words should show while the person speaks",
        )
        screenshot(page, "listening")
        # The fake microphone loops the file from wherever it was when recording began: one more
        # pass makes sure the recording holds the whole question once (a cut "beach" was misheard).
        with wave.open(str(question)) as clip:
            time.sleep(clip.getnframes() / clip.getframerate() + 0.5)
        page.locator("#microphone button.stop-button").click()
        try:
            wait_until(lambda: bot_texts(page), timeout=30, message="the voice message gets an answer")
        except AssertionError:  # what the page showed, for a failure seen once in CI and not since
            screenshot(page, "voice-not-answered")
            raise
        user = " ".join(page.locator("[data-testid='user']").all_inner_texts()).lower()
        # Whisper base hears espeak's looped "beach" as "beach", "reach" or "weak" from run to run (the
        # live transcript above must have had "beach"); the sent transcript is what is checked here.
        assert re.search(r"how many people are standing on the \w+", user), user
        assert re.search(r"\b0:[0-5]\d\b", user), f"the recording (its length) shows in the chat: {user}"
        wait_until(
            lambda: heard.inner_text().strip() == "", timeout=10, message="the live transcript is cleared once sent"
        )


@needs_espeak
def test_a_hands_free_call_sends_each_question_when_the_person_pauses(playwright, url, tmp_path):
    """With the call box ticked, one press on Record: Chromium's fake microphone says a question and
    then is silent (the file loops), and the question is sent as its pause ends, with no press on
    Stop, and answered; Stop ends the call."""
    question = speak("How many people are standing on the beach?", tmp_path / "question.wav")
    with wave.open(str(question)) as clip:
        rate, width, samples = clip.getframerate(), clip.getsampwidth(), clip.readframes(clip.getnframes())
    with wave.open(str(tmp_path / "turn.wav"), "wb") as turn:  # the question, then 3 s of silence
        turn.setnchannels(1), turn.setsampwidth(width), turn.setframerate(rate)
        turn.writeframes(samples + bytes(3 * rate * width))
    with listening_to(playwright, url, tmp_path / "turn.wav") as page:
        page.locator("#call input[type=checkbox]").check()
        page.locator("#microphone button.record-button").click()
        wait_until(lambda: "📞" in page.locator("#heard").inner_text(), timeout=20, message="the call is listening")
        user = page.locator("[data-testid='user']")
        try:
            wait_until(lambda: "standing on the" in " ".join(user.all_inner_texts()).lower(), timeout=40)
            wait_until(lambda: bot_texts(page), timeout=30, message="the turn gets an answer")
        except AssertionError:
            screenshot(page, "call-not-answered")
            raise
        screenshot(page, "call")
        assert page.locator("#microphone button.stop-button").count(), "the microphone is still open: no press needed"
        assert re.search(r"\b0:0\d\b", " ".join(user.all_inner_texts())), "the turn's recording is in the chat"
        page.locator("#microphone button.stop-button").click()
        wait_until(lambda: page.locator("#microphone button.record-button").count(), timeout=10, message="call ended")
