"""HRNetV2-W18/W32/W48: the HRNet-C classifier, the dense backbone, the HRNetV2 and the OCR segmentation heads.

Follows HRNet/HRNet-Image-Classification (lib/models/cls_hrnet.py) and HRNet/HRNet-Semantic-Segmentation
(lib/models/seg_hrnet.py, seg_hrnet_ocr.py on the HRNet-OCR branch). Parameter names and shapes are the
official ones, so official state dicts load with ``strict=True``. As in the official segmentation models, the
heads sit beside the backbone at the top level (``conv1``, ``stage4``, ..., ``last_layer``), not under
``backbone.*``: every model here is a subclass of the backbone.

Two behaviours differ between the official classification and segmentation code and are kept per model:
the low-to-high fusion path upsamples with nearest (classification) or bilinear (segmentation) interpolation.
Both resize to the target map's exact size, so odd input sizes work; at multiples of 32 this is the official
scale-factor upsampling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .layers import map_to_tokens

__all__ = ["HighResolutionNet", "HRNetClassifier", "HRNetV2Seg", "HRNetOCR"]

BN_MOMENTUM = 0.1


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = True,
             bias: bool = False) -> nn.Sequential:
    layers = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=bias),
        nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)).add_(shortcut))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)).add_(shortcut))


def make_res_layer(block: type[nn.Module], in_channels: int, planes: int, num_blocks: int,
                   stride: int = 1) -> nn.Sequential:
    """``num_blocks`` residual blocks; the first gets a 1x1 projection shortcut when the shape changes."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = _conv_bn(in_channels, out_channels, 1, stride, relu=False)
    layers = [block(in_channels, planes, stride, downsample)]
    layers += [block(out_channels, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


def _fuse_path(channels: list[int], src: int, dst: int) -> nn.Module | None:
    """The path from branch ``src`` to branch ``dst`` in HRNet's fusion (``None`` on the identity)."""
    if src == dst:
        return None
    if src > dst:  # lower resolution: 1x1 conv + BN, then upsampled in forward
        return _conv_bn(channels[src], channels[dst], 1, relu=False)
    # higher resolution: one stride-2 3x3 conv per halving; only the last one changes width and has no ReLU
    steps = dst - src
    return nn.Sequential(*(
        _conv_bn(channels[src], channels[dst] if k == steps - 1 else channels[src], 3, 2, relu=k < steps - 1)
        for k in range(steps)
    ))


def resize(x: torch.Tensor, size, mode: str, align_corners: bool | None = None) -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)


class ExchangeUnit(nn.Module):
    """HRNet's exchange unit: a stack on every branch, then every output sums every input brought to its resolution.

    The branch stacks are the subclass's: residual blocks in HRNet, MiT blocks in the naive HRNet-ViT.
    """

    def __init__(self, channels: list[int], branches: nn.ModuleList, upsample_mode: str = "bilinear",
                 align_corners: bool = False):
        super().__init__()
        self.upsample_mode = upsample_mode
        self.align_corners = align_corners
        self.branches = branches
        self.fuse_layers = None
        if len(channels) > 1:
            self.fuse_layers = nn.ModuleList(
                nn.ModuleList(_fuse_path(channels, src, dst) for src in range(len(channels)))
                for dst in range(len(channels))
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        outs = []
        for dst in range(len(self.fuse_layers)):
            parts = (self._bring(src, dst, xs) for src in range(len(xs)))
            # summed in the official order (source 0 first); the first sum makes a new tensor (the inputs feed the
            # other outputs), the rest add into it in place
            y = next(parts) + next(parts)
            for part in parts:
                y.add_(part)
            outs.append(self.relu(y))
        return outs

    def _bring(self, src: int, dst: int, xs: list[torch.Tensor]) -> torch.Tensor:
        """Input ``src`` at output ``dst``'s width and resolution, through its fusion path."""
        if src == dst:
            return xs[src]
        y = self.fuse_layers[dst][src](xs[src])
        return resize(y, xs[dst].shape[2:], self.upsample_mode, self.align_corners) if src > dst else y


class HRModule(ExchangeUnit):
    """One exchange unit with residual blocks on every branch."""

    def __init__(self, channels: list[int], num_blocks: int, upsample_mode: str = "bilinear",
                 align_corners: bool = False):
        branches = nn.ModuleList(make_res_layer(BasicBlock, c, c, num_blocks) for c in channels)
        super().__init__(channels, branches, upsample_mode, align_corners)


def apply_transition(transition: nn.ModuleList, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Adapt each branch to the next stage; a new branch grows from the lowest resolution, None keeps a branch."""
    return [
        xs[min(i, len(xs) - 1)] if layer is None else layer(xs[min(i, len(xs) - 1)])
        for i, layer in enumerate(transition)
    ]


class HighResolutionNet(nn.Module):
    """HRNetV2 backbone: returns the four maps (W, 2W, 4W, 8W channels at 1/4 .. 1/32)."""

    def __init__(self, width: int = 48, stem_channels: int = 64, layer1_planes: int = 64, layer1_blocks: int = 4,
                 stage_modules: tuple[int, int, int] = (1, 4, 3), num_blocks: int = 4,
                 upsample_mode: str = "bilinear", align_corners: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem_channels, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_res_layer(Bottleneck, stem_channels, layer1_planes, layer1_blocks)

        prev = [layer1_planes * Bottleneck.expansion]
        for index, modules in enumerate(stage_modules, start=1):
            channels = [width * 2**i for i in range(index + 1)]
            setattr(self, f"transition{index}", self._make_transition(prev, channels))
            setattr(self, f"stage{index + 1}", nn.Sequential(*(
                HRModule(channels, num_blocks, upsample_mode, align_corners) for _ in range(modules)
            )))
            prev = channels
        self.num_stages = len(stage_modules)
        self.out_channels = prev

    @staticmethod
    def _make_transition(prev: list[int], channels: list[int]) -> nn.ModuleList:
        """Re-width kept branches with a 3x3 conv where needed; a new branch halves the lowest resolution."""
        layers = []
        for i, c in enumerate(channels):
            if i < len(prev):
                layers.append(_conv_bn(prev[i], c, 3) if prev[i] != c else None)
            else:
                steps = i + 1 - len(prev)
                layers.append(nn.Sequential(*(
                    _conv_bn(prev[-1], c if k == steps - 1 else prev[-1], 3, 2) for k in range(steps)
                )))
        return nn.ModuleList(layers)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four maps. On CPU channels-last: every conv, BN and resize then keeps that layout, which oneDNN's
        convolutions run faster (benchmarks/hrnet_vs_official.md). Elsewhere the input's layout, as the official
        code: channels-last took 1.39x the official's device time on an H200 (reports/gpu/vs_official.md)."""
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for index in range(1, self.num_stages + 1):
            xs = getattr(self, f"stage{index + 1}")(apply_transition(getattr(self, f"transition{index}"), xs))
        return xs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)


class HRNetClassifier(HighResolutionNet):
    """HRNet-C: per-branch Bottleneck widening, stride-2 convs summed down the branches, 2048-d, Linear."""

    def __init__(self, num_classes: int = 1000, head_planes: tuple[int, ...] = (32, 64, 128, 256),
                 num_features: int = 2048, **kwargs):
        kwargs.setdefault("upsample_mode", "nearest")
        super().__init__(**kwargs)
        widths = [p * Bottleneck.expansion for p in head_planes]
        self.incre_modules = nn.ModuleList(
            make_res_layer(Bottleneck, c, p, 1) for c, p in zip(self.out_channels, head_planes)
        )
        self.downsamp_modules = nn.ModuleList(
            _conv_bn(c_in, c_out, 3, 2, bias=True) for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.final_layer = _conv_bn(widths[-1], num_features, 1, bias=True)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.forward_features(x)
        y = self.incre_modules[0](xs[0])
        for incre, down, feature in zip(self.incre_modules[1:], self.downsamp_modules, xs[1:]):
            y = incre(feature) + down(y)
        y = self.final_layer(y)
        # the official model averages with flatten().mean() under tracing, which fvcore does not count
        return self.classifier(y.flatten(2).mean(2))


def _concat_at_quarter(xs: list[torch.Tensor], align_corners: bool) -> torch.Tensor:
    size = xs[0].shape[2:]
    return torch.cat([xs[0]] + [resize(x, size, "bilinear", align_corners) for x in xs[1:]], dim=1)


class HRNetV2Seg(HighResolutionNet):
    """HRNetV2 head: all branches bilinearly resized to 1/4, concatenated, 1x1 conv + BN + ReLU, classifier."""

    def __init__(self, num_classes: int = 19, **kwargs):
        super().__init__(**kwargs)
        channels = sum(self.out_channels)
        self.align_corners = kwargs.get("align_corners", False)
        self.last_layer = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.BatchNorm2d(channels, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        logits = self.last_layer(_concat_at_quarter(self.forward_features(img), self.align_corners))
        return resize(logits, img.shape[2:], "bilinear", self.align_corners)


def _bn_relu(channels: int) -> nn.Sequential:
    """The OCR code's ``ModuleHelper.BNReLU`` (a nested Sequential, hence keys like ``f_up.1.0.weight``)."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class SpatialGather(nn.Module):
    """Soft object regions: each class's feature is the softmax(spatial)-weighted mean of the pixel features."""

    def forward(self, feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        weights = F.softmax(probs.flatten(2), dim=2)  # B, K, HW
        context = torch.matmul(weights, map_to_tokens(feats))  # B, K, C
        return context.transpose(1, 2).unsqueeze(3)  # B, C, K, 1


class ObjectAttention(nn.Module):
    """Pixel-to-object attention: pixels query the K object features (OCR's ``_ObjectAttentionBlock``, scale 1).

    One head of width ``key_channels`` with scale ``key_channels ** -0.5``: plain scaled dot-product attention,
    run through ``F.scaled_dot_product_attention`` unless ``use_sdpa=False`` (the official matmuls).
    """

    def __init__(self, in_channels: int, key_channels: int, use_sdpa: bool = True):
        super().__init__()
        self.key_channels = key_channels
        self.use_sdpa = use_sdpa

        def key_transform() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(in_channels, key_channels, 1, bias=False), _bn_relu(key_channels),
                                 nn.Conv2d(key_channels, key_channels, 1, bias=False), _bn_relu(key_channels))

        self.f_pixel = key_transform()
        self.f_object = key_transform()
        self.f_down = nn.Sequential(nn.Conv2d(in_channels, key_channels, 1, bias=False), _bn_relu(key_channels))
        self.f_up = nn.Sequential(nn.Conv2d(key_channels, in_channels, 1, bias=False), _bn_relu(in_channels))

    def forward(self, x: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[2:]
        # (B, HW, Ck), (B, K, Ck), (B, K, Ck); the fused kernel needs unit stride on Ck (the K x 1 proxy maps are
        # not channels-last: a small copy; the channels-last pixel map: a view)
        query, key, value = (map_to_tokens(t).contiguous()
                             for t in (self.f_pixel(x), self.f_object(proxy), self.f_down(proxy)))
        scale = self.key_channels ** -0.5
        if self.use_sdpa:
            context = F.scaled_dot_product_attention(query[:, None], key[:, None], value[:, None], scale=scale)[:, 0]
        else:
            context = torch.matmul(F.softmax(torch.matmul(query, key.transpose(1, 2)) * scale, dim=-1), value)
        return self.f_up(context.unflatten(1, (H, W)).permute(0, 3, 1, 2))  # B, HW, Ck -> channels-last map


class SpatialOCR(nn.Module):
    """Augment every pixel with its object context: concat, 1x1 conv + BN + ReLU, dropout."""

    def __init__(self, in_channels: int, key_channels: int, out_channels: int, dropout: float = 0.05,
                 use_sdpa: bool = True):
        super().__init__()
        self.object_context_block = ObjectAttention(in_channels, key_channels, use_sdpa)
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(2 * in_channels, out_channels, 1, bias=False), _bn_relu(out_channels), nn.Dropout2d(dropout)
        )

    def forward(self, feats: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
        context = self.object_context_block(feats, proxy)
        return self.conv_bn_dropout(torch.cat([context, feats], dim=1))


class HRNetOCR(HighResolutionNet):
    """HRNetV2 + OCR. The "auxiliary" head's coarse logits define the soft object regions, so inference runs it."""

    def __init__(self, num_classes: int = 19, mid_channels: int = 512, key_channels: int = 256,
                 use_sdpa: bool = True, **kwargs):
        kwargs.setdefault("align_corners", True)
        super().__init__(**kwargs)
        channels = sum(self.out_channels)
        self.align_corners = kwargs["align_corners"]
        self.conv3x3_ocr = nn.Sequential(
            nn.Conv2d(channels, mid_channels, 3, 1, 1), nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True)
        )
        self.ocr_gather_head = SpatialGather()
        self.ocr_distri_head = SpatialOCR(mid_channels, key_channels, mid_channels, use_sdpa=use_sdpa)
        self.cls_head = nn.Conv2d(mid_channels, num_classes, 1)
        self.aux_head = nn.Sequential(
            nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward_logits(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The official outputs at 1/4 resolution: (auxiliary logits, main logits)."""
        feats = _concat_at_quarter(self.forward_features(img), self.align_corners)
        aux_logits = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        feats = self.ocr_distri_head(feats, self.ocr_gather_head(feats, aux_logits))
        return aux_logits, self.cls_head(feats)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return resize(self.forward_logits(img)[1], img.shape[2:], "bilinear", self.align_corners)


_VARIANTS = {"w18": dict(width=18), "w32": dict(width=32), "w48": dict(width=48)}
_DATASETS = {
    "ade20k": dict(num_classes=150, input_size=(512, 512), paper_inputs=((512, 512),)),
    "cityscapes": dict(num_classes=19, input_size=(1024, 1024), paper_inputs=((1024, 1024), (512, 512), (1024, 2048))),
}
_CLS_CODE = "HRNet/HRNet-Image-Classification@f760c988482cdb8a1f69b10b219d669721144582:lib/models/cls_hrnet.py"
_SEG_CODE = "HRNet/HRNet-Semantic-Segmentation@0bbb2880446ddff2d78f8dd7e8c4c610151d5a51:lib/models/"
_CLS_REF = "HRNet-Image-Classification README (HRNet-W{w}-C: {params}M params, {gflops} GFLOPs at 224x224)"
_CLS_PUBLISHED = {"w18": (21.3, 3.99), "w32": (41.2, 8.31), "w48": (77.5, 16.1)}
_SEG_REF = ("Wang et al., TPAMI 2020 (Cityscapes HRNetV2-W48: 65.8M params, 696.2 GFLOPs at 1024x2048, i.e. conv "
            "MACs / 2^30); HRViT paper (Gu et al., CVPR 2022) for the comparison with HRNetV2+OCR")
_KEYS_NOTE = ("Parameter names follow the official seg_hrnet*.py: backbone keys at the top level (conv1, layer1, "
              "transition*, stage*), head keys beside them, so official state dicts load with strict=True.")


def _hrnet_notes(variant: str) -> str:
    if variant == "w48":
        return ""
    return (f" HRNet-Semantic-Segmentation ships W48 configs only; {variant.upper()} uses the same stage layout with "
            "the classification configs' widths.")


def _register(variant: str) -> None:
    cfg = _VARIANTS[variant]
    params, gflops = _CLS_PUBLISHED[variant]

    def classifier(**overrides) -> nn.Module:
        return HRNetClassifier(**dict(cfg, **overrides))

    def backbone(**overrides) -> nn.Module:
        return HighResolutionNet(**dict(cfg, **overrides))

    register_model(
        name=f"hrnetv2_{variant}", family="hrnet", variant=variant, task="classification", dataset="imagenet",
        num_classes=1000, input_size=(224, 224), official_code=_CLS_CODE, attention="none",
        reference=_CLS_REF.format(w=variant[1:], params=params, gflops=gflops),
        notes="HRNet-C head (incre modules, downsamp layers, 2048-d final layer, Linear 1000); published GFLOPs "
              "are conv+linear MACs / 2^30. Fusion upsamples with nearest interpolation as cls_hrnet.py does.",
    )(classifier)
    register_model(
        name=f"hrnetv2_{variant}_backbone", family="hrnet", variant=variant, task="backbone",
        input_size=(512, 512), official_code=_SEG_CODE + "seg_hrnet.py", reference=_SEG_REF, attention="none",
        notes="Four maps (W, 2W, 4W, 8W channels at 1/4..1/32), bilinear fusion as in seg_hrnet.py. "
              + _KEYS_NOTE + _hrnet_notes(variant),
    )(backbone)

    for dataset, data in _DATASETS.items():
        num_classes = data["num_classes"]
        # the Cityscapes seg_hrnet configs set ALIGN_CORNERS False; the ADE20K and all OCR configs keep the default True
        seg_align = dataset != "cityscapes"

        def seg(num_classes=num_classes, align_corners=seg_align, **overrides) -> nn.Module:
            return HRNetV2Seg(**dict(cfg, num_classes=num_classes, align_corners=align_corners, **overrides))

        def ocr(num_classes=num_classes, **overrides) -> nn.Module:
            return HRNetOCR(**dict(cfg, num_classes=num_classes, **overrides))

        common = dict(family="hrnet", variant=variant, task="segmentation", dataset=dataset, reference=_SEG_REF,
                      **data)
        register_model(
            name=f"hrnetv2_{variant}_seg_{dataset}", official_code=_SEG_CODE + "seg_hrnet.py", attention="none",
            notes="HRNetV2 head: branches resized to 1/4, concat, 1x1 conv (bias) + BN + ReLU, 1x1 classifier; "
                  "logits bilinearly resized to the input size (the official test-time resize). " + _KEYS_NOTE
                  + _hrnet_notes(variant),
            **common,
        )(seg)
        register_model(
            name=f"hrnetv2_{variant}_ocr_{dataset}", official_code=_SEG_CODE + "seg_hrnet_ocr.py", attention="sdpa",
            notes="HRNetV2 + OCR (mid 512, key 256, scale 1). The auxiliary head (aux_head) is counted: its coarse "
                  "logits are the soft object regions that OCR gathers, so inference cannot skip it. forward returns "
                  "the main logits (cls_head) resized to the input size; forward_logits gives both at 1/4. "
                  + _KEYS_NOTE + _hrnet_notes(variant),
            **common,
        )(ocr)


for _variant in _VARIANTS:
    _register(_variant)
