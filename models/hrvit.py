"""HRViT: multi-scale high-resolution vision transformer (Gu et al., CVPR 2022).

Follows facebookresearch/HRViT@6a63b5b: ``models/hrvit.py`` (ImageNet classifier) and
``segmentation/mmseg/models/backbones/hrvit.py`` (dense backbone). Parameter names and shapes are the official
ones, so official state dicts load with ``strict=True``: the classifier's keys are ``stem.*``, ``features.*``,
``head.*``; the segmenters' are mmseg's ``backbone.*`` and ``decode_head.*``.

Departures from the official forward, none of which changes a parameter or, at the paper's input sizes, an output:

- Tokens stay in (B, H, W, C) order and maps in channels-last memory, which saves the official permutes/copies;
  both attention halves write into one buffer, MixCFN runs its halves without split/concat, sums are in place.
- Cross-shaped attention may run through ``F.scaled_dot_product_attention`` (``use_sdpa=True``); the padded
  keys of the last stripe get the official additive -100 either way (as a key mask: the official mask also
  shifts the padded query rows, whose outputs are cropped). ``use_sdpa=False`` keeps the explicit
  ``q @ k^T`` / ``attn @ v`` matmuls, which plain fvcore counts; both forms do the same (padded) work.
- Low-to-high fusion paths upsample to the target branch's size instead of by a fixed factor, so sides that are
  not multiples of 32 work (the official code fails there on a shape mismatch); on multiples of 32 the two agree.
- No gradient checkpointing (``with_cp``): it changes memory, not the model.

The paper's ablations (section 3.3 of the seed article) are constructor switches (all on = HRViT). Where the
paper leaves the form open, the choice made here is stated with the switch:

- ``shared_kv=False``: an independent key (``to_qkv`` gives q, k, v). Paper: +9% params, +4% FLOPs.
- ``efficient_patch_embed=False``: one dense 3x3 stride-1 conv (``proj``) instead of 1x1 conv + depthwise 3x3;
  "overlapped" means a kernel larger than its stride, and every branch is already at its resolution, so the
  stride stays 1. Paper: +22% params, +17% FLOPs.
- ``mixcfn=False``: a plain MLP (fc1, GELU, fc2), i.e. MixCFN without its multi-scale depthwise convs.
  Paper: a small efficiency gain.
- ``parallel_conv=False``: no Hardswish + depthwise 3x3 path on v. Paper: very light.
- ``extra_nonlin=False``: no Hardswish after the attention and no BN after its projection. Paper: negligible.
- ``dense_fusion=False``: sparse fusion, each output fuses only its own and the adjacent resolutions (|i-j| <= 1),
  so a new branch grows from the lowest existing resolution only, as in HRNet. Paper: saves < 1% hardware cost.
- ``des=False``: no diversity-enhanced shortcut. Paper: negligible cost.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .heads import EncoderDecoder, SegformerHead
from .layers import DropPath

__all__ = ["HRViT", "HRViTClassifier", "HRVIT_CONFIGS", "ABLATIONS"]

_COMMIT = "facebookresearch/HRViT@6a63b5bc829b711073019cffdcc9beb6e81547a9"
_CLS_CODE = f"{_COMMIT}:models/hrvit.py"
_DENSE_CODE = f"{_COMMIT}:segmentation/mmseg/models/backbones/hrvit.py"
_REFERENCE = "Gu et al., HRViT, CVPR 2022 (arXiv:2111.01236); facebookresearch/HRViT README"

# Per variant: width per branch (1/4 .. 1/32), blocks per branch in each of the six modules (the paper's four
# stages hold 1, 1, 2, 2 modules), MixCFN ratio per branch, stripe width per branch.
HRVIT_CONFIGS = {
    "b1": dict(
        channels=(32, 64, 128, 256),
        depths=((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 2), (1, 1, 2, 2)),
        dim_head=32,
        mlp_ratios=(4, 4, 4, 4),
        window_sizes=(1, 2, 7, 7),
    ),
    "b2": dict(
        channels=(48, 96, 240, 384),
        depths=((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 2), (1, 1, 6, 2)),
        dim_head=24,
        mlp_ratios=(2, 3, 3, 3),
        window_sizes=(1, 2, 7, 7),
    ),
    "b3": dict(
        channels=(64, 128, 256, 512),
        depths=((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 3), (1, 1, 6, 3)),
        dim_head=32,
        mlp_ratios=(2, 2, 2, 2),
        window_sizes=(1, 2, 7, 7),
    ),
}
SEG_HEAD_CHANNELS = {"b1": 256, "b2": 256, "b3": 768}

# Section 3.3 ablations of HRViT-b1: switch name -> constructor overrides.
ABLATIONS = {
    "indep_key": dict(shared_kv=False),
    "conv_patch_embed": dict(efficient_patch_embed=False),
    "no_mixcfn": dict(mixcfn=False),
    "no_parallel_conv": dict(parallel_conv=False),
    "no_extra_nonlin": dict(extra_nonlin=False),
    "sparse_fusion": dict(dense_fusion=False),
    "no_des": dict(des=False),
}
_ABLATION_COSTS = {
    "indep_key": "independent key instead of shared key-value; paper: +9% params, +4% FLOPs",
    "conv_patch_embed": "dense 3x3 s1 conv patch embedding; paper: +22% params, +17% FLOPs",
    "no_mixcfn": "plain MLP (fc1, GELU, fc2) instead of MixCFN; paper: small efficiency gain",
    "no_parallel_conv": "no parallel depthwise conv path in attention; paper: very light",
    "no_extra_nonlin": "no Hardswish/BN after attention; paper: negligible",
    "sparse_fusion": "fusion from adjacent resolutions only; paper: saves < 1%",
    "no_des": "no diversity-enhanced shortcut; paper: negligible",
}

_MASK_VALUE = -100.0  # the official additive mask for zero-padded keys


def _to_map(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, C, H, W) in channels-last memory, without a copy."""
    return x.permute(0, 3, 1, 2)


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W, C), contiguous when ``x`` is channels-last."""
    return x.permute(0, 2, 3, 1)


class MixConv2d(nn.Module):
    """Depthwise 3x3 on the first half of the channels, depthwise 5x5 on the second.

    Holds the two convs under the official names; ``MixCFN`` runs them on its two halves.
    """

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv_3 = nn.Conv2d(half, half, 3, padding=1, groups=half)
        self.conv_5 = nn.Conv2d(channels - half, channels - half, 5, padding=2, groups=channels - half)


class MixCFN(nn.Module):
    """Linear, multi-scale depthwise conv, GELU, linear; ``mix_conv=False`` gives a plain MLP.

    With the convs, fc1 and fc2 run as two half-width products each (the same MACs), so each conv reads and
    writes whole channels-last maps and the halves are never split or concatenated.
    """

    def __init__(self, dim: int, hidden: int, mix_conv: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.conv = MixConv2d(hidden) if mix_conv else None
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, C)
        if self.conv is None:
            return self.fc2(self.act(self.fc1(x)))
        convs = (self.conv.conv_3, self.conv.conv_5)
        widths = [conv.in_channels for conv in convs]
        w1, b1, w2 = self.fc1.weight.split(widths), self.fc1.bias.split(widths), self.fc2.weight.split(widths, 1)
        h3, h5 = (self.act(_to_tokens(conv(_to_map(F.linear(x, w, b))))) for conv, w, b in zip(convs, w1, b1))
        return F.linear(h3, w2[0], self.fc2.bias).add_(F.linear(h5, w2[1]))


class DES(nn.Module):
    """Diversity-enhanced shortcut: a Kronecker-factored projection (p x p on the right, k x k on the left)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        n = min(in_features, out_features)
        if n % 2:
            raise ValueError(f"DES needs an even width, got {n}")
        e = int(math.log2(n))
        self.p = 2 ** (e - e // 2)
        self.k_in, self.k_out = in_features // self.p, out_features // self.p
        self.proj_right = nn.Linear(self.p, self.p)
        self.act = nn.GELU()
        self.proj_left = nn.Linear(self.k_in, self.k_out)

    def forward(self, x: torch.Tensor, add_to: torch.Tensor) -> torch.Tensor:
        """Returns ``add_to + DES(x)``, summed in place into ``add_to`` (contiguous, same shape as ``x``).

        The official code transposes every token's (k, p) matrix twice. Here the left projection runs as one
        (k_out x k_in) @ (k_in x tokens*p) product: the only copy moves whole p-wide rows, and the MACs are the
        official ones.
        """
        n = x.numel() // x.shape[-1]
        y = self.act(self.proj_right(x.reshape(n, self.k_in, self.p)))
        y = y.transpose(0, 1).reshape(self.k_in, n * self.p)
        y = torch.addmm(self.proj_left.bias[:, None], self.proj_left.weight, y)
        add_to.view(n, self.k_out, self.p).add_(y.view(self.k_out, n, self.p).transpose(0, 1))
        return add_to


class CrossShapedAttention(nn.Module):
    """Half the channels attend within horizontal stripes of ``window_size`` rows, half within vertical ones.

    Keys are the values (shared key-value) unless ``shared_kv=False``. A Hardswish + depthwise 3x3 conv on the
    values runs in parallel; then Hardswish, projection and a zero-initialised BN.
    """

    def __init__(self, dim: int, dim_head: int, window_size: int, shared_kv: bool = True,
                 parallel_conv: bool = True, extra_nonlin: bool = True, use_sdpa: bool = True):
        super().__init__()
        self.dim = dim
        self.dim_head = dim // (dim // dim_head)
        self.window_size = window_size
        self.shared_kv = shared_kv
        self.use_sdpa = use_sdpa
        self.to_qkv = nn.Linear(dim, (2 if shared_kv else 3) * dim)
        self.attn_act = nn.Hardswish(inplace=True) if extra_nonlin else None
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))
        if extra_nonlin:
            self.attn_bn = nn.BatchNorm1d(dim)
            nn.init.zeros_(self.attn_bn.weight)
            nn.init.zeros_(self.attn_bn.bias)
        else:
            self.attn_bn = None
        self.parallel_conv = (
            nn.Sequential(nn.Hardswish(), nn.Conv2d(dim, dim, 3, padding=1, groups=dim)) if parallel_conv else None
        )

    def _stripes(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
        """Attention within stripes of ``window_size`` rows spanning the full width.

        ``q``, ``k``, ``v``: (B, R, S, c); writes (B, R + pad, S, c) into ``out``, R + pad a multiple of the width.
        """
        B, R, S, c = q.shape
        ws = self.window_size
        dim_head, scale = (c, c ** -0.5) if c < self.dim_head else (self.dim_head, self.dim_head ** -0.5)
        heads = c // dim_head
        pad = -R % ws
        if pad:
            q, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, v))
            k = v if self.shared_kv else F.pad(k, (0, 0, 0, 0, 0, pad))
        n_win, length = (R + pad) // ws, ws * S

        def windows(t: torch.Tensor) -> torch.Tensor:  # (B * n_win, heads, ws * S, d)
            return t.reshape(B * n_win, length, heads, c // heads).transpose(1, 2)

        q, v = windows(q), windows(v)
        k = v if self.shared_kv else windows(k)
        mask = None
        if pad:  # the zero rows padded into the last stripe are keys no real query may see
            mask = q.new_zeros(B, n_win, 1, 1, length)
            mask[:, -1, ..., (ws - pad) * S:] = _MASK_VALUE
            mask = mask.flatten(0, 1)
        if self.use_sdpa:
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        else:
            attn = q.matmul(k.transpose(-2, -1)).mul(scale)
            if mask is not None:
                attn = attn + mask
            attn = attn.softmax(dim=-1).matmul(v)
        # (B * n_win, heads, ws * S, d) -> (B, n_win, ws, S, heads, d), written in place
        attn = attn.unflatten(0, (B, n_win)).unflatten(3, (ws, S)).permute(0, 1, 3, 4, 2, 5)
        out.unflatten(1, (n_win, ws)).unflatten(-1, (heads, -1)).copy_(attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, C)
        B, H, W, C = x.shape
        half, ws = C // 2, self.window_size
        qkv = self.to_qkv(x).unflatten(-1, (-1, C)).unbind(-2)
        q, v = qkv[0], qkv[-1]
        k = v if self.shared_kv else qkv[1]
        # One buffer for both halves, padded to whole stripes: rows use [:, :, :W, :half], columns [:, :H, :, half:].
        out = x.new_empty(B, H + (-H % ws), W + (-W % ws), C)
        self._stripes(q[..., :half], k[..., :half], v[..., :half], out[:, :, :W, :half])
        self._stripes(*(t[..., half:].transpose(1, 2) for t in (q, k, v)), out[:, :H, :, half:].transpose(1, 2))
        out = out[:, :H, :W]
        if self.parallel_conv is not None:  # in place when unpadded; a padded view gets a contiguous sum
            conv = _to_tokens(self.parallel_conv(_to_map(v)))
            out = out.add_(conv) if out.is_contiguous() else out + conv
        if self.attn_act is not None:
            out = self.attn_act(out)
        out = self.to_out(out)
        if self.attn_bn is not None:
            out = self.attn_bn(out.reshape(-1, C)).view(out.shape)
        return out


class HRViTBlock(nn.Module):
    """x + attention(LN(x)) + DES(x), then x + MixCFN(LN(x)); drop path on both branches."""

    def __init__(self, dim: int, dim_head: int, window_size: int, mlp_ratio: float, drop_path: float = 0.0,
                 shared_kv: bool = True, parallel_conv: bool = True, extra_nonlin: bool = True,
                 mixcfn: bool = True, des: bool = True, use_sdpa: bool = True):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = CrossShapedAttention(dim, dim_head, window_size, shared_kv=shared_kv,
                                         parallel_conv=parallel_conv, extra_nonlin=extra_nonlin, use_sdpa=use_sdpa)
        self.des = DES(dim, dim) if des else None
        self.attn_drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = MixCFN(dim, int(dim * mlp_ratio), mix_conv=mixcfn)
        self.ffn_drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, C)
        y = self.attn(self.attn_norm(x))
        if self.des is not None:
            y = self.des(x, add_to=y)
        x = self.attn_drop_path(y).add_(x)
        return self.ffn_drop_path(self.ffn(self.ffn_norm(x))).add_(x)


