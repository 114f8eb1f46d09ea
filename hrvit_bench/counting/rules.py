"""The counting rules: which call costs what, as two declarative tables over the pure formulas.

``RULES`` is keyed by the Python-level torch callables a ``TorchFunctionMode`` sees (``F.linear``,
``torch.matmul``, ``Tensor.__matmul__``, ...): what ``torch.jit.trace`` records and fvcore counts. ``ATEN_RULES``
is keyed by aten operator packets (``torch.ops.aten.mm``, ...): what the dispatcher shows for code the Python level
never sees (a TorchScript function or module called inside forward), and where backward rules will go.

A rule takes the call's ``(args, kwargs, out)`` and returns ``Counted`` (MACs by operator, and what plain fvcore's
own rule would report) or None (no rule for this form of the call). Every rule reads its operands by position or
keyword, never ``out=``, which only names where the result goes.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F

from .formulas import (batch_norm_macs, conv_macs, einsum_macs, fvcore_matmul_macs, matmul_macs, mha_macs,
                       norm_macs, resize_macs, rnn_macs, sdpa_macs)


class Counted(NamedTuple):
    """What one call costs, by operator, and what plain fvcore's own rule would report for it."""

    by_op: dict[str, int]
    fvcore: int | None  # plain fvcore on the same call: 0 where it has no rule, None where its rule raises


Rule = Callable[[tuple, dict, Any], "Counted | None"]
_SAME = object()


def one_op(op: str, macs: int, fvcore: Any = _SAME) -> Counted:
    return Counted({op: int(macs)}, int(macs) if fvcore is _SAME else fvcore)


def note_difference(differences: dict[str, Counter], op: str, counted: Counted) -> None:
    """Record a call where plain fvcore's own rule would report something else (or raise)."""
    ours = sum(counted.by_op.values())
    if counted.fvcore == ours:
        return
    row = differences[op]
    row["calls"] += 1
    row["macs"] += ours
    if counted.fvcore is None:
        row["fvcore_raises"] += 1
    else:
        row["fvcore_macs"] += counted.fvcore


def arg(args: tuple, kwargs: dict, index: int, name: str, default=None):
    """An argument given by position or by keyword (``F.linear(x, weight=w)``)."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _shape(t) -> list[int]:
    return list(t.shape)


def _numel(t) -> int:
    return math.prod(t.shape)


def _conv_rule(transposed: bool) -> Rule:
    def rule(a, k, out):
        x, w = arg(a, k, 0, "input"), arg(a, k, 1, "weight")
        return one_op("conv", conv_macs(_shape(x), _shape(w), _shape(out), transposed))

    return rule


def _norm_rule(op: str, weight_index: int, weight_name: str) -> Rule:
    def rule(a, k, out):
        affine = arg(a, k, weight_index, weight_name) is not None
        return one_op(op, norm_macs(_numel(arg(a, k, 0, "input")), affine))

    return rule


def _batch_norm_rule(a, k, out):
    affine, training = arg(a, k, 3, "weight") is not None, bool(arg(a, k, 5, "training", False))
    return one_op("batch_norm", batch_norm_macs(_numel(arg(a, k, 0, "input")), affine, training))


def _interpolate_rule(a, k, out):
    mode = arg(a, k, 3, "mode", "nearest")
    macs = resize_macs(mode, out.numel())
    if out.dim() != 4 or arg(a, k, 6, "antialias", False) or macs is None:
        return None
    return one_op(f"upsample_{mode}2d", macs)


def _einsum_rule(a, k, out):
    operands = a[1] if len(a) == 2 and isinstance(a[1], (list, tuple)) else a[1:]
    return one_op("einsum", einsum_macs(a[0], [_shape(t) for t in operands]))


def _sdpa_rule(a, k, out):
    q, key, v = arg(a, k, 0, "query"), arg(a, k, 1, "key"), arg(a, k, 2, "value")
    return one_op("scaled_dot_product_attention", sdpa_macs(_shape(q), _shape(key), _shape(v), _shape(out)), 0)


def _matmul_rule(op: str, first: tuple[int, str], second: tuple[int, str], fvcore_has_rule: bool = False) -> Rule:
    """matmul/mm/bmm and their add- forms: the true (broadcast) product; fvcore's rule noted beside it."""

    def rule(a, k, out):
        x, y = _shape(arg(a, k, *first)), _shape(arg(a, k, *second))
        return one_op(op, matmul_macs(x, y), fvcore_matmul_macs(x, y) if fvcore_has_rule else 0)

    return rule


def _linear_rule(a, k, out):
    x, w = _shape(arg(a, k, 0, "input")), _shape(arg(a, k, 1, "weight"))
    return one_op("linear", math.prod(x) * (w[0] if len(w) == 2 else 1))


