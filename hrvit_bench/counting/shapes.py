"""Shape shortcuts for the meta engine: calls whose meta kernels are slow Python refs in recent torch (norms,
activations, attention, resizes, linear, add). On meta tensors their output is just an empty tensor of a known
shape, made here without running the ref. A shortcut that raises is ignored and torch's own meta kernel decides;
tests/test_engines.py holds the counts equal to fvcore's own on every registered model.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .rules import arg


def _like_input(a, k):
    """relu, hardswish, silu, ...: ``(input, inplace=False)``; in place returns the input itself."""
    x = arg(a, k, 0, "input")
    return x if arg(a, k, 1, "inplace", False) else torch.empty_like(x)


def _linear_shape(a, k):
    x, w = arg(a, k, 0, "input"), arg(a, k, 1, "weight")
    if x.shape[-1] != w.shape[-1]:  # torch's own kernel then raises the real error
        raise ValueError("linear: input and weight sizes differ")
    return x.new_empty((*x.shape[:-1], w.shape[0]))


def _layer_norm_shape(a, k):
    x, normalized = arg(a, k, 0, "input"), tuple(arg(a, k, 1, "normalized_shape"))
    if tuple(x.shape[x.dim() - len(normalized):]) != normalized:
        raise ValueError("layer_norm: input and normalized_shape differ")
    return torch.empty_like(x)


def _sdpa_shape(a, k):
    q, v = arg(a, k, 0, "query"), arg(a, k, 2, "value")
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


def _interpolate_shape(a, k):
    x = arg(a, k, 0, "input")
    size, scale = arg(a, k, 1, "size"), arg(a, k, 2, "scale_factor")
    spatial = x.dim() - 2
    if size is not None:
        out = [int(size)] * spatial if isinstance(size, int) else [int(s) for s in size]
    else:
        scales = [scale] * spatial if isinstance(scale, (int, float)) else list(scale)
        out = [math.floor(float(n) * float(f)) for n, f in zip(x.shape[2:], scales)]
    return x.new_empty((*x.shape[:2], *out))


def _add_shape(a, k):
    x, y = arg(a, k, 0, "input"), arg(a, k, 1, "other")
    if not isinstance(y, torch.Tensor):
        return torch.empty_like(x)
    shape = torch.broadcast_shapes(x.shape, y.shape)
    return torch.empty(shape, dtype=torch.result_type(x, y), device="meta")


_ELEMENTWISE = (F.layer_norm, F.group_norm, F.batch_norm, F.instance_norm, F.gelu, F.softmax, torch.softmax,
                torch.Tensor.softmax, F.dropout, F.dropout2d)
_ELEMENTWISE_MAYBE_INPLACE = (F.hardswish, F.relu, F.silu, F.hardsigmoid, F.relu6)
SHAPE_FUNCTIONS: dict[Any, Callable] = {
    **{f: (lambda a, k: torch.empty_like(arg(a, k, 0, "input"))) for f in _ELEMENTWISE if f is not F.layer_norm},
    **{f: _like_input for f in _ELEMENTWISE_MAYBE_INPLACE},
    F.linear: _linear_shape,
    F.layer_norm: _layer_norm_shape,
    F.scaled_dot_product_attention: _sdpa_shape,
    F.interpolate: _interpolate_shape,
    torch.add: _add_shape,
    torch.Tensor.add: _add_shape,
    torch.Tensor.__add__: _add_shape,
}
