"""A toy model whose MACs and parameters are known by hand."""
import torch
from torch import nn


class ToyNet(nn.Module):
    """conv3x3 (3->8, stride 2, bias) -> BN -> ReLU -> global pool -> linear (8->10)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)
        self.never_called = nn.Linear(4, 4)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(x.flatten(1))


def toy_macs(b: int, h: int, w: int, num_classes: int = 10) -> dict:
    """Hand arithmetic, fvcore's rules: conv = B*Cout*Cin*k*k*Hout*Wout, eval BN = 2 per element, ..."""
    ho, wo = (h + 1) // 2, (w + 1) // 2
    return {
        "conv": b * 8 * 3 * 9 * ho * wo,
        "batch_norm": 2 * b * 8 * ho * wo,
        "adaptive_avg_pool2d": b * 8 * ho * wo,
        "linear": b * 8 * num_classes,
    }


TOY_PARAMS = (8 * 3 * 9 + 8) + (8 + 8) + (8 * 10 + 10) + (4 * 4 + 4)
TOY_UNUSED = 4 * 4 + 4
