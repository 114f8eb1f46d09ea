"""hrvit-bench's only door to ``models/``: resolve names, parse input sizes, build on the right device."""
from __future__ import annotations

import re

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import hrvit_bench_models as models
from hrvit_bench_models import ModelInfo, UnknownModelError

from .errors import UsageError

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """'512x1024' -> (512, 1024); a single number means a square."""
    match = _SIZE.match(text) or re.match(r"^\s*(\d+)\s*$", text)
    if not match:
        raise UsageError(f"input size {text!r} is not HxW with positive integers (e.g. 512x512)")
    h, w = (int(match.group(1)), int(match.group(match.lastindex)))
    if h <= 0 or w <= 0:
        raise UsageError(f"input size {text!r} must be positive")
    return h, w


def format_size(dims) -> str:
    """(512, 1024) -> '512x1024'; also whole shapes, (1, 3, 224, 224) -> '1x3x224x224'."""
    return "x".join(str(int(d)) for d in dims)


def names(pattern: str = "*", *, family: str | None = None, task: str | None = None) -> list[str]:
    """Registered names matching a glob, sorted."""
    return models.list_models(pattern, family=family, task=task)


def info(name: str) -> ModelInfo:
    try:
        return models.model_info(name)
    except UnknownModelError as exc:
        raise UsageError(str(exc)) from None


def resolve(names_or_patterns: list[str]) -> list[ModelInfo]:
    """Names, or glob patterns (``hrvit_b*_seg_ade20k``), in the order given, without repeats."""
    found: list[str] = []
    for item in names_or_patterns:
        if any(ch in item for ch in "*?["):
            matched = models.list_models(item)
            if not matched:
                raise UsageError(f"no model matches {item!r}; see `hrvit-bench list`")
            found += [m for m in matched if m not in found]
        elif item not in found:
            found.append(info(item).name)
    return [models.model_info(n) for n in found]


def input_shape(model: ModelInfo, size: tuple[int, int] | None, batch_size: int = 1) -> tuple[int, int, int, int]:
    """(B, 3, H, W), checked against what the model can take."""
    if batch_size <= 0:
        raise UsageError(f"batch size must be a positive integer, not {batch_size}")
    h, w = size or model.input_size
    if min(h, w) < model.input_multiple:
        raise UsageError(
            f"{model.name} cannot take {h}x{w}: each side must be at least {model.input_multiple} "
            f"(its deepest feature map has stride {model.input_multiple})"
        )
    return (batch_size, 3, h, w)


class _NoInitOnMeta(TorchFunctionMode):
    """Skips in-place ops on meta tensors: weight initialisation (trunc_normal_, kaiming_uniform_, ...) has no
    values to write on meta, yet recent torch runs its meta kernels as slow Python refs."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.endswith("__") and args and getattr(args[0], "is_meta", False):
            return args[0]
        return func(*args, **(kwargs or {}))


def build(name: str, device: str = "cpu", **overrides) -> nn.Module:
    """Build in eval mode; on ``meta`` no memory is allocated and no weights are initialised."""
    if torch.device(device).type == "meta":
        with torch.device(device), _NoInitOnMeta():
            return models.create_model(name, **overrides).eval()
    with torch.device(device):
        return models.create_model(name, **overrides).eval()
