"""Small layers several families share."""
from __future__ import annotations

import torch
from torch import nn


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
