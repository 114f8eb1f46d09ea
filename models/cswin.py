"""CSWin Transformer: cross-shaped window self-attention with LePE positional encoding.

Two official models, two sets of parameter names, both kept so official state dicts load with ``strict=True``:
the ImageNet classifier (microsoft/CSWin-Transformer models/cswin.py: ``norm``, ``head``) and the dense
backbone of its segmentation code (segmentation/backbone/cswin_transformer.py: ``norm1``..``norm4``, maps
zero-padded up to the stripe width so any input size works).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .heads import EncoderDecoder, SegformerHead
from .layers import DropPath, drop_path_rates

__all__ = ["CSWinBlock", "CSWinTransformer", "CSWin", "LePEAttention"]


def _to_windows(x: torch.Tensor, win_h: int, win_w: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * windows, C, win_h, win_w), windows in row-major order."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // win_h, win_h, W // win_w, win_w).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, C, win_h, win_w)


def _from_windows(x: torch.Tensor, batch: int, H: int, W: int) -> torch.Tensor:
    _, C, win_h, win_w = x.shape
    x = x.reshape(batch, H // win_h, W // win_w, C, win_h, win_w).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, C, H, W)


class LePEAttention(nn.Module):
    """Multi-head attention inside stripes, plus a depthwise conv on V (LePE) added to the output.

    ``stripe`` is "vertical" (full height, ``split_size`` wide), "horizontal" (``split_size`` high, full
    width) or None (one window over the whole map, the last stage). A map that the stripes do not tile is
    zero-padded evenly on both sides (after the qkv projection, unmasked, as the official dense code does)
    and cropped back.
    """

    def __init__(self, dim: int, num_heads: int, split_size: int, stripe: str | None):
        super().__init__()
        if stripe not in ("vertical", "horizontal", None):
            raise ValueError(f"stripe must be 'vertical', 'horizontal' or None, not {stripe!r}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.split_size = split_size
        self.stripe = stripe
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def window(self, H: int, W: int) -> tuple[int, int]:
        if self.stripe == "vertical":
            return H, self.split_size
        if self.stripe == "horizontal":
            return self.split_size, W
        return H, W

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B', C, h, w) windows -> (B', heads, h * w, C // heads)."""
        n, C = x.shape[:2]
        return x.reshape(n, self.num_heads, C // self.num_heads, -1).transpose(-2, -1)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: (B, C, H, W) maps; returns the attended (B, C, H, W) map."""
        B, C, H, W = q.shape
        win_h, win_w = self.window(H, W)
        pad_h, pad_w = -H % win_h, -W % win_w
        top, left = pad_h // 2, pad_w // 2
        if pad_h or pad_w:
            q, k, v = (F.pad(t, (left, pad_w - left, top, pad_h - top)) for t in (q, k, v))
        q, k, v = (_to_windows(t, win_h, win_w) for t in (q, k, v))
        lepe = self.get_v(v)
        q, k, v, lepe = (self._heads(t) for t in (q, k, v, lepe))
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v + lepe).transpose(-2, -1).reshape(-1, C, win_h, win_w)
        out = _from_windows(out, B, H + pad_h, W + pad_w)
        return out[:, :, top:top + H, left:left + W]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CSWinBlock(nn.Module):
    """Half the channels (and heads) attend in vertical stripes, half in horizontal ones; or, with
    ``whole_map``, all channels attend over the whole map."""

    def __init__(self, dim: int, num_heads: int, split_size: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path: float = 0.0, whole_map: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        if whole_map:
            self.attns = nn.ModuleList([LePEAttention(dim, num_heads, split_size, None)])
        else:
            self.attns = nn.ModuleList(
                LePEAttention(dim // 2, num_heads // 2, split_size, stripe) for stripe in ("vertical", "horizontal")
            )
        self.proj = nn.Linear(dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).transpose(1, 2).reshape(B, 3, C, H, W).unbind(1)
        parts = zip(q.chunk(len(self.attns), 1), k.chunk(len(self.attns), 1), v.chunk(len(self.attns), 1))
        attended = torch.cat([attn(*qkv) for attn, qkv in zip(self.attns, parts)], dim=1)
        x = x + self.drop_path(self.proj(attended.flatten(2).transpose(1, 2)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FlattenTokens(nn.Module):
    """(B, C, H, W) -> (B, H*W, C); holds index 1 of ``stage1_conv_embed`` (einops' Rearrange officially)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class MergeBlock(nn.Module):
    """3x3 stride-2 conv between stages, then LayerNorm."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, int, int]:
        x = self.conv(x.transpose(1, 2).reshape(x.shape[0], -1, H, W))
        H, W = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class _CSWinStages(nn.Module):
    """What the classifier and the dense backbone share: stem, four stages of blocks, three merges.

    ``whole_map[i]`` makes stage i attend over the whole map (one branch); the last stage always does.
    """

    def __init__(self, embed_dim: int, depths: list[int], num_heads: list[int], split_sizes: list[int],
                 whole_map: list[bool], mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path_rate: float = 0.0, in_chans: int = 3):
        super().__init__()
        self.dims = [embed_dim * 2 ** i for i in range(len(depths))]
        self.stage1_conv_embed = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim, 7, stride=4, padding=2), FlattenTokens(), nn.LayerNorm(embed_dim)
        )
        dpr = iter(drop_path_rates(drop_path_rate, depths))
        for i, (dim, depth, heads, split, whole) in enumerate(
                zip(self.dims, depths, num_heads, split_sizes, whole_map), start=1):
            if i > 1:
                self.add_module(f"merge{i - 1}", MergeBlock(self.dims[i - 2], dim))
            self.add_module(f"stage{i}", nn.ModuleList(
                CSWinBlock(dim, heads, split, mlp_ratio, qkv_bias, next(dpr), whole_map=whole) for _ in range(depth)
            ))

    def forward_stages(self, x: torch.Tensor):
        """Yield each stage's output tokens with their map size."""
        x = self.stage1_conv_embed[0](x)
        H, W = x.shape[2:]
        x = self.stage1_conv_embed[2](self.stage1_conv_embed[1](x))
        for i in range(1, len(self.dims) + 1):
            if i > 1:
                x, H, W = getattr(self, f"merge{i - 1}")(x, H, W)
            for block in getattr(self, f"stage{i}"):
                x = block(x, H, W)
            yield x, H, W


class CSWinTransformer(_CSWinStages):
    """The ImageNet classifier: final LayerNorm, mean over tokens, Linear head.

    As in the official code, ``img_size`` fixes the branch layout: a stage whose map side equals its stripe
    width attends over the whole map (never the case at 224 with stripes 1-2-7-7).
    """

    def __init__(self, embed_dim: int, depths: list[int], num_heads: list[int],
                 split_sizes: list[int] = (1, 2, 7, 7), num_classes: int = 1000, img_size: int = 224, **kwargs):
        last = len(depths) - 1
        whole_map = [i == last or img_size // (4 * 2 ** i) == split_sizes[i] for i in range(len(depths))]
        super().__init__(embed_dim, depths, num_heads, split_sizes, whole_map, **kwargs)
        self.norm = nn.LayerNorm(self.dims[-1])
        self.head = nn.Linear(self.dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *_, (tokens, _, _) = self.forward_stages(x)
        return self.head(self.norm(tokens).mean(dim=1))


class CSWin(_CSWinStages):
    """The dense backbone: a LayerNorm per stage output; returns four maps at strides 4, 8, 16, 32."""

    def __init__(self, embed_dim: int, depths: list[int], num_heads: list[int],
                 split_sizes: list[int] = (1, 2, 7, 7), **kwargs):
        whole_map = [i == len(depths) - 1 for i in range(len(depths))]
        super().__init__(embed_dim, depths, num_heads, split_sizes, whole_map, **kwargs)
        for i, dim in enumerate(self.dims, start=1):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [
            getattr(self, f"norm{i}")(tokens).transpose(1, 2).reshape(tokens.shape[0], -1, H, W)
            for i, (tokens, H, W) in enumerate(self.forward_stages(x), start=1)
        ]


CSWIN_CONFIGS = {
    "t": dict(embed_dim=64, depths=[1, 2, 21, 1], num_heads=[2, 4, 8, 16], head_channels=256),
    "s": dict(embed_dim=64, depths=[2, 4, 32, 2], num_heads=[2, 4, 8, 16], head_channels=768),
    "b": dict(embed_dim=96, depths=[2, 4, 32, 2], num_heads=[4, 8, 16, 32], head_channels=768),
}
_CSWIN_SHARED = dict(split_sizes=[1, 2, 7, 7], mlp_ratio=4.0)

_COMMIT = "f111ae2f771df32006e7afd7916835dd67d4cb9d"
_CLS_CODE = f"microsoft/CSWin-Transformer@{_COMMIT}:models/cswin.py"
_DENSE_CODE = f"microsoft/CSWin-Transformer@{_COMMIT}:segmentation/backbone/cswin_transformer.py"
_HRVIT_COMMIT = "6a63b5bc829b711073019cffdcc9beb6e81547a9"
_HEAD_CODE = f"facebookresearch/HRViT@{_HRVIT_COMMIT}:segmentation/mmseg/models/decode_heads/segformer_head.py"
_PAPER = "Dong et al., CSWin Transformer, CVPR 2022"
_SEG_TASKS = {
    "seg_ade20k": ("ade20k", 150, (512, 512), ((512, 512),)),
    "seg_cityscapes": ("cityscapes", 19, (1024, 1024), ((1024, 1024), (512, 512))),
}


def _cswin_args(variant: str, overrides: dict) -> dict:
    config = {k: v for k, v in CSWIN_CONFIGS[variant].items() if k != "head_channels"}
    return {**_CSWIN_SHARED, **config, **overrides}


def _register_variant(variant: str) -> None:
    shared = dict(family="cswin", variant=variant)
    head_channels = CSWIN_CONFIGS[variant]["head_channels"]

    def classifier(**overrides) -> nn.Module:
        return CSWinTransformer(**_cswin_args(variant, overrides))

    register_model(
        name=f"cswin_{variant}", task="classification", dataset="imagenet", num_classes=1000,
        input_size=(224, 224), official_code=_CLS_CODE, reference=f"{_PAPER}; README (cls224 params/FLOPs)",
        **shared,
        notes="Official classifier names (norm, head). The official model only takes img_size inputs; this one "
              "takes any size by zero-padding maps to the stripe width like the dense code (no effect at 224).",
    )(classifier)

    def backbone(**overrides) -> nn.Module:
        return CSWin(**_cswin_args(variant, overrides))

    register_model(
        name=f"cswin_{variant}_backbone", task="backbone", input_size=(512, 512),
        paper_inputs=((512, 512), (1024, 1024)), official_code=_DENSE_CODE,
        reference=f"{_PAPER}; segmentation/README (UperNet and Semantic FPN rows include their heads)", **shared,
        notes="Dense backbone of the official segmentation code: four output LayerNorms (norm1..norm4), the last "
              "stage attends over the whole map, other maps zero-padded evenly to the stripe width (1-2-7-7).",
    )(backbone)

    for suffix, (dataset, classes, size, inputs) in _SEG_TASKS.items():
        def seg(num_classes: int = classes, **overrides) -> nn.Module:
            head_args = {k: overrides.pop(k) for k in ("channels", "dropout_ratio", "align_corners")
                         if k in overrides}
            head_args.setdefault("channels", head_channels)
            net = CSWin(**_cswin_args(variant, overrides))
            head = SegformerHead(net.dims, num_classes=num_classes, mlp_norm=False, mlp_act=False, **head_args)
            return EncoderDecoder(net, head)

        register_model(
            name=f"cswin_{variant}_{suffix}", task="segmentation", dataset=dataset, num_classes=classes,
            input_size=size, paper_inputs=inputs, official_code=_DENSE_CODE,
            reference="Gu et al., HRViT, CVPR 2022 (its CSWin + SegFormer-head rows, ADE20K and Cityscapes)",
            **shared,
            notes=f"No official CSWin+SegFormer code exists. Ours: the dense backbone with models.heads."
                  f"SegformerHead configured as the HRViT repository does ({_HEAD_CODE}: mlp_norm=False, "
                  f"mlp_act=False, dropout 0.1), channels {head_channels} (256 for T, 768 for S/B, pairing head "
                  "width with model size as SegFormer does); logits resized to the input size.",
        )(seg)


for _variant in CSWIN_CONFIGS:
    _register_variant(_variant)
