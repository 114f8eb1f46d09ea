"""Heads shared by several families, with the parameter names of the mmseg modules they follow.

``SegformerHead`` is mmseg's all-MLP head as the HRViT repository ships it (segmentation/mmseg/models/
decode_heads/segformer_head.py), and ``EncoderDecoder`` is mmseg's whole-image inference wrapper, so a
checkpoint with ``backbone.*`` and ``decode_head.*`` keys loads with ``strict=True``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvModule(nn.Module):
    """mmcv's ConvModule for the cases used here: conv, then optional BN (named ``bn``) and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, padding: int = 0,
                 norm: bool = True, act: bool = True):
        super().__init__()
        # mmcv's bias="auto": a conv followed by a norm has no bias.
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=not norm)
        self.bn = nn.BatchNorm2d(out_channels) if norm else None
        self.activate = nn.ReLU(inplace=True) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._norm_act(self.conv(x))

    def forward_concat(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """``forward(torch.cat(xs, dim=1))`` without the concatenation: a conv is a sum over its input channels,
        so each input meets its slice of the weight and the products are summed in place. The slices' MACs add
        up to the full conv's; what is saved is writing and reading the concatenation (the largest tensor of a
        SegFormer head at 1/4 resolution)."""
        conv = self.conv
        weights = conv.weight.split([x.shape[1] for x in xs], dim=1)
        out = F.conv2d(xs[0], weights[0], conv.bias, conv.stride, conv.padding, conv.dilation)
        for x, weight in zip(xs[1:], weights[1:]):
            out.add_(F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation))
        return self._norm_act(out)

    def _norm_act(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is not None:
            x = self.bn(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


class SegformerHead(nn.Module):
    """All-MLP decoder: project each scale, resize to 1/4, fuse, classify.

    ``mlp_norm``/``mlp_act`` add BN/ReLU to the per-scale projections (HRViT's configs turn both off). The fusion
    conv meets each resized projection on its slice of the weight (ConvModule.forward_concat), in mmseg's
    concatenation order, so the concatenation is never built.
    """

    def __init__(self, in_channels: list[int], channels: int, num_classes: int, dropout_ratio: float = 0.1,
                 mlp_norm: bool = True, mlp_act: bool = True, align_corners: bool = False):
        super().__init__()
        self.in_channels = list(in_channels)
        self.channels = channels
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.convs = nn.ModuleList(
            ConvModule(c, channels, 1, norm=mlp_norm, act=mlp_act) for c in self.in_channels
        )
        self.fusion_conv = ConvModule(channels * len(self.in_channels), channels, 1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        outs = [
            F.interpolate(conv(x), size=size, mode="bilinear", align_corners=self.align_corners)
            for conv, x in zip(self.convs, features)
        ]
        x = self.fusion_conv.forward_concat(outs)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.conv_seg(x)


class EncoderDecoder(nn.Module):
    """Backbone + decode head; returns per-pixel logits at the input size (mmseg's whole inference)."""

    def __init__(self, backbone: nn.Module, decode_head: nn.Module, align_corners: bool = False):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.align_corners = align_corners

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        logits = self.decode_head(self.backbone(img))
        return F.interpolate(logits, size=img.shape[2:], mode="bilinear", align_corners=self.align_corners)
