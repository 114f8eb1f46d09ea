"""Naive HRNet-ViT (HRNet-MiT): the HRViT paper's Table 6 baseline, HRNetV2's layout with MiT blocks.

The paper only says the residual blocks of HRNetV2 are replaced by transformer blocks (MiT blocks for
HRNet-MiT); there is no official code. Every other choice below is ours, made so that the model differs from
HRViT only where the paper says HRViT improves on it (heterogeneous branches, HRViT's own block, patch
embedding and fusion), and from MiT only by its multi-branch topology:

- Macro layout: HRViT's: four stages of 1, 1, 2, 2 modules with 1, 2, 3, 4 branches (the six modules of
  HRViT), each module being per-branch block stacks followed by HRNet's multi-resolution fusion.
- Widths and blocks per module: HRViT-b1/b2/b3's (32, 64, 128, 256) / (48, 96, 240, 384) / (64, 128, 256, 512)
  and their block lists, e.g. b1 (1), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 2), (1, 1, 2, 2).
- Block: ``models.mit.Block`` unchanged: MiT's homogeneous mlp ratio 4 on every branch and MiT's spatial-reduction
  ratios 8, 4, 2, 1 from the 1/4 to the 1/32 branch; heads = channels // dim_head with HRViT's dim_head (32, 24,
  32), at least one. Each branch's block stack ends with a LayerNorm (eps 1e-6), as MiT's stages and HRViT's
  modules do, and is run on tokens, then reshaped back to a map for the fusion.
- Stem, transitions and fusion: HRNetV2's (two 3x3 stride-2 conv + BN + ReLU to 64 channels at 1/4; a
  3x3 conv + BN + ReLU re-widths 64 to the first branch; a new branch is a stride-2 3x3 conv + BN + ReLU from the
  lowest-resolution branch; fusion sums strided 3x3 conv chains downwards and 1x1 conv + BN + bilinear upsampling
  upwards, then ReLU). HRNetV2's Bottleneck ``layer1`` is residual blocks, so it is replaced like the rest: the
  first module's single MiT block takes its place.
- Segmentation head: the SegformerHead HRViT uses (``models.heads``), on the four maps, with HRViT's settings
  (no norm/activation on the per-scale projections, 256 channels for b1/b2, 768 for b3, dropout 0.1).

There are no official weights: parameter names follow models/hrnet.py (``transition*``, ``stage*.*.branches``,
``fuse_layers``) and, inside each block, MiT's.
"""
from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model
from .heads import EncoderDecoder, SegformerHead
from .hrnet import ExchangeUnit, HighResolutionNet, apply_transition
from .layers import map_to_tokens, tokens_to_map
from .mit import Block

__all__ = ["HRNetMiT", "MiTBranch", "MiTHRModule"]

SR_RATIOS = (8, 4, 2, 1)


class MiTBranch(nn.Module):
    """A stack of MiT blocks on one branch's map, ending with a LayerNorm."""

    def __init__(self, dim: int, depth: int, num_heads: int, sr_ratio: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, sr_ratio=sr_ratio) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[2:]
        tokens = map_to_tokens(x)  # a view of a channels-last map
        for block in self.blocks:
            tokens = block(tokens, H, W)
        return tokens_to_map(self.norm(tokens), H, W)  # channels-last, no copy