def _mha_rule(a, k, out):
    """``F.multi_head_attention_forward``: its linear and bmm/SDPA calls run unseen inside it, so they are counted
    here by the operators fvcore sees in a trace of the same call."""
    q, key, v = (_shape(arg(a, k, i, n)) for i, n in ((0, "query"), (1, "key"), (2, "value")))
    static_k = arg(a, k, 21, "static_k")
    source = (static_k.shape[1] if static_k is not None else key[0]) + (arg(a, k, 7, "bias_k") is not None)
    source += bool(arg(a, k, 9, "add_zero_attn", False))
    projections, product = mha_macs(q, key, v, source)
    if not arg(a, k, 15, "need_weights", True):
        return Counted({"linear": projections, "scaled_dot_product_attention": 2 * product}, projections)
    masked = arg(a, k, 16, "attn_mask") is not None or arg(a, k, 14, "key_padding_mask") is not None
    if masked:  # q k^T goes through baddbmm, which fvcore has no rule for
        return Counted({"linear": projections, "baddbmm": product, "bmm": product}, projections + product)
    return Counted({"linear": projections, "bmm": 2 * product}, projections + 2 * product)


def native_mha_counted(q, k, v, need_weights: bool) -> Counted:
    """``torch._native_multi_head_attention``, MultiheadAttention's fast path (batch first, packed projections);
    fvcore has no rule for it."""
    seq_first = [[s[1], s[0], s[2]] if len(s) == 3 else s for s in (q, k, v)]
    projections, product = mha_macs(*seq_first, seq_first[1][0])
    attention = "bmm" if need_weights else "scaled_dot_product_attention"
    return Counted({"linear": projections, attention: 2 * product}, 0)


def _native_mha_rule(a, k, out):
    q, key, v = (_shape(arg(a, k, i, n)) for i, n in ((0, "query"), (1, "key"), (2, "value")))
    return native_mha_counted(q, key, v, arg(a, k, 10, "need_weights", True))


def _rnn_rule(a, k, out):
    """``_VF.lstm/gru/rnn_*``: the flat weights are the last list among the first arguments (after hx, which is a
    list for LSTM, and batch_sizes for packed sequences)."""
    weights = next((x for x in reversed(a[1:4]) if isinstance(x, (list, tuple))), k.get("params", ()))
    return one_op("rnn", rnn_macs(_shape(a[0]), [_shape(w) for w in weights]), 0)


def _rnn_cell_rule(a, k, out):
    """``_VF.lstm_cell`` and kin: named linear, as a trace records the two gate products of a cell."""
    x, w_ih, w_hh = arg(a, k, 0, "input"), arg(a, k, 2, "w_ih"), arg(a, k, 3, "w_hh")
    return one_op("linear", rnn_macs(_shape(x), [_shape(w_ih), _shape(w_hh)]))


_matmul = _matmul_rule("matmul", (0, "input"), (1, "other"), True)
_mm = _matmul_rule("mm", (0, "input"), (1, "mat2"), True)
_bmm = _matmul_rule("bmm", (0, "input"), (1, "mat2"), True)
_addmm = _matmul_rule("addmm", (1, "mat1"), (2, "mat2"), True)
_addmm_ = _matmul_rule("addmm", (1, "mat1"), (2, "mat2"))  # in place: fvcore has no rule for aten::addmm_
_baddbmm = _matmul_rule("baddbmm", (1, "batch1"), (2, "batch2"))
_addbmm = _matmul_rule("addbmm", (1, "batch1"), (2, "batch2"))
_mv = _matmul_rule("mv", (0, "input"), (1, "vec"))
_addmv = _matmul_rule("addmv", (1, "mat"), (2, "vec"))
_dot = _matmul_rule("dot", (0, "input"), (1, "tensor"))
_vdot = _matmul_rule("dot", (0, "input"), (1, "other"))
_rmatmul: Rule = lambda a, k, out: _matmul(a[::-1], k, out)

RULES: dict[Any, Rule] = {
    torch.conv1d: _conv_rule(False),
    torch.conv2d: _conv_rule(False),
    torch.conv3d: _conv_rule(False),
    torch.conv_transpose1d: _conv_rule(True),
    torch.conv_transpose2d: _conv_rule(True),
    torch.conv_transpose3d: _conv_rule(True),
    F.linear: _linear_rule,
    torch.matmul: _matmul,
    torch.Tensor.matmul: _matmul,
    torch.Tensor.__matmul__: _matmul,
    torch.Tensor.__rmatmul__: _rmatmul,
    torch.mm: _mm,
    torch.Tensor.mm: _mm,
    torch.bmm: _bmm,
    torch.Tensor.bmm: _bmm,
    torch.addmm: _addmm,
    torch.Tensor.addmm: _addmm,
    torch.Tensor.addmm_: _addmm_,
    torch.Tensor.baddbmm_: _baddbmm,
    torch.Tensor.addbmm_: _addbmm,
    torch.Tensor.addmv_: _addmv,
    torch.baddbmm: _baddbmm,
    torch.Tensor.baddbmm: _baddbmm,
    torch.addbmm: _addbmm,
    torch.Tensor.addbmm: _addbmm,
    torch.mv: _mv,
    torch.Tensor.mv: _mv,
    torch.addmv: _addmv,
    torch.Tensor.addmv: _addmv,
    torch.dot: _dot,
    torch.Tensor.dot: _dot,
    torch.vdot: _vdot,
    torch.Tensor.vdot: _vdot,
    torch.einsum: _einsum_rule,
    F.scaled_dot_product_attention: _sdpa_rule,
    F.multi_head_attention_forward: _mha_rule,
    torch._native_multi_head_attention: _native_mha_rule,
    torch.lstm: _rnn_rule,
    torch.gru: _rnn_rule,
    torch.rnn_tanh: _rnn_rule,
    torch.rnn_relu: _rnn_rule,
    torch.lstm_cell: _rnn_cell_rule,
    torch.gru_cell: _rnn_cell_rule,
    torch.rnn_tanh_cell: _rnn_cell_rule,
    torch.rnn_relu_cell: _rnn_cell_rule,
    F.batch_norm: _batch_norm_rule,
    F.layer_norm: _norm_rule("layer_norm", 2, "weight"),
    F.group_norm: _norm_rule("group_norm", 2, "weight"),
    F.instance_norm: _norm_rule("instance_norm", 3, "weight"),
    F.interpolate: _interpolate_rule,
    F.adaptive_avg_pool2d: lambda a, k, out: one_op("adaptive_avg_pool2d", arg(a, k, 0, "input").numel()),
    F.grid_sample: lambda a, k, out: one_op("grid_sampler", 4 * out.numel()),
}


