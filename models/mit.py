"""Mix Transformer (MiT-B0..B5) and the SegFormer all-MLP decoder.

Follows NVlabs/SegFormer (mmseg/models/backbones/mix_transformer.py, decode_heads/segformer_head.py):
parameter names and shapes match the official modules so official state dicts load with ``strict=True``.

Departures from the official forward that change neither a parameter nor an output beyond float rounding, nor
a fvcore total:

- Attention runs through ``F.scaled_dot_product_attention`` (``use_sdpa=True``); ``use_sdpa=False`` keeps the
  official ``q @ k^T``, softmax, ``@ v``, which plain fvcore counts (the project's counters count both alike).
- Maps are channels-last views of the (B, H*W, C) tokens, so the token <-> map transposes around the depthwise
  conv, the spatial-reduction conv, the patch embeddings and the head's linear embeddings copy nothing, and the
  backbone returns channels-last maps; the residual sums are in place.
- The head's fusion conv runs per input on its slice of the weight, with no concatenation (ConvModule.forward_concat).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .heads import ConvModule, EncoderDecoder
from .layers import DropPath, drop_path_rates, map_to_tokens, tokens_to_map

__all__ = ["Block", "MixVisionTransformer", "MiTClassifier", "SegFormerHead"]


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values come from a map shrunk ``sr_ratio`` times per side.

    ``use_sdpa=False`` computes the official explicit ``softmax(q @ k^T * scale) @ v``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, sr_ratio: int = 1, use_sdpa: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.use_sdpa = use_sdpa
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)  # the official code keeps torch's default eps here

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        heads, head_dim = self.num_heads, C // self.num_heads
        q = self.q(x).reshape(B, N, heads, head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.norm(map_to_tokens(self.sr(tokens_to_map(x, H, W))))
        k, v = self.kv(x).reshape(B, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            out = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class DWConv(nn.Module):
    """Depthwise 3x3 conv on a token sequence: the positional information of the Mix-FFN."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        return map_to_tokens(self.dwconv(tokens_to_map(x, H, W)))


class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), H, W)))


class Block(nn.Module):
    """One MiT block on tokens (B, N, C) of an H x W map; other families build on it, keep the signature.

    Both residual sums are in place, into the branch's fresh output (tests/test_mit.py trains through them).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 sr_ratio: int = 1, drop_path: float = 0.0, use_sdpa: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, num_heads, qkv_bias=qkv_bias, sr_ratio=sr_ratio, use_sdpa=use_sdpa)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = self.drop_path(self.attn(self.norm1(x), H, W)).add_(x)
        return self.drop_path(self.mlp(self.norm2(x), H, W)).add_(x)


class OverlapPatchEmbed(nn.Module):
    """Strided conv whose kernel overlaps its neighbours (7x7 s4 at the stem, 3x3 s2 later), then LayerNorm."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)  # default eps, as in the official code

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        H, W = x.shape[2:]
        return self.norm(map_to_tokens(x)), H, W


class MixVisionTransformer(nn.Module):
    """The MiT encoder: four stages at strides 4, 8, 16, 32; returns the four normalised maps.

    Modules are named ``patch_embed{i}``, ``block{i}`` and ``norm{i}`` (i = 1..4) as in the official code.
    ``use_sdpa=False`` keeps the official explicit attention matmuls.
    """

    def __init__(self, embed_dims: list[int], num_heads: list[int], depths: list[int],
                 sr_ratios: list[int] = (8, 4, 2, 1), mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 in_chans: int = 3, drop_path_rate: float = 0.1, use_sdpa: bool = True):
        super().__init__()
        self.embed_dims = list(embed_dims)
        dpr = iter(drop_path_rates(drop_path_rate, depths))
        for i, (dim, heads, depth, sr) in enumerate(zip(embed_dims, num_heads, depths, sr_ratios), start=1):
            first = i == 1
            in_dim = in_chans if first else embed_dims[i - 2]
            self.add_module(f"patch_embed{i}", OverlapPatchEmbed(in_dim, dim, 7 if first else 3, 4 if first else 2))
            self.add_module(f"block{i}", nn.ModuleList(
                Block(dim, heads, mlp_ratio, qkv_bias=qkv_bias, sr_ratio=sr, drop_path=next(dpr), use_sdpa=use_sdpa)
                for _ in range(depth)
            ))
            self.add_module(f"norm{i}", nn.LayerNorm(dim, eps=1e-6))

    def forward_stages(self, x: torch.Tensor):
        """Yield each stage's normalised output as a channels-last (B, C, H, W) map, which the next stage embeds."""
        x = x.contiguous(memory_format=torch.channels_last)  # so the stem conv's output is token-ordered
        for i in range(1, len(self.embed_dims) + 1):
            x, H, W = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x, H, W)
            x = tokens_to_map(getattr(self, f"norm{i}")(x), H, W)
            yield x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.forward_stages(x))