class MiTHRModule(ExchangeUnit):
    """HRNet's exchange unit with MiT block stacks in place of residual blocks on the branches."""

    def __init__(self, channels: list[int], depths: list[int], dim_head: int, mlp_ratio: float = 4.0,
                 align_corners: bool = False):
        branches = nn.ModuleList(
            MiTBranch(c, d, max(c // dim_head, 1), SR_RATIOS[i], mlp_ratio)
            for i, (c, d) in enumerate(zip(channels, depths))
        )
        super().__init__(channels, branches, "bilinear", align_corners)


class HRNetMiT(nn.Module):
    """Naive HRNet-ViT backbone: returns four maps at 1/4 .. 1/32 with ``channels`` widths."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128, 256),
                 module_depths: tuple[tuple[int, ...], ...] = ((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 2),
                                                               (1, 1, 2, 2)),
                 dim_head: int = 32, mlp_ratio: float = 4.0, stem_channels: int = 64, align_corners: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem_channels, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)

        prev = [stem_channels]
        self.num_stages = len(channels)
        for stage in range(1, self.num_stages + 1):
            widths = list(channels[:stage])
            setattr(self, f"transition{stage}", HighResolutionNet._make_transition(prev, widths))
            setattr(self, f"stage{stage}", nn.Sequential(*(
                MiTHRModule(widths, list(depths), dim_head, mlp_ratio, align_corners)
                for depths in module_depths if len(depths) == stage
            )))
            prev = widths
        self.out_channels = list(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)  # maps stay channels-last: branches see token views
        x = self.relu(self.bn1(self.conv1(x)))
        xs = [self.relu(self.bn2(self.conv2(x)))]
        for stage in range(1, self.num_stages + 1):
            xs = getattr(self, f"stage{stage}")(apply_transition(getattr(self, f"transition{stage}"), xs))
        return xs


_VARIANTS = {
    "b1": dict(channels=(32, 64, 128, 256), dim_head=32,
               module_depths=((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 2), (1, 1, 2, 2))),
    "b2": dict(channels=(48, 96, 240, 384), dim_head=24,
               module_depths=((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 2), (1, 1, 6, 2))),
    "b3": dict(channels=(64, 128, 256, 512), dim_head=32,
               module_depths=((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 3), (1, 1, 6, 3))),
}
_HEAD_CHANNELS = {"b1": 256, "b2": 256, "b3": 768}  # HRViT's SegFormer head widths
_DATASETS = {
    "ade20k": dict(num_classes=150, input_size=(512, 512), paper_inputs=((512, 512),)),
    "cityscapes": dict(num_classes=19, input_size=(1024, 1024), paper_inputs=((1024, 1024), (512, 512))),
}
_REFERENCE = ("HRViT paper (Gu et al., CVPR 2022), Table 6: naive HRNet-ViT (HRNet-MiT) vs sequential MiT and HRViT; "
              "no published code or numbers to match")
_CODE = "none (paper baseline; layout from HRNet/HRNet-Semantic-Segmentation@0bbb288:lib/models/seg_hrnet.py)"
_RECONSTRUCTION = "the paper's naive HRNet-MiT baseline: no code or configuration released; layout chosen by hrvit-bench"


def _notes(variant: str) -> str:
    cfg = _VARIANTS[variant]
    heads = [max(c // cfg["dim_head"], 1) for c in cfg["channels"]]
    return (f"Our reconstruction: HRNetV2 stem, transitions and fusion (ReLU after sums, bilinear upsampling); "
            f"models.mit.Block on every branch, mlp ratio 4, sr ratios 8-4-2-1, heads {heads} "
            f"(channels // HRViT-{variant} dim_head {cfg['dim_head']}), a LayerNorm ending each branch stack; "
            f"HRViT-{variant} widths {list(cfg['channels'])} and blocks per module {list(cfg['module_depths'])}; "
            "HRNet's Bottleneck layer1 replaced by the first module's MiT block.")


def _register(variant: str) -> None:
    cfg = _VARIANTS[variant]

    def backbone(**overrides) -> nn.Module:
        return HRNetMiT(**dict(cfg, **overrides))

    register_model(
        name=f"hrnet_mit_{variant}_backbone", family="hrnet_vit", variant=variant, task="backbone",
        reconstruction=_RECONSTRUCTION,
        input_size=(512, 512), reference=_REFERENCE, official_code=_CODE, notes=_notes(variant),
        attention="sdpa",
    )(backbone)

    for dataset, data in _DATASETS.items():
        def seg(num_classes=data["num_classes"], **overrides) -> nn.Module:
            body = HRNetMiT(**dict(cfg, **overrides))
            head = SegformerHead(body.out_channels, _HEAD_CHANNELS[variant], num_classes,
                                 mlp_norm=False, mlp_act=False)
            return EncoderDecoder(body, head)

        register_model(
            name=f"hrnet_mit_{variant}_seg_{dataset}", family="hrnet_vit", variant=variant, task="segmentation",
            reconstruction=_RECONSTRUCTION,
            dataset=dataset, reference=_REFERENCE, official_code=_CODE, attention="sdpa",
            notes=_notes(variant) + f" Head: HRViT's SegformerHead (channels {_HEAD_CHANNELS[variant]}, "
                                    "no norm/act on the per-scale projections), logits resized to the input size.",
            **data,
        )(seg)


for _variant in _VARIANTS:
    _register(_variant)
