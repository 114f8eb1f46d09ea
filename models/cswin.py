"""CSWin Transformer: cross-shaped window self-attention with LePE positional encoding.

Two official models, two sets of parameter names, both kept so official state dicts load with ``strict=True``:
the ImageNet classifier (microsoft/CSWin-Transformer models/cswin.py: ``norm``, ``head``) and the dense
backbone of its segmentation code (segmentation/backbone/cswin_transformer.py: ``norm1``..``norm4``, maps
zero-padded up to the stripe width so any input size works).

Departures from the official forward, none of which changes a parameter, a count or an output beyond float
rounding:

- Tokens stay a (B, H, W, C) map between blocks, so a stage's merge conv, the LePE convs and the dense outputs
  read it as a channels-last map without a copy.
- A stripe split is one reshape: horizontal stripes of q, k, v are views of the qkv projection; vertical
  stripes are horizontal stripes of the transposed map (one copy, which also zero-pads), with the LePE kernel
  transposed to match. Both halves write into one buffer for the projection; residual sums are in place.
- Attention runs through ``F.scaled_dot_product_attention`` (``use_sdpa=True``, the same scale); ``use_sdpa=False``
  keeps the official ``(q * scale) @ k^T``, softmax, ``@ v`` matmuls, which plain fvcore counts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .heads import EncoderDecoder, SegformerHead
from .layers import DropPath, drop_path_rates

__all__ = ["CSWinBlock", "CSWinTransformer", "CSWin", "LePEAttention"]


class LePEAttention(nn.Module):
    """Multi-head attention inside stripes, plus a depthwise conv on V (LePE) added to the output.

    ``stripe`` is "vertical" (full height, ``split_size`` wide), "horizontal" (``split_size`` high, full
    width) or None (one window over the whole map, the last stage). A map that the stripes do not tile is
    zero-padded evenly on both sides (after the qkv projection, unmasked, as the official dense code does)
    and cropped back. The LePE conv sees each stripe alone, zero-padded at its borders, as officially.
    """

    def __init__(self, dim: int, num_heads: int, split_size: int, stripe: str | None, use_sdpa: bool = True):
        super().__init__()
        if stripe not in ("vertical", "horizontal", None):
            raise ValueError(f"stripe must be 'vertical', 'horizontal' or None, not {stripe!r}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.split_size = split_size
        self.stripe = stripe
        self.use_sdpa = use_sdpa
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
        """q, k, v: (B, H, W, c) views; writes the attended (B, H, W, c) map into ``out``.

        A vertical stripe of the map is a horizontal stripe of its transpose, so both run as stripes of
        ``rows`` rows spanning the full width S: a stripe is then ``rows * S`` consecutive tokens.
        """
        vertical = self.stripe == "vertical"
        if vertical:
            q, k, v, out = (t.transpose(1, 2) for t in (q, k, v, out))
        B, R, S, c = q.shape
        rows = R if self.stripe is None else self.split_size
        pad = -R % rows
        top = pad // 2
        if pad:  # F.pad returns a contiguous copy; a transposed map without padding needs one too
            q, k, v = (F.pad(t, (0, 0, 0, 0, top, pad - top)) for t in (q, k, v))
        heads, dim_head = self.num_heads, c // self.num_heads
        # (B * stripes, heads, rows * S, dim_head): a view where the map is row-major, else one copy
        q, k, v = (t.reshape(-1, rows * S, heads, dim_head).transpose(1, 2) for t in (q, k, v))
        if self.use_sdpa:
            attended = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            attended = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        # LePE on each stripe as a (rows, S) map; on a transposed map the kernel is transposed
        stripes = v.transpose(1, 2).reshape(-1, rows, S, c).permute(0, 3, 1, 2)
        weight = self.get_v.weight.mT if vertical else self.get_v.weight
        lepe = F.conv2d(stripes, weight, self.get_v.bias, padding=1, groups=c).permute(0, 2, 3, 1)
        lepe = lepe.reshape(-1, rows * S, heads, dim_head).add_(attended.transpose(1, 2))
        out.copy_(lepe.reshape(B, R + pad, S, c)[:, top:top + R])


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
                 qkv_bias: bool = True, drop_path: float = 0.0, whole_map: bool = False, use_sdpa: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        if whole_map:
            self.attns = nn.ModuleList([LePEAttention(dim, num_heads, split_size, None, use_sdpa)])
        else:
            self.attns = nn.ModuleList(
                LePEAttention(dim // 2, num_heads // 2, split_size, stripe, use_sdpa)
                for stripe in ("vertical", "horizontal")
            )
        self.proj = nn.Linear(dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, C)
        C = x.shape[-1]
        q, k, v = self.qkv(self.norm1(x)).unflatten(-1, (3, C)).unbind(-2)
        attended = x.new_empty(x.shape)  # every branch writes its channels here
        width = C // len(self.attns)
        for i, attn in enumerate(self.attns):
            part = slice(i * width, (i + 1) * width)
            attn(q[..., part], k[..., part], v[..., part], attended[..., part])
        x = self.drop_path(self.proj(attended)).add_(x)
        return self.drop_path(self.mlp(self.norm2(x))).add_(x)


def _to_map(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) tokens -> (B, C, H, W) in channels-last memory, without a copy."""
    return x.permute(0, 3, 1, 2)


