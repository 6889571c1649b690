"""Composed models (encoder -> projector -> causal LM) with tiny random parts: the merge, both fusion
modes, training that learns, reproducibility, resume, and save/load."""

import dataclasses

import pytest
import torch
from PIL import Image as PILImage
from safetensors.torch import load_file

from assistant.conversation import Conversation, Message
from assistant.engine import Engine
from assistant.models.composed import PROJECTOR_FILE, load_composed
from assistant.models.tiny import build_tiny_parts
from assistant.sampling import GenerationOptions
from assistant.training import make_split, scenes_to_examples
from assistant.training.train import TrainConfig, build_for_training, prepare_examples, train, training_loss
from assistant.vision.projectors import ProjectorConfig, build_projector


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return build_tiny_parts(tmp_path_factory.mktemp("parts"))


@pytest.fixture
def config(parts, tmp_path, cache_dir):
    vision, lm = parts
    return TrainConfig(
        output=tmp_path / "composed",
        encoder=str(vision),
        language_model=str(lm),
        fusion="mlp",
        image_tokens=4,
        scenes=12,
        steps=6,
        batch_size=4,
        learning_rate=1e-2,
        warmup_steps=1,
        checkpoint_every=3,
        cache_dir=cache_dir,
        lm_dtype="float32",
    )


def photos(count):
    return [PILImage.new("RGB", (40 + 8 * i, 32), colour) for i, colour in zip(range(count), ["red", "green", "blue"])]


@pytest.mark.parametrize("fusion, tokens", [("mlp", 4), ("mlp", 16), ("resampler", 3)])
def test_both_fusion_modes_merge_the_right_number_of_image_tokens(config, fusion, tokens):
    vlm = build_for_training(dataclasses.replace(config, fusion=fusion, image_tokens=tokens))
    conversation = Conversation("be brief").add(Message.user("compare", photos(2)))
    conversation.add(Message.assistant("ok")).add(Message.user("and this?", photos(1)))
    from assistant.models.composed import ComposedModel

    model = ComposedModel(
        "tiny", vlm, None, torch.device("cpu"), torch.float32, 2048, None, [vlm.tokenizer.eos_token_id]
    )
    encoded = model.encode(conversation)
    assert encoded.image_tokens == 3 * tokens, f"3 photos x {tokens} tokens, got {encoded.image_tokens}"
    features = vlm.patch_features(encoded.inputs["pixel_values"])
    assert features.shape == (3, 16, 32 + 64), "16 patches of 32 features plus a 64-bin colour histogram"
    merged = vlm.embed(encoded.inputs["input_ids"], encoded.inputs["image_mask"], features)
    assert merged.shape == (1, encoded.prompt_tokens, 32)
    with pytest.raises(ValueError, match=rf"prompt has {3 * tokens} positions, the 2 images give {2 * tokens} tokens"):
        vlm.embed(encoded.inputs["input_ids"], encoded.inputs["image_mask"], features[:2])


def test_unknown_projector_type_is_named():
    with pytest.raises(ValueError, match="Unknown projector type: 'linear'; the types are: mlp, resampler"):
        build_projector(ProjectorConfig("linear", 8, 8, 16, 4))
    with pytest.raises(ValueError, match="square number <= 16"):
        ProjectorConfig("mlp", 8, 8, 16, 5)


@pytest.mark.parametrize("fusion, tokens", [("mlp", 4), ("resampler", 2)])
def test_training_lowers_the_loss(config, fusion, tokens):
    config = dataclasses.replace(config, fusion=fusion, image_tokens=tokens)
    vlm = build_for_training(config)
    examples = prepare_examples(vlm, scenes_to_examples(make_split("train", 4, seed=0)), config)
    batch = list(range(8))
    optimizer = torch.optim.AdamW(vlm.projector.parameters(), lr=3e-2)
    before = training_loss(vlm, examples, batch).item()
    for _ in range(40):
        optimizer.zero_grad()
        training_loss(vlm, examples, batch).backward()
        optimizer.step()
    after = training_loss(vlm, examples, batch).item()
    assert after < 0.93 * before, f"the projector should fit a fixed batch: loss {before:.3f} -> {after:.3f}"
    assert all(not p.requires_grad for p in vlm.language_model.parameters()), "the LM stays frozen"


def test_a_seed_reproduces_a_run_and_resume_continues_it_exactly(config, tmp_path):
    straight = train(config)
    again = train(dataclasses.replace(config, output=tmp_path / "again"))
    interrupted = dataclasses.replace(config, output=tmp_path / "resumed", stop_after=3)
    train(interrupted)
    assert not (interrupted.output / PROJECTOR_FILE).exists(), "a stopped run leaves a checkpoint, not a model"
    train(dataclasses.replace(interrupted, stop_after=None))
    weights = [load_file(path / PROJECTOR_FILE) for path in (straight, again, interrupted.output)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), f"same seed, different {name}"
        assert torch.equal(tensor, weights[2][name]), f"resumed run differs in {name}"


def test_a_saved_projector_reloads_to_identical_logits_and_answers(config):
    directory = train(config)
    loaded = load_composed(directory, torch.device("cpu"), torch.float32, config.cache_dir)
    trained = build_for_training(config)
    trained.projector.load_state_dict(load_file(directory / PROJECTOR_FILE))
    conversation = Conversation().add(Message.user("what colour?", photos(1)))
    encoded = loaded.encode(conversation)
    inputs = encoded.inputs
    with torch.no_grad():
        a = loaded.model.embed(
            inputs["input_ids"], inputs["image_mask"], loaded.model.patch_features(inputs["pixel_values"])
        )
        b = trained.embed(inputs["input_ids"], inputs["image_mask"], trained.patch_features(inputs["pixel_values"]))
        logits_a = loaded.model.language_model(inputs_embeds=a).logits
        logits_b = trained.language_model(inputs_embeds=b).logits
    assert torch.equal(logits_a, logits_b), "a saved and reloaded projector must give identical logits"
    engine = Engine(loaded)
    try:
        reply = engine.reply(conversation, GenerationOptions(temperature=0.0, max_new_tokens=5))
        reply.text()
    finally:
        engine.close()
    assert reply.usage.image_tokens == 4 and reply.usage.completion_tokens > 0
    assert loaded.model.spec.provenance["config"]["seed"] == 0
    # Hints are on in what training writes; this tiny encoder has no ImageNet head, so none is given.
    assert loaded.model.spec.object_hints and loaded.model.object_hint(photos(1)[0]) == ""


def test_object_hints_follow_their_images_in_order_and_empty_ones_are_left_out():
    from assistant.models.composed import IMAGE_MARKER, flatten_chat, with_object_hints

    chat = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Which?"}]},
    ]
    hinted = with_object_hints(chat, ["(This picture shows: tabby.)", "", "(This picture shows: espresso.)"])
    assert [part.get("text") for part in hinted[2]["content"]] == [
        None,
        None,
        "(This picture shows: espresso.)",
        "Which?",
    ]
    assert flatten_chat(hinted)[0]["content"] == f"{IMAGE_MARKER}\n(This picture shows: tabby.)\nAnd this?"
    assert with_object_hints(chat, ["", "", ""]) == chat, "no hints: the prompt is unchanged"
