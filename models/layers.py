"""Small layers several families share."""
from __future__ import annotations

import torch
from torch import nn


def tokens_to_map(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Tokens (B, H*W, C) -> map (B, C, H, W) in channels-last memory: a view when ``x`` is contiguous."""
    return x.reshape(x.shape[0], H, W, x.shape[2]).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """Map (B, C, H, W) -> tokens (B, H*W, C): a view when ``x`` is channels-last."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def drop_path_rates(rate: float, depths: list[int]) -> list[float]:
    """Stochastic depth rising linearly over all blocks (torch.linspace, computed in Python so meta builds work)."""
    total = sum(depths)
    return [rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