# --------------------------------------------------------------------------------------------------------------
# Aten operators, as the dispatcher shows them: positional by schema, ``out=`` a keyword. Plain fvcore sees such
# code as one opaque call (``prim::CallFunction``, ``prim::CallMethod``), so its own count of each is 0.

aten = torch.ops.aten


def _aten_product(op: str, first: int) -> Rule:
    def rule(a, k, out):
        return one_op(op, matmul_macs(_shape(a[first]), _shape(a[first + 1])), 0)

    return rule


def _aten_conv(a, k, out):
    transposed = bool(a[6]) if len(a) > 6 else False
    return one_op("conv", conv_macs(_shape(a[0]), _shape(a[1]), _shape(out), transposed), 0)


def _aten_norm(op: str, weight_index: int) -> Rule:
    def rule(a, k, out):
        return one_op(op, norm_macs(_numel(a[0]), arg(a, k, weight_index, "weight") is not None), 0)

    return rule


def _aten_batch_norm(training_index: int | None) -> Rule:
    """``native_batch_norm`` and ``_native_batch_norm_legit`` carry ``training``; ``..._no_training`` is eval."""

    def rule(a, k, out):
        training = bool(a[training_index]) if training_index is not None else False
        return one_op("batch_norm", batch_norm_macs(_numel(a[0]), a[1] is not None, training), 0)

    return rule


def _aten_resize(mode: str) -> Rule:
    return lambda a, k, out: one_op(f"upsample_{mode}2d", resize_macs(mode, out.numel()), 0)


def _aten_sdpa(a, k, out):
    """The fused attention kernels take (query, key, value, ...) and return (output, logsumexp, ...)."""
    output = out[0] if isinstance(out, (tuple, list)) else out
    return one_op("scaled_dot_product_attention", sdpa_macs(*(_shape(t) for t in a[:3]), _shape(output)), 0)


ATEN_RULES: dict[Any, Rule] = {
    aten.mm: _aten_product("mm", 0),
    aten.bmm: _aten_product("bmm", 0),
    aten.addmm: _aten_product("addmm", 1),
    aten.addmm_: _aten_product("addmm", 1),
    aten.baddbmm: _aten_product("baddbmm", 1),
    aten.baddbmm_: _aten_product("baddbmm", 1),
    aten.addbmm: _aten_product("addbmm", 1),
    aten.addbmm_: _aten_product("addbmm", 1),
    aten.mv: _aten_product("mv", 0),
    aten.addmv: _aten_product("addmv", 1),
    aten.addmv_: _aten_product("addmv", 1),
    aten.dot: _aten_product("dot", 0),
    aten.vdot: _aten_product("dot", 0),
    aten.convolution: _aten_conv,
    aten._convolution: _aten_conv,
    aten.native_layer_norm: _aten_norm("layer_norm", 2),
    aten.native_group_norm: _aten_norm("group_norm", 1),
    aten.native_batch_norm: _aten_batch_norm(5),
    aten._native_batch_norm_legit: _aten_batch_norm(5),
    aten._native_batch_norm_legit.no_stats: _aten_batch_norm(3),  # an overload looked up before its packet
    aten._native_batch_norm_legit_no_training: _aten_batch_norm(None),
    aten.upsample_nearest2d: _aten_resize("nearest"),
    aten.upsample_bilinear2d: _aten_resize("bilinear"),
    aten._adaptive_avg_pool2d: lambda a, k, out: one_op("adaptive_avg_pool2d", _numel(a[0]), 0),
    aten.grid_sampler_2d: lambda a, k, out: one_op("grid_sampler", 4 * out.numel(), 0),
    **{getattr(aten, name): _aten_sdpa for name in (
        "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")},
}
