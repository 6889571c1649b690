"""Projectors: patch features of a vision encoder -> image tokens in a language model's embedding space.

Two fusion modes (seed §4):

    mlp        LLaVA-1.5: pool the patch grid to g x g, then a 2-layer MLP per patch; the g*g
               projected patches are concatenated into the token sequence.
    resampler  attention pooling: K learned queries cross-attend to all patches and become K image
               tokens (Flamingo's perceiver resampler, one layer), so K stays small whatever P is.

    features [N, P, D] --projector--> image tokens [N, K, H]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

ProjectorKind = Literal["mlp", "resampler"]
PROJECTOR_KINDS = ("mlp", "resampler")


@dataclass(frozen=True)
class ProjectorConfig:
    kind: ProjectorKind
    feature_dim: int  # D: width of one patch feature (encoder features, plus colour features if any)
    embed_dim: int  # H: the language model's embedding width
    num_patches: int  # P: patches per image from the encoder (a square grid, e.g. 7 x 7 = 49)
    num_tokens: int  # K: image tokens per image (mlp: a square number g*g <= P; resampler: queries)
    num_heads: int = 8  # resampler: attention heads (must divide embed_dim)

    def __post_init__(self) -> None:
        if self.kind not in PROJECTOR_KINDS:
            raise ValueError(f"Unknown projector type: {self.kind!r}; the types are: {', '.join(PROJECTOR_KINDS)}")
        if math.isqrt(self.num_patches) ** 2 != self.num_patches:
            raise ValueError(f"num_patches must be a square grid (e.g. 49 = 7x7), got {self.num_patches}")
        if self.kind == "mlp" and not _is_square_at_most(self.num_tokens, self.num_patches):
            raise ValueError(
                f"an mlp projector pools the {self.num_patches}-patch grid to a square: num_tokens must be "
                f"a square number <= {self.num_patches}, got {self.num_tokens}"
            )
        if self.kind == "resampler" and self.embed_dim % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide embed_dim={self.embed_dim}")

    def to_dict(self) -> dict:
        return asdict(self)


def _is_square_at_most(value: int, limit: int) -> bool:
    return 1 <= value <= limit and math.isqrt(value) ** 2 == value


class MLPProjector(nn.Module):
    """LLaVA-1.5's projector (Linear-GELU-Linear), after average-pooling the patch grid."""

    def __init__(self, config: ProjectorConfig):
        super().__init__()
        self.grid = math.isqrt(config.num_patches)
        self.pooled_grid = math.isqrt(config.num_tokens)
        self.mlp = nn.Sequential(
            nn.Linear(config.feature_dim, config.embed_dim),
            nn.GELU(),
            nn.Linear(config.embed_dim, config.embed_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [N, P, D] -> image tokens [N, g*g, H]."""
        return self.mlp(pool_patch_grid(features, self.grid, self.pooled_grid))


class ResamplerProjector(nn.Module):
    """K learned queries cross-attend to the projected patches (with their positions) and become K
    image tokens: the attention mode of fusion, with a token count independent of the encoder's."""

    def __init__(self, config: ProjectorConfig):
        super().__init__()
        width = config.embed_dim
        self.input = nn.Linear(config.feature_dim, width)
        self.positions = nn.Parameter(torch.randn(config.num_patches, width) * 0.02)
        self.queries = nn.Parameter(torch.randn(config.num_tokens, width) * 0.02)
        self.attention = nn.MultiheadAttention(width, config.num_heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.output = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [N, P, D] -> image tokens [N, K, H]."""
        patches = self.input(features) + self.positions
        queries = self.queries.expand(features.shape[0], -1, -1)
        pooled, _ = self.attention(queries, patches, patches, need_weights=False)
        return self.output(self.norm(pooled + queries))


PROJECTORS: dict[str, type[nn.Module]] = {"mlp": MLPProjector, "resampler": ResamplerProjector}


def build_projector(config: ProjectorConfig) -> nn.Module:
    if config.kind not in PROJECTORS:
        raise ValueError(f"Unknown projector type: {config.kind!r}; the types are: {', '.join(PROJECTORS)}")
    return PROJECTORS[config.kind](config)


def pool_patch_grid(features: torch.Tensor, grid: int, pooled_grid: int) -> torch.Tensor:
    """Average-pool a square grid of patch features: [N, grid*grid, D] -> [N, pooled*pooled, D]."""
    if pooled_grid == grid:
        return features
    batch, _, width = features.shape
    as_map = features.transpose(1, 2).reshape(batch, width, grid, grid)
    pooled = nn.functional.adaptive_avg_pool2d(as_map, pooled_grid)
    return pooled.flatten(2).transpose(1, 2)