class PatchEmbed(nn.Module):
    """Efficient embedding (1x1 conv, depthwise 3x3) or, for the ablation, one dense 3x3 conv; then LayerNorm."""

    def __init__(self, in_channels: int, dim: int, efficient: bool = True):
        super().__init__()
        if efficient:
            self.proj = nn.Sequential(nn.Conv2d(in_channels, dim, 1), nn.Conv2d(dim, dim, 3, padding=1, groups=dim))
        else:
            self.proj = nn.Conv2d(in_channels, dim, 3, padding=1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, H, W, C)
        return self.norm(_to_tokens(self.proj(x)))


class FusionBlock(nn.Module):
    """Cross-resolution fusion: each output sums paths from the inputs, then GELU.

    High to low resolution: strided depthwise conv, BN, 1x1 conv, BN. Low to high: 1x1 conv, BN, nearest
    upsampling. A branch with no input of its own (a new, lower resolution) is made from the others.
    """

    def __init__(self, in_channels: tuple[int, ...], out_channels: tuple[int, ...], dense: bool = True):
        super().__init__()
        self.sources = [
            [j for j in range(len(in_channels)) if dense or abs(i - j) <= 1] for i in range(len(out_channels))
        ]
        self.blocks = nn.ModuleList(
            nn.ModuleList(self._path(in_channels[j], out_channels[i], i - j) for j in sources)
            for i, sources in enumerate(self.sources)
        )
        self.act = nn.ModuleList(nn.GELU() for _ in out_channels)

    @staticmethod
    def _path(in_ch: int, out_ch: int, levels_down: int) -> nn.Module:
        if levels_down == 0:
            return nn.Identity()
        if levels_down > 0:
            stride = 2 ** levels_down
            return nn.Sequential(
                nn.Conv2d(in_ch, in_ch, stride + 1, stride=stride, padding=stride // 2, groups=in_ch, bias=False),
                nn.BatchNorm2d(in_ch),
                nn.Conv2d(in_ch, out_ch, 1),
                nn.BatchNorm2d(out_ch),
            )
        return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch))

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for i, (sources, paths, act) in enumerate(zip(self.sources, self.blocks, self.act)):
            total = None
            for j, path in zip(sources, paths):
                y = path(x[j])
                if j > i:
                    y = F.interpolate(y, size=x[i].shape[-2:], mode="nearest")
                total = y if total is None else total + y
            outs.append(act(total))
        return outs


