"""Stand-ins for what the official implementations import and cannot be installed here (timm, einops, mmcv,
mmseg, mmcv_custom, attr, IPython), and helpers to import official files from a checkout given as a path.

Only the names the official model files use exist, each doing what the original does for a model built in eval
mode on one process: DropPath is the identity outside training, SyncBN is torch's SyncBatchNorm (plain batch
norm when no process group runs), ConvModule is conv -> norm -> activation with mmcv's parameter names,
BaseDecodeHead keeps mmseg's conv_seg and dropout, EncoderDecoder is mmseg's whole-image ``encode_decode``.
None of this is official code; the official files are read from the checkouts at run time.
"""
from __future__ import annotations

import collections.abc
import contextlib
import importlib.util
import logging
import re
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# --- einops -------------------------------------------------------------------------------------------------

def _axis_groups(side: str) -> list[list[str]]:
    """'b (h w) c' -> [['b'], ['h', 'w'], ['c']]."""
    return [group.split() if group else [name] for group, name in re.findall(r"\(([^)]*)\)|(\w+)", side)]


def rearrange(tensor: torch.Tensor, pattern: str, **sizes: int) -> torch.Tensor:
    """einops.rearrange for patterns of named axes and parenthesised groups (no ellipsis, no literal 1s)."""
    left, right = (_axis_groups(side) for side in pattern.split("->"))
    if len(left) != tensor.dim():
        raise ValueError(f"{pattern!r} expects {len(left)} dims, got shape {tuple(tensor.shape)}")
    known = dict(sizes)
    for group, dim in zip(left, tensor.shape):
        unknown = [a for a in group if a not in known]
        product = int(np.prod([known[a] for a in group if a in known]))
        if len(unknown) > 1 or (not unknown and product != dim) or (unknown and dim % product):
            raise ValueError(f"{pattern!r}: cannot split a dim of {dim} into {group} with {sizes}")
        if unknown:
            known[unknown[0]] = dim // product
    axes = [a for group in left for a in group]
    order = [axes.index(a) for group in right for a in group]
    out = tensor.reshape([known[a] for a in axes]).permute(order)
    return out.reshape([int(np.prod([known[a] for a in group])) for group in right])


class Rearrange(nn.Module):
    def __init__(self, pattern: str, **sizes: int):
        super().__init__()
        self.pattern, self.sizes = pattern, sizes

    def forward(self, x):
        return rearrange(x, self.pattern, **self.sizes)


# --- timm ---------------------------------------------------------------------------------------------------

def to_2tuple(x):
    return tuple(x) if isinstance(x, collections.abc.Iterable) else (x, x)


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    return nn.init.trunc_normal_(tensor, mean, std, a, b)


class DropPath(nn.Module):
    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if not self.training or not self.drop_prob:
            return x
        keep = 1 - self.drop_prob
        return x.div(keep) * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)


def _unavailable(*args, **kwargs):
    raise NotImplementedError("not available in the stand-ins (no pretrained weights here)")


# --- mmcv ---------------------------------------------------------------------------------------------------

_NORMS = {"BN": nn.BatchNorm2d, "SyncBN": nn.SyncBatchNorm}


def build_norm_layer(cfg: dict, num_features: int, postfix=""):
    cfg = dict(cfg)
    layer = _NORMS[cfg.pop("type")](num_features, **{k: v for k, v in cfg.items() if k != "requires_grad"})
    layer.requires_grad_(cfg.get("requires_grad", True))
    return f"bn{postfix}", layer


class ConvModule(nn.Module):
    """mmcv's conv -> norm -> activation with its names (conv, bn, activate) and bias='auto'."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias="auto", conv_cfg=None, norm_cfg=None, act_cfg=dict(type="ReLU"), inplace=True):
        super().__init__()
        assert conv_cfg is None and act_cfg in (None, dict(type="ReLU")), (conv_cfg, act_cfg)
        bias = norm_cfg is None if bias == "auto" else bias
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=bias)
        self.norm_name = None
        if norm_cfg is not None:
            self.norm_name, norm = build_norm_layer(norm_cfg, out_channels)
            self.add_module(self.norm_name, norm)
        self.activate = nn.ReLU(inplace=inplace) if act_cfg is not None else None

    def forward(self, x):
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        return x if self.activate is None else self.activate(x)


# --- mmseg --------------------------------------------------------------------------------------------------

class Registry(dict):
    def register_module(self, *args, **kwargs):
        def add(cls):
            self[cls.__name__] = cls
            return cls
        return add


def resize(input, size=None, scale_factor=None, mode="nearest", align_corners=None, warning=True):
    size = tuple(int(s) for s in size) if size is not None else None
    return F.interpolate(input, size, scale_factor, mode, align_corners)


class BaseDecodeHead(nn.Module):
    """The parts of mmseg's BaseDecodeHead a forward uses: input selection, dropout, conv_seg (cls_seg)."""

    def __init__(self, in_channels, channels, *, num_classes, dropout_ratio=0.1, conv_cfg=None, norm_cfg=None,
                 act_cfg=dict(type="ReLU"), in_index=-1, input_transform=None, align_corners=False, **unused):
        super().__init__()
        assert input_transform in (None, "multiple_select"), input_transform
        self.in_channels, self.channels, self.num_classes = in_channels, channels, num_classes
        self.in_index, self.input_transform = in_index, input_transform
        self.conv_cfg, self.norm_cfg, self.act_cfg = conv_cfg, norm_cfg, act_cfg
        self.align_corners = align_corners
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None

    def _transform_inputs(self, inputs):
        if self.input_transform == "multiple_select":
            return [inputs[i] for i in self.in_index]
        return inputs[self.in_index]

    def cls_seg(self, feat):
        if self.dropout is not None:
            feat = self.dropout(feat)
        return self.conv_seg(feat)