class MiTClassifier(MixVisionTransformer):
    """MiT with an ImageNet head; the official code ships none (its ``head`` line is commented out).

    PVTv2's recipe, by the same authors on the same encoder: the last stage's norm (``norm4``) is the final
    norm, then a mean over tokens and ``head = Linear(embed_dims[-1], num_classes)``.
    """

    def __init__(self, num_classes: int = 1000, **kwargs):
        super().__init__(**kwargs)
        self.head = nn.Linear(self.embed_dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *_, last = self.forward_stages(x)
        return self.head(last.flatten(2).mean(dim=2))  # the mean over the last stage's tokens


class LinearEmbed(nn.Module):
    """A per-pixel Linear on a map (the official ``MLP``; a Linear so that its weight is (out, in)).

    Channels-last in, channels-last out: the Linear runs on the map's own memory, with no transpose copy.
    """

    def __init__(self, in_dim: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SegFormerHead(nn.Module):
    """NVlabs' all-MLP decoder: embed each scale, resize to 1/4, fuse (deepest first), predict.

    The fusion conv meets each resized embedding on its slice of the weight (the official concatenation order),
    so the 4 x ``embed_dim``-wide concatenation is never built.

    ``conv_seg`` (``channels`` -> classes) is built by mmseg's BaseDecodeHead and never called by the
    official forward; it is kept, unused, so parameter counts and state dicts equal the official ones.
    """

    def __init__(self, in_channels: list[int], embed_dim: int, num_classes: int, channels: int = 128,
                 dropout_ratio: float = 0.1, align_corners: bool = False):
        super().__init__()
        self.align_corners = align_corners
        for i, c in enumerate(in_channels, start=1):
            self.add_module(f"linear_c{i}", LinearEmbed(c, embed_dim))
        self.num_inputs = len(in_channels)
        self.linear_fuse = ConvModule(embed_dim * len(in_channels), embed_dim, 1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        embedded = []
        for i in reversed(range(self.num_inputs)):
            x = getattr(self, f"linear_c{i + 1}")(features[i])
            if i > 0:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)
            embedded.append(x)
        x = self.linear_fuse.forward_concat(embedded)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.linear_pred(x)


_MIT_SMALL = dict(embed_dims=[32, 64, 160, 256], decoder_dim=256)
_MIT_WIDE = dict(embed_dims=[64, 128, 320, 512])
MIT_CONFIGS = {
    "b0": dict(**_MIT_SMALL, depths=[2, 2, 2, 2]),
    "b1": dict(**_MIT_WIDE, depths=[2, 2, 2, 2], decoder_dim=256),
    "b2": dict(**_MIT_WIDE, depths=[3, 4, 6, 3], decoder_dim=768),
    "b3": dict(**_MIT_WIDE, depths=[3, 4, 18, 3], decoder_dim=768),
    "b4": dict(**_MIT_WIDE, depths=[3, 8, 27, 3], decoder_dim=768),
    "b5": dict(**_MIT_WIDE, depths=[3, 6, 40, 3], decoder_dim=768),
}
_MIT_SHARED = dict(num_heads=[1, 2, 5, 8], sr_ratios=[8, 4, 2, 1], mlp_ratio=4.0, qkv_bias=True)

_COMMIT = "65fa8cfa9b52b6ee7e8897a98705abf8570f9e32"
_BACKBONE_CODE = f"NVlabs/SegFormer@{_COMMIT}:mmseg/models/backbones/mix_transformer.py"
_HEAD_CODE = f"NVlabs/SegFormer@{_COMMIT}:mmseg/models/decode_heads/segformer_head.py"
_PAPER = "Xie et al., SegFormer, NeurIPS 2021"
_SEG_TASKS = {
    # name suffix: dataset, classes, default input, inputs the papers report, note
    "seg_ade20k": ("ade20k", 150, (512, 512), ((512, 512),), "ADE20K 512x512 crops, whole-image inference."),
    "seg_ade20k_640": ("ade20k", 150, (640, 640), ((640, 640),),
                       "ADE20K at 640x640: the crop of the official B5 config and of the paper's B5 row."),
    "seg_cityscapes": ("cityscapes", 19, (1024, 1024), ((1024, 1024), (512, 512)),
                       "Cityscapes 1024x1024 crops; the official test_cfg slides 1024x1024 windows (stride 768) "
                       "over 1024x2048 images, the paper's Cityscapes FLOPs are for a full 1024x2048 image."),
}


def _mit_args(variant: str, overrides: dict) -> dict:
    config = {k: v for k, v in MIT_CONFIGS[variant].items() if k != "decoder_dim"}
    return {**_MIT_SHARED, **config, **overrides}


def _segformer(variant: str, num_classes: int, overrides: dict) -> nn.Module:
    head_args = {k: overrides.pop(k) for k in ("embed_dim", "channels", "dropout_ratio", "align_corners")
                 if k in overrides}
    head_args.setdefault("embed_dim", MIT_CONFIGS[variant]["decoder_dim"])
    backbone = MixVisionTransformer(**_mit_args(variant, overrides))
    head = SegFormerHead(backbone.embed_dims, num_classes=num_classes, **head_args)
    return EncoderDecoder(backbone, head)


def _register_variant(variant: str) -> None:
    shared = dict(family="mit", variant=variant, attention="sdpa")

    def classifier(**overrides) -> nn.Module:
        return MiTClassifier(**_mit_args(variant, {"num_classes": 1000, **overrides}))

    register_model(
        name=f"mit_{variant}", task="classification", dataset="imagenet", num_classes=1000,
        input_size=(224, 224), official_code=_BACKBONE_CODE,
        reference=f"{_PAPER}: no ImageNet numbers published for MiT (encoder only)", **shared,
        reconstruction="the official code has no MiT classifier: PVTv2's head (final norm, mean, Linear) added",
        notes="The official code has no classifier (its head line is commented out); this head is ours: the "
              "last stage norm (norm4, LayerNorm eps 1e-6) as final norm, mean over tokens, "
              f"Linear({MIT_CONFIGS[variant]['embed_dims'][-1]}, 1000) named head, as in PVTv2.",
    )(classifier)

    def backbone(**overrides) -> nn.Module:
        return MixVisionTransformer(**_mit_args(variant, overrides))

    register_model(
        name=f"mit_{variant}_backbone", task="backbone", input_size=(512, 512),
        paper_inputs=((512, 512), (1024, 1024)), official_code=_BACKBONE_CODE,
        reference=f"{_PAPER} (encoder sizes; no backbone-alone FLOPs published)", **shared,
        notes="Four maps at strides 4-32 after norm1..norm4; any input size works (padded overlapping convs).",
    )(backbone)

    for suffix, (dataset, classes, size, inputs, note) in _SEG_TASKS.items():
        if suffix == "seg_ade20k_640" and variant != "b5":
            continue

        def seg(num_classes: int = classes, **overrides) -> nn.Module:
            return _segformer(variant, num_classes, overrides)

        register_model(
            name=f"mit_{variant}_{suffix}", task="segmentation", dataset=dataset, num_classes=classes,
            input_size=size, paper_inputs=inputs, official_code=_HEAD_CODE,
            reference=f"{_PAPER}, state-of-the-art comparison (ADE20K at 512, B5 at 640; Cityscapes)",
            **shared,
            notes=f"{note} SegFormer head with embed_dim {MIT_CONFIGS[variant]['decoder_dim']} (local_configs/"
                  "segformer); keys backbone.* and decode_head.*; the unused conv_seg (128 -> classes) of "
                  "mmseg's BaseDecodeHead is kept for the official parameter count; logits resized to the input.",
        )(seg)


for _variant in MIT_CONFIGS:
    _register_variant(_variant)