class HRViTStage(nn.Module):
    """One module's transformer part: per branch a patch embedding, blocks, and a final LayerNorm."""

    def __init__(self, in_channels: tuple[int, ...], channels: tuple[int, ...], depths: tuple[int, ...],
                 dim_head: int, window_sizes: tuple[int, ...], mlp_ratios: tuple[float, ...],
                 drop_path_rates: list[float], efficient_patch_embed: bool = True, **block_switches):
        super().__init__()
        self.patch_embed = nn.ModuleList(
            PatchEmbed(c_in, c, efficient=efficient_patch_embed) for c_in, c in zip(in_channels, channels)
        )
        self.branches = nn.ModuleList(
            nn.ModuleList(
                HRViTBlock(c, dim_head, ws, ratio, drop_path_rates[n], **block_switches) for n in range(depth)
            )
            for c, depth, ws, ratio in zip(channels, depths, window_sizes, mlp_ratios)
        )
        self.norm = nn.ModuleList(nn.LayerNorm(c) for c in channels)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for xi, embed, blocks, norm in zip(x, self.patch_embed, self.branches, self.norm):
            xi = embed(xi)
            for block in blocks:
                xi = block(xi)
            outs.append(_to_map(norm(xi)))
        return outs


class HRViTStem(nn.Module):
    """Two 3x3 stride-2 convs with BN and ReLU: 1/4 resolution."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels // 2, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels // 2)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels // 2, out_channels, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))


class HRViT(nn.Module):
    """The dense backbone: stem, then six (fusion, stage) modules; returns four maps at 1/4 .. 1/32.

    Ablation switches (all True is HRViT; see the module docstring for the form chosen and the paper's cost):
    ``shared_kv`` (False: independent key, +9% params, +4% FLOPs), ``efficient_patch_embed`` (False: dense 3x3
    conv embedding, +22% params, +17% FLOPs), ``mixcfn`` (False: plain MLP, small gain), ``parallel_conv``
    (False: very light saving), ``extra_nonlin`` (False: negligible saving), ``dense_fusion`` (False: sparse,
    saves < 1%), ``des`` (False: negligible saving). ``use_sdpa=False`` keeps explicit attention matmuls.
    """

    def __init__(self, channels: tuple[int, ...], depths: tuple[tuple[int, ...], ...], dim_head: int,
                 mlp_ratios: tuple[float, ...], window_sizes: tuple[int, ...], in_chans: int = 3,
                 stem_channels: int = 64, drop_path_rate: float = 0.0, shared_kv: bool = True,
                 efficient_patch_embed: bool = True, mixcfn: bool = True, parallel_conv: bool = True,
                 extra_nonlin: bool = True, dense_fusion: bool = True, des: bool = True, use_sdpa: bool = True):
        super().__init__()
        self.channels = tuple(channels)
        self.stem = HRViTStem(in_chans, stem_channels)
        # One drop-path rate per block depth within a module, rising over the modules (as the official code).
        module_depths = [max(d) for d in depths]
        rates = torch.linspace(0, drop_path_rate, sum(module_depths), device="cpu").tolist()
        modules, widths = [], (stem_channels,)
        for depth, module_depth in zip(depths, module_depths):
            out_widths = self.channels[: len(depth)]
            fused = widths if len(widths) == len(out_widths) else widths + out_widths[-1:]
            modules.append(FusionBlock(widths, fused, dense=dense_fusion))
            modules.append(HRViTStage(
                fused, out_widths, depth, dim_head, window_sizes, mlp_ratios, rates[:module_depth],
                efficient_patch_embed=efficient_patch_embed, shared_kv=shared_kv, parallel_conv=parallel_conv,
                extra_nonlin=extra_nonlin, mixcfn=mixcfn, des=des, use_sdpa=use_sdpa,
            ))
            rates, widths = rates[module_depth:], out_widths
        self.features = nn.Sequential(*modules)

    def init_weights(self) -> "HRViT":
        """The mmseg backbone's initialisation: truncated-normal linears, unit norms (attention BNs stay zero)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.features([self.stem(x.contiguous(memory_format=torch.channels_last))])


class Bottleneck(nn.Module):
    """ResNet bottleneck (expansion 4) with a projection shortcut, as in HRNet's classification head."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                        nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


class ClassificationHead(nn.Module):
    """HRNet-C head: widen each branch, fold the branches downwards, 2048-d, pool, classify."""

    def __init__(self, in_channels: tuple[int, ...], num_classes: int = 1000, dropout: float = 0.1,
                 head_planes: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        widths = [p * Bottleneck.expansion for p in head_planes]
        self.incre_modules = nn.ModuleList(
            nn.Sequential(Bottleneck(c, p)) for c, p in zip(in_channels, head_planes)
        )
        self.downsamp_modules = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.final_layer = nn.Sequential(nn.Conv2d(widths[-1], 2048, 1), nn.BatchNorm2d(2048), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2048, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        y = self.incre_modules[0](features[0])
        for incre, down, x in zip(self.incre_modules[1:], self.downsamp_modules, features[1:]):
            y = incre(x) + down(y)
        y = self.pool(self.final_layer(y)).flatten(1)
        return self.classifier(self.dropout(y))


class HRViTClassifier(HRViT):
    """HRViT with the HRNet-C classification head (the official ``HRViT`` of models/hrvit.py)."""

    def __init__(self, num_classes: int = 1000, head_dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.head = ClassificationHead(self.channels, num_classes, head_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(super().forward(x))


def _classifier(variant: str, **overrides) -> HRViTClassifier:
    return HRViTClassifier(**dict(HRVIT_CONFIGS[variant], **overrides))


def _backbone(variant: str, **overrides) -> HRViT:
    return HRViT(**dict(HRVIT_CONFIGS[variant], **overrides)).init_weights()


def _segmenter(variant: str, num_classes: int, **overrides) -> EncoderDecoder:
    backbone = _backbone(variant, **overrides)
    head = SegformerHead(backbone.channels, SEG_HEAD_CHANNELS[variant], num_classes, mlp_norm=False, mlp_act=False)
    return EncoderDecoder(backbone, head)


# Registry metadata per task, keyed by the name suffix.
_TASKS = {
    "": dict(task="classification", dataset="imagenet", num_classes=1000, input_size=(224, 224),
             official_code=_CLS_CODE),
    "_backbone": dict(task="backbone", input_size=(512, 512), paper_inputs=((512, 512), (1024, 1024)),
                      official_code=_DENSE_CODE),
    "_seg_ade20k": dict(task="segmentation", dataset="ade20k", num_classes=150, input_size=(512, 512),
                        official_code=_DENSE_CODE),
    "_seg_cityscapes": dict(task="segmentation", dataset="cityscapes", num_classes=19, input_size=(1024, 1024),
                            paper_inputs=((1024, 1024), (512, 512)), official_code=_DENSE_CODE,
                            notes="published FLOPs match a 512x512 input"),
}
_B2_HEAD_NOTE = ("decode head in_channels [48, 96, 240, 384]: the official b2 configs say [48, 96, 192, 384], "
                 "which does not fit the backbone's 240-wide third branch")


def _register(name: str, suffix: str, variant: str, overrides: dict | None = None, notes: str = "",
              ablation: str | None = None) -> None:
    meta = dict(_TASKS[suffix])
    meta["notes"] = "; ".join(filter(None, (notes, "" if ablation else meta.get("notes", ""))))
    overrides = overrides or {}
    if suffix == "":
        builder = partial(_classifier, variant, **overrides)
    elif suffix == "_backbone":
        builder = partial(_backbone, variant, **overrides)
    else:
        builder = partial(_segmenter, variant, meta["num_classes"], **overrides)
    reference = _REFERENCE + (", ablation study" if ablation else "")
    reconstruction = (f"the paper's {ablation} ablation, built from its text: the official code has no such switch"
                      if ablation else None)
    register_model(name=name, family="hrvit", variant=variant, reference=reference, ablation=ablation,
                   attention="sdpa" if overrides.get("use_sdpa", True) else "explicit",
                   reconstruction=reconstruction, **meta)(builder)


def _register_all() -> None:
    """Every variant x task, the b3 Cityscapes model with the paper's 1-2-3-9 windows, and the b1 ablations."""
    for variant in HRVIT_CONFIGS:
        for suffix in _TASKS:
            b2_seg = variant == "b2" and suffix.startswith("_seg")
            _register(f"hrvit_{variant}{suffix}", suffix, variant, notes=_B2_HEAD_NOTE if b2_seg else "")
    _register("hrvit_b3_w1239_seg_cityscapes", "_seg_cityscapes", "b3", dict(window_sizes=(1, 2, 3, 9)),
              notes="stripe widths 1-2-3-9, which the paper used on Cityscapes (the release ships 1-2-7-7)")
    for switch, overrides in ABLATIONS.items():
        for suffix in ("", "_seg_cityscapes"):
            _register(f"hrvit_b1_{switch}{suffix}", suffix, "b1", overrides, _ABLATION_COSTS[switch], switch)


_register_all()
