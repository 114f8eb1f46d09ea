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
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


class SegformerHead(nn.Module):
    """All-MLP decoder: project each scale, resize to 1/4, concat, fuse, classify.

    ``mlp_norm``/``mlp_act`` add BN/ReLU to the per-scale projections (HRViT's configs turn both off).
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
        x = self.fusion_conv(torch.cat(outs, dim=1))
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
