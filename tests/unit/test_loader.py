"""One loader entry point for every family: tiny random models of each real architecture are saved
to disk and loaded through `load_model`, exactly as a downloaded model would be."""

import json

import pytest
import torch
from PIL import Image as PILImage

from assistant.conversation import Conversation, Message
from assistant.engine import Engine
from assistant.errors import ModelUnavailableError
from assistant.models import load_model
from assistant.models.loader import pick_dtype
from assistant.models.tiny import FAMILIES
from assistant.sampling import GenerationOptions


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_through_the_entry_point_and_answers_about_two_photos(family, make_settings):
    loaded = load_model(make_settings(model=f"tiny:{family}"))
    # The CPU loads fp32; where the fast loop decodes (Llama and Qwen2 text models; one-shot commands
    # decode in bf16 when not compiled) the whole VLM runs in bf16.
    expected = torch.float32 if family == "qwen2_vl" else torch.bfloat16
    assert loaded.device.type == "cpu" and loaded.dtype == expected, f"{family}: {loaded.details['decode']}"
    assert next(loaded.model.parameters()).dtype == expected
    assert (loaded.decoder is None) == (family == "qwen2_vl")
    assert loaded.image_token_id is not None and loaded.context_tokens == 2048
    photos = [PILImage.new("RGB", (48, 32), "red"), PILImage.new("RGB", (32, 32), "blue")]
    conversation = Conversation("Be brief.").add(Message.user("Compare the photos.", photos))
    engine = Engine(loaded)
    try:
        reply = engine.reply(conversation, GenerationOptions(temperature=0.0, max_new_tokens=8))
        text = reply.text()
    finally:
        engine.close()
    assert reply.usage.image_tokens > 0 and reply.usage.completion_tokens > 0, f"{family}: {reply.usage}"
    assert text or reply.usage.finish_reason == "stop"


def test_dtype_and_device_map_settings_are_honoured(make_settings):
    loaded = load_model(make_settings(dtype="bfloat16", device_map="auto"))
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert loaded.device.type == "cpu", "accelerate places the model on the CPU when there is no GPU"


def test_auto_dtype_is_fp32_on_cpu():
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("float16", torch.device("cpu")) == torch.float16


def test_missing_or_wrong_local_directories_are_clear(make_settings, tmp_path):
    with pytest.raises(ModelUnavailableError, match="model directory .*/nowhere does not exist"):
        load_model(make_settings(model=str(tmp_path / "nowhere")))
    with pytest.raises(ModelUnavailableError, match="is not a model directory .*no config.json"):
        load_model(make_settings(model=str(tmp_path)))


def test_remote_code_is_not_run_unless_the_user_says_so(make_settings, tmp_path):
    config = {"model_type": "my_custom_vlm", "auto_map": {"AutoConfig": "configuration_my.MyConfig"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelUnavailableError, match="runs code of its own.*--trust-remote-code"):
        load_model(make_settings(model=str(tmp_path)))


def test_a_model_of_another_kind_is_refused_with_the_reason(make_settings, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelUnavailableError, match="not a vision-language model"):
        load_model(make_settings(model=str(tmp_path)))