class ToTokenMap(nn.Module):
    """(B, C, H, W) -> (B, H, W, C); holds index 1 of ``stage1_conv_embed`` (einops' Rearrange officially)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class MergeBlock(nn.Module):
    """3x3 stride-2 conv between stages, then LayerNorm."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H / 2, W / 2, C_out)
        return self.norm(self.conv(_to_map(x)).permute(0, 2, 3, 1))


class _CSWinStages(nn.Module):
    """What the classifier and the dense backbone share: stem, four stages of blocks, three merges.

    ``whole_map[i]`` makes stage i attend over the whole map (one branch); the last stage always does.
    """

    def __init__(self, embed_dim: int, depths: list[int], num_heads: list[int], split_sizes: list[int],
                 whole_map: list[bool], mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path_rate: float = 0.0, in_chans: int = 3, use_sdpa: bool = True):
        super().__init__()
        self.dims = [embed_dim * 2 ** i for i in range(len(depths))]
        self.stage1_conv_embed = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim, 7, stride=4, padding=2), ToTokenMap(), nn.LayerNorm(embed_dim)
        )
        dpr = iter(drop_path_rates(drop_path_rate, depths))
        for i, (dim, depth, heads, split, whole) in enumerate(
                zip(self.dims, depths, num_heads, split_sizes, whole_map), start=1):
            if i > 1:
                self.add_module(f"merge{i - 1}", MergeBlock(self.dims[i - 2], dim))
            self.add_module(f"stage{i}", nn.ModuleList(
                CSWinBlock(dim, heads, split, mlp_ratio, qkv_bias, next(dpr), whole_map=whole, use_sdpa=use_sdpa)
                for _ in range(depth)
            ))

    def forward_stages(self, x: torch.Tensor):
        """Yield each stage's output tokens as a (B, H, W, C) map."""
        # a channels-last image makes the stem conv write channels-last, i.e. the token map itself
        x = self.stage1_conv_embed(x.contiguous(memory_format=torch.channels_last))
        for i in range(1, len(self.dims) + 1):
            if i > 1:
                x = getattr(self, f"merge{i - 1}")(x)
            for block in getattr(self, f"stage{i}"):
                x = block(x)
            yield x


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
        *_, tokens = self.forward_stages(x)
        return self.head(self.norm(tokens).mean(dim=(1, 2)))


class CSWin(_CSWinStages):
    """The dense backbone: a LayerNorm per stage output; returns four maps at strides 4, 8, 16, 32 (channels-last)."""

    def __init__(self, embed_dim: int, depths: list[int], num_heads: list[int],
                 split_sizes: list[int] = (1, 2, 7, 7), **kwargs):
        whole_map = [i == len(depths) - 1 for i in range(len(depths))]
        super().__init__(embed_dim, depths, num_heads, split_sizes, whole_map, **kwargs)
        for i, dim in enumerate(self.dims, start=1):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [_to_map(getattr(self, f"norm{i}")(tokens)) for i, tokens in enumerate(self.forward_stages(x), start=1)]


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
    shared = dict(family="cswin", variant=variant, attention="sdpa")
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
            reconstruction="no official CSWin + SegFormer-head code: the official dense backbone under HRViT's "
                           "SegformerHead, head width chosen by hrvit-bench",
            **shared,
            notes=f"No official CSWin+SegFormer code exists. Ours: the dense backbone with models.heads."
                  f"SegformerHead configured as the HRViT repository does ({_HEAD_CODE}: mlp_norm=False, "
                  f"mlp_act=False, dropout 0.1), channels {head_channels} (256 for T, 768 for S/B, pairing head "
                  "width with model size as SegFormer does); logits resized to the input size.",
        )(seg)


for _variant in CSWIN_CONFIGS:
    _register_variant(_variant)