class EncoderDecoder(nn.Module):
    """mmseg's EncoderDecoder at test time (mode 'whole'): backbone, decode head, logits resized to the input."""

    def __init__(self, backbone: nn.Module, decode_head: nn.Module):
        super().__init__()
        self.backbone, self.decode_head = backbone, decode_head

    def forward(self, img):
        out = self.decode_head(self.backbone(img))
        return resize(out, size=img.shape[2:], mode="bilinear", align_corners=self.decode_head.align_corners)


BACKBONES, HEADS = Registry(), Registry()


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so that its submodules (also stand-ins) import
    module.__dict__.update(attributes)
    return module


def _standin_modules() -> list[types.ModuleType]:
    logger = logging.getLogger("official")
    return [
        _module("timm"), _module("timm.models"),
        _module("timm.data", IMAGENET_DEFAULT_MEAN=(0.485, 0.456, 0.406), IMAGENET_DEFAULT_STD=(0.229, 0.224, 0.225)),
        _module("timm.models.layers", DropPath=DropPath, to_2tuple=to_2tuple, trunc_normal_=trunc_normal_),
        _module("timm.models.registry", register_model=lambda fn: fn),
        _module("timm.models.helpers", load_pretrained=_unavailable),
        _module("timm.models.vision_transformer", _cfg=lambda **kwargs: kwargs),
        _module("timm.models.resnet", resnet26d=_unavailable, resnet50d=_unavailable),
        _module("einops", rearrange=rearrange), _module("einops.layers"),
        _module("einops.layers.torch", Rearrange=Rearrange),
        _module("mmcv"), _module("mmcv.cnn", ConvModule=ConvModule, DepthwiseSeparableConvModule=None),
        _module("mmcv.cnn.bricks"), _module("mmcv.cnn.bricks.norm", build_norm_layer=build_norm_layer),
        _module("mmcv.runner", load_checkpoint=_unavailable),
        _module("mmcv_custom", load_checkpoint=_unavailable),
        _module("mmseg"), _module("mmseg.ops", resize=resize),
        _module("mmseg.utils", get_root_logger=lambda *args, **kwargs: logger),
        _module("mmseg.models"), _module("mmseg.models.builder", BACKBONES=BACKBONES, HEADS=HEADS),
        _module("mmseg.models.utils", __all__=[]),
        _module("mmseg.models.backbones"), _module("mmseg.models.decode_heads"),
        _module("mmseg.models.decode_heads.decode_head", BaseDecodeHead=BaseDecodeHead),
        _module("attr"), _module("IPython", embed=_unavailable),
    ]


@contextlib.contextmanager
def standins():
    """The stand-in modules in sys.modules, and numpy's removed ``np.int`` (HRNet's code calls it while building),
    for as long as official code is imported and built. Afterwards the stand-ins and every module imported under
    their names or under an ``official_`` name are gone, and whatever those names held before is back."""
    modules = {m.__name__: m for m in _standin_modules()}
    roots = {name.split(".")[0] for name in modules}

    def ours(name):
        return name.split(".")[0] in roots or name.startswith("official_")

    before = {name: module for name, module in sys.modules.items() if ours(name)}
    had_int = hasattr(np, "int")
    sys.modules.update(modules)
    if not had_int:
        np.int = int
    try:
        yield
    finally:
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(before)
        if not had_int:
            del np.int


def import_file(module_name: str, path: Path) -> types.ModuleType:
    """Import one official file under a chosen dotted name (``official_*`` or a stand-in package's): relative
    imports resolve against the name's package (``mmseg.models.backbones.x`` finds ``..builder``)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def import_package_file(package: str, directory: Path, name: str) -> types.ModuleType:
    """Import DIRECTORY/NAME.py as PACKAGE.NAME (an ``official_`` name), its siblings importable by relative
    imports, without running the directory's __init__.py (HRNet's imports its files by an absolute name)."""
    assert package.startswith("official_"), package
    if package not in sys.modules:
        sys.modules[package] = _module(package)
        sys.modules[package].__path__ = [str(directory)]
    return import_file(f"{package}.{name}", directory / f"{name}.py")
