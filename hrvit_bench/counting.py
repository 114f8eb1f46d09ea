"""Parameter and MAC counting: fvcore's rules, on real tensors (fvcore itself) or on shapes alone.

fvcore's ``FlopCountAnalysis`` is the reference: it traces the model with real tensors and applies one rule per
operator. It misses two things this module adds as handles: ``aten::scaled_dot_product_attention`` (counted 0)
and exact einsums (fvcore parses ``np.einsum_path``'s text, 4 significant digits). Tracing real tensors through a
segmentation model at 1024x1024 takes minutes on a laptop CPU, so ``count_macs(..., engine="meta")`` applies the
same rules to the same operators on meta tensors (shapes only, no arithmetic): a ``TorchFunctionMode`` sees the
Python-level calls that ``torch.jit.trace`` records (``linear``, ``matmul``, ``conv2d``, ``layer_norm``, ...), and
global module hooks give each call its module scope. Tests hold the two engines equal on every registered model.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import types as pytypes
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .conventions import ALL_CONVENTIONS, DEFAULT, Convention
from .errors import first_line

ENGINES = ("meta", "fvcore")


# --------------------------------------------------------------------------------------------------------------
# Pure counting rules: shapes in, MACs out. Shared by both engines.


def _expand_ellipsis(terms: list[str], out: str | None, shapes: list[list[int]]) -> tuple[list[str], str | None, str]:
    """Replace ``...`` by letters of their own, aligned right across operands as torch broadcasts them."""
    used = set("".join(terms) + (out or ""))
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in used]
    widths = [len(shape) - (len(term) - 3) if "..." in term else 0 for term, shape in zip(terms, shapes)]
    width = max(widths, default=0)
    letters = "".join(spare[:width])
    terms = [t.replace("...", letters[width - w :]) for t, w in zip(terms, widths)]
    return terms, None if out is None else out.replace("...", letters), letters


def einsum_macs(equation: str, shapes: list[list[int]]) -> int:
    """Exact MACs of ``torch.einsum``: one multiply per point of the joint index space of each contraction.

    Operands are contracted left to right, as torch does without opt_einsum; an intermediate keeps the indices
    still needed by later operands or the output. ``...`` stands for broadcast dimensions of their own.
    """
    equation = equation.replace(" ", "")
    lhs, arrow, out = equation.partition("->")
    terms = lhs.split(",")
    explicit, ellipsis = out if arrow else None, ""
    if "..." in equation:
        terms, explicit, ellipsis = _expand_ellipsis(terms, explicit, shapes)
    letters = "".join(terms)
    if explicit is None:  # implicit output: the ellipsis, then the letters appearing once, sorted
        explicit = ellipsis + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ellipsis))
    out = explicit
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        for letter, size in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), int(size))  # broadcast size-1 dims
    if len(terms) == 1:
        return math.prod(sizes[c] for c in set(terms[0]))
    macs, current = 0, terms[0]
    for i, term in enumerate(terms[1:], start=1):
        joint = set(current) | set(term)
        macs += math.prod(sizes[c] for c in joint)
        needed = set(out).union(*terms[i + 1 :])
        current = "".join(c for c in joint if c in needed)
    return macs


def sdpa_macs(q_shape: list[int], k_shape: list[int], v_shape: list[int], out_shape: list[int]) -> int:
    """MACs of softmax(q k^T) v, equal to the explicit matmuls' count: q@k^T plus attn@v."""
    batch = math.prod(out_shape[:-2])
    length, dim_qk = q_shape[-2], q_shape[-1]
    source, dim_v = k_shape[-2], v_shape[-1]
    return batch * length * source * (dim_qk + dim_v)


def conv_macs(x_shape, w_shape, out_shape, transposed: bool = False) -> int:
    """fvcore's rule: batch x weight size x output positions (input positions when transposed); no bias."""
    spatial = x_shape[2:] if transposed else out_shape[2:]
    return x_shape[0] * math.prod(w_shape) * math.prod(spatial)


def matmul_macs(a_shape, b_shape) -> int:
    """The true product of ``torch.matmul``: broadcast batch x M x K x N, where a vector operand has M (or N) = 1.

    fvcore's rule (``fvcore_matmul_macs``) multiplies a's elements by b's last dimension, which undercounts when b
    carries batch dimensions a broadcasts over, and raises on a vector b.
    """
    a, b = list(a_shape), list(b_shape)
    if len(a) == 1 and len(b) == 1:
        return a[0]
    a = [1, *a] if len(a) == 1 else a
    b = [*b, 1] if len(b) == 1 else b
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def fvcore_matmul_macs(a_shape, b_shape) -> int | None:
    """What fvcore's own matmul rule reports (None where its assertion or indexing fails)."""
    if len(b_shape) < 2 or a_shape[-1] != b_shape[-2]:
        return None
    return math.prod(a_shape) * b_shape[-1]


def mha_macs(q_shape, k_shape, v_shape, source_length: int) -> tuple[int, int]:
    """(projections, each attention product) of ``F.multi_head_attention_forward`` on seq-first (L, N, E) query,
    (S, N, kdim) key and (S, N, vdim) value (or unbatched (L, E)): q, k and v in-projections to E and the output
    projection; q k^T and attn v each cost N x L x S' x E, S' the attended length (bias_k, zero attention, static
    keys)."""
    length, embed = q_shape[0], q_shape[-1]
    batch = q_shape[1] if len(q_shape) == 3 else 1
    source = k_shape[0]
    projections = batch * embed * (length * embed + source * (k_shape[-1] + v_shape[-1]) + length * embed)
    return projections, batch * length * source_length * embed


def rnn_macs(input_shape, weights) -> int:
    """Gate GEMMs of LSTM/GRU/RNN layers (or cells): every weight matrix (input, hidden, projection; each layer
    and direction) multiplies one vector per time step and batch element, i.e. per row of the input."""
    rows = math.prod(input_shape[:-1])
    return rows * sum(math.prod(w) for w in weights if len(w) == 2)


# --------------------------------------------------------------------------------------------------------------
# The shape-only engine: fvcore's rules applied to Python-level torch calls on meta tensors.

class Counted(NamedTuple):
    """What one call costs, by operator, and what plain fvcore's own rule would report for it."""

    by_op: dict[str, int]
    fvcore: int | None  # plain fvcore on the same call: 0 where it has no rule, None where its rule raises


Rule = Callable[[tuple, dict, Any], "Counted | None"]
_SAME = object()


def _counted(op: str, macs: int, fvcore: Any = _SAME) -> Counted:
    return Counted({op: int(macs)}, int(macs) if fvcore is _SAME else fvcore)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default=None):
    """An argument given by position or by keyword (``F.linear(x, weight=w)``)."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _shape(t) -> list[int]:
    return list(t.shape)


def _conv_rule(transposed: bool) -> Rule:
    def rule(a, k, out):
        x, w = _arg(a, k, 0, "input"), _arg(a, k, 1, "weight")
        return _counted("conv", conv_macs(_shape(x), _shape(w), _shape(out), transposed))

    return rule


def _norm_rule(op: str, weight_index: int, weight_name: str) -> Rule:
    def rule(a, k, out):
        has_affine = _arg(a, k, weight_index, weight_name) is not None
        return _counted(op, math.prod(_shape(_arg(a, k, 0, "input"))) * (5 if has_affine else 4))

    return rule


def _batch_norm_rule(a, k, out):
    has_affine = _arg(a, k, 3, "weight") is not None
    numel = math.prod(_shape(_arg(a, k, 0, "input")))
    if _arg(a, k, 5, "training", False):
        return _counted("batch_norm", numel * (5 if has_affine else 4))
    return _counted("batch_norm", numel * (2 if has_affine else 1))


def _interpolate_rule(a, k, out):
    mode = _arg(a, k, 3, "mode", "nearest")
    if out.dim() != 4 or _arg(a, k, 6, "antialias", False):
        return None
    if mode == "nearest":
        return _counted("upsample_nearest2d", out.numel())
    if mode == "bilinear":
        return _counted("upsample_bilinear2d", 4 * out.numel())
    return None


def _einsum_rule(a, k, out):
    operands = a[1] if len(a) == 2 and isinstance(a[1], (list, tuple)) else a[1:]
    return _counted("einsum", einsum_macs(a[0], [_shape(t) for t in operands]))


def _sdpa_rule(a, k, out):
    q, key, v = _arg(a, k, 0, "query"), _arg(a, k, 1, "key"), _arg(a, k, 2, "value")
    return _counted("scaled_dot_product_attention", sdpa_macs(_shape(q), _shape(key), _shape(v), _shape(out)), 0)


def _matmul_rule(op: str, first: tuple[int, str], second: tuple[int, str], fvcore_has_rule: bool = False) -> Rule:
    """matmul/mm/bmm and their add- forms: the true (broadcast) product; fvcore's rule noted beside it."""

    def rule(a, k, out):
        x, y = _shape(_arg(a, k, *first)), _shape(_arg(a, k, *second))
        return _counted(op, matmul_macs(x, y), fvcore_matmul_macs(x, y) if fvcore_has_rule else 0)

    return rule


def _linear_rule(a, k, out):
    x, w = _shape(_arg(a, k, 0, "input")), _shape(_arg(a, k, 1, "weight"))
    return _counted("linear", math.prod(x) * (w[0] if len(w) == 2 else 1))


def _mha_rule(a, k, out):
    """``F.multi_head_attention_forward``: its linear and bmm/SDPA calls run unseen inside it, so they are counted
    here by the operators fvcore sees in a trace of the same call."""
    q, key, v = (_shape(_arg(a, k, i, n)) for i, n in ((0, "query"), (1, "key"), (2, "value")))
    static_k = _arg(a, k, 21, "static_k")
    source = (static_k.shape[1] if static_k is not None else key[0]) + (_arg(a, k, 7, "bias_k") is not None)
    source += bool(_arg(a, k, 9, "add_zero_attn", False))
    projections, product = mha_macs(q, key, v, source)
    if not _arg(a, k, 15, "need_weights", True):
        return Counted({"linear": projections, "scaled_dot_product_attention": 2 * product}, projections)
    masked = _arg(a, k, 16, "attn_mask") is not None or _arg(a, k, 14, "key_padding_mask") is not None
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
    q, key, v = (_shape(_arg(a, k, i, n)) for i, n in ((0, "query"), (1, "key"), (2, "value")))
    return native_mha_counted(q, key, v, _arg(a, k, 10, "need_weights", True))


def _rnn_rule(a, k, out):
    """``_VF.lstm/gru/rnn_*``: the flat weights are the last list among the first arguments (after hx, which is a
    list for LSTM, and batch_sizes for packed sequences)."""
    weights = next((x for x in reversed(a[1:4]) if isinstance(x, (list, tuple))), k.get("params", ()))
    return _counted("rnn", rnn_macs(_shape(a[0]), [_shape(w) for w in weights]), 0)


def _rnn_cell_rule(a, k, out):
    """``_VF.lstm_cell`` and kin: named linear, as a trace records the two gate products of a cell."""
    x, w_ih, w_hh = _arg(a, k, 0, "input"), _arg(a, k, 2, "w_ih"), _arg(a, k, 3, "w_hh")
    return _counted("linear", rnn_macs(_shape(x), [_shape(w_ih), _shape(w_hh)]))


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
    F.adaptive_avg_pool2d: lambda a, k, out: _counted("adaptive_avg_pool2d", _arg(a, k, 0, "input").numel()),
    F.grid_sample: lambda a, k, out: _counted("grid_sampler", 4 * out.numel()),
}

# Operators that cost GEMM work (fvcore's names, and the Python-level names the meta engine sees): one of these
# left uncounted means the totals miss real work, which `flops --strict` refuses.
COSTLY_OPS = frozenset(
    """linear bilinear matmul rmatmul imatmul mm bmm addmm addbmm baddbmm addmv mv dot vdot inner outer ger addr
    einsum tensordot kron chain_matmul linalg_multi_dot multi_dot linalg_vecdot cdist conv1d conv2d conv3d
    conv_transpose1d conv_transpose2d conv_transpose3d convolution conv_tbc scaled_dot_product_attention
    multi_head_attention_forward native_multi_head_attention transformer_encoder_layer_fwd lstm gru rnn_tanh
    rnn_relu lstm_cell gru_cell rnn_tanh_cell rnn_relu_cell quantized_lstm quantized_gru""".split()
)
_COSTLY_PARTS = ("matmul", "attention", "convolution", "lstm", "gru")


def is_costly(op: str) -> bool:
    """Whether an operator (by either engine's name) does GEMM-like work: matrix products, convolutions,
    attention, recurrent gates."""
    base = op.split("::")[-1].split(".")[-1].strip("_")
    return base in COSTLY_OPS or any(part in base for part in _COSTLY_PARTS)


# Calls that move or reshape data, or build constants: neither counted nor worth reporting as missed.
_DATA_MOVEMENT = frozenset(
    """__get__ __getitem__ __setitem__ __len__ __iter__ __bool__ __format__ __eq__ __ne__ __lt__ __gt__ __le__
    __ge__ __and__ __or__ __invert__ __hash__ __index__ __int__ __float__ __floordiv__ __rfloordiv__ dim size numel
    view view_as reshape reshape_as permute transpose contiguous flatten unflatten expand expand_as repeat squeeze
    unsqueeze t cat concat stack split chunk unbind narrow pad to type float half double clone detach
    requires_grad_ zeros zeros_like ones ones_like full full_like new_zeros new_ones new_full new_empty empty
    empty_like arange linspace masked_fill masked_fill_ dropout dropout2d dropout1d feature_alpha_dropout
    alpha_dropout flip roll tolist item split_with_sizes movedim swapaxes get_device is_contiguous
    is_floating_point __repr__ __format__ __contains__ __reversed__ copy_ fill_ zero_ stride data_ptr
    element_size storage_offset _is_view untyped_storage identity meshgrid tensor_split broadcast_tensors hsplit
    vsplit dsplit unsafe_split unsafe_chunk""".split()
)


# Shape functions for the calls whose meta kernels are slow Python refs in recent torch (norms, activations,
# attention, resizes, linear, add): on meta tensors their output is just an empty tensor of a known shape.
# tests/test_engines.py holds the result equal to fvcore's own count on every registered model.


def _like_input(a, k):
    """relu, hardswish, silu, ...: ``(input, inplace=False)``; in place returns the input itself."""
    x = _arg(a, k, 0, "input")
    return x if _arg(a, k, 1, "inplace", False) else torch.empty_like(x)


def _linear_shape(a, k):
    x, w = _arg(a, k, 0, "input"), _arg(a, k, 1, "weight")
    if x.shape[-1] != w.shape[-1]:  # torch's own kernel then raises the real error
        raise ValueError("linear: input and weight sizes differ")
    return x.new_empty((*x.shape[:-1], w.shape[0]))


def _layer_norm_shape(a, k):
    x, normalized = _arg(a, k, 0, "input"), tuple(_arg(a, k, 1, "normalized_shape"))
    if tuple(x.shape[x.dim() - len(normalized):]) != normalized:
        raise ValueError("layer_norm: input and normalized_shape differ")
    return torch.empty_like(x)


def _sdpa_shape(a, k):
    q, v = _arg(a, k, 0, "query"), _arg(a, k, 2, "value")
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


def _interpolate_shape(a, k):
    x = _arg(a, k, 0, "input")
    size, scale = _arg(a, k, 1, "size"), _arg(a, k, 2, "scale_factor")
    spatial = x.dim() - 2
    if size is not None:
        out = [int(size)] * spatial if isinstance(size, int) else [int(s) for s in size]
    else:
        scales = [scale] * spatial if isinstance(scale, (int, float)) else list(scale)
        out = [math.floor(float(n) * float(f)) for n, f in zip(x.shape[2:], scales)]
    return x.new_empty((*x.shape[:2], *out))


def _add_shape(a, k):
    x, y = _arg(a, k, 0, "input"), _arg(a, k, 1, "other")
    if not isinstance(y, torch.Tensor):
        return torch.empty_like(x)
    shape = torch.broadcast_shapes(x.shape, y.shape)
    return torch.empty(shape, dtype=torch.result_type(x, y), device="meta")


_ELEMENTWISE = (F.layer_norm, F.group_norm, F.batch_norm, F.instance_norm, F.gelu, F.softmax, torch.softmax,
                torch.Tensor.softmax, F.dropout, F.dropout2d)
_ELEMENTWISE_MAYBE_INPLACE = (F.hardswish, F.relu, F.silu, F.hardsigmoid, F.relu6)
SHAPE_FUNCTIONS: dict[Any, Callable] = {
    **{f: (lambda a, k: torch.empty_like(_arg(a, k, 0, "input"))) for f in _ELEMENTWISE if f is not F.layer_norm},
    **{f: _like_input for f in _ELEMENTWISE_MAYBE_INPLACE},
    F.linear: _linear_shape,
    F.layer_norm: _layer_norm_shape,
    F.scaled_dot_product_attention: _sdpa_shape,
    F.interpolate: _interpolate_shape,
    torch.add: _add_shape,
    torch.Tensor.add: _add_shape,
    torch.Tensor.__add__: _add_shape,
}


def _all_meta(args, kwargs) -> bool:
    tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
    return bool(tensors) and all(t.is_meta for t in tensors)


def _op_name(func) -> str:
    return getattr(func, "__name__", None) or str(func)


class _ParameterReads(TorchFunctionMode):
    """Records every parameter a torch call reads: a model may use a layer's weight without calling the layer
    (fused or split products), which fvcore's "uncalled modules" would misreport as unused."""

    def __init__(self):
        super().__init__()
        self.read: set[int] = set()

    def _note_reads(self, args, kwargs):
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, nn.Parameter):
                self.read.add(id(arg))
            elif isinstance(arg, (list, tuple)):
                self.read.update(id(a) for a in arg if isinstance(a, nn.Parameter))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self._note_reads(args, kwargs)
        return func(*args, **kwargs)


class CountingError(RuntimeError):
    """The engine could not count a call (its rule failed, or nothing real to fall back on): never a zero."""


class _MetaCallFailed(RuntimeError):
    """A torch call that cannot run on meta tensors; the fvcore engine on real tensors may still count it."""

    def __init__(self, op: str, reason: str):
        super().__init__(f"the meta engine cannot run {op}: {reason}")
        self.op, self.reason = op, reason


def _tensors(values) -> list[torch.Tensor]:
    out = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(_tensors(v))
    return out


def _why_not_on_meta(op: str, args, kwargs, exc: Exception) -> str:
    """One phrase: why a call failed on meta tensors."""
    if any(not t.is_meta and t.dim() > 0 for t in _tensors((*args, *kwargs.values()))):
        return "it reads a plain tensor kept outside the module's parameters and buffers, so not moved to meta"
    text = str(exc)
    if op in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero") or any(
        word in text for word in ("data-independent", "item() cannot be called", "data-dependent", "no fake impl")
    ):
        return "its result depends on tensor values, which meta tensors do not hold"
    return first_line(exc)


def _returns_tensor(out) -> bool:
    return isinstance(out, torch.Tensor) or (isinstance(out, (list, tuple)) and any(
        isinstance(o, torch.Tensor) for o in out))


class _ShapeCountingMode(_ParameterReads):
    """Applies RULES to each Python-level torch call, attributing MACs to the innermost running module.

    Every call is accounted for: counted by a rule, or listed as uncounted (whatever it returns; a Python-level
    composite such as ``F.normalize`` runs its parts unseen, so it is listed by its own name)."""

    def __init__(self, scope: list[str]):
        super().__init__()
        self.scope = scope
        self.macs: dict[str, Counter] = defaultdict(Counter)
        self.uncounted: dict[str, Counter] = defaultdict(Counter)
        self.counted_calls = 0
        self.composites: set[str] = set()
        self.differences: dict[str, Counter] = defaultdict(Counter)  # where plain fvcore's rule would differ

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self._note_reads(args, kwargs)
        shape_function = SHAPE_FUNCTIONS.get(func)
        out = None
        if shape_function is not None and "out" not in kwargs and _all_meta(args, kwargs):
            with contextlib.suppress(Exception):  # a shortcut only: torch's own meta kernel decides below
                out = shape_function(args, kwargs)
        try:
            if out is None:
                out = func(*args, **kwargs)
        except Exception as exc:
            op = _op_name(func)
            raise _MetaCallFailed(op, _why_not_on_meta(op, args, kwargs, exc)) from exc
        rule = RULES.get(func)
        try:
            counted = rule(args, kwargs, out) if rule is not None else None
        except Exception as exc:
            raise CountingError(f"the rule for {_op_name(func)} failed on {_describe(args, kwargs)}: "
                                f"{type(exc).__name__}: {first_line(exc)}") from exc
        if counted is not None:
            self.counted_calls += 1
            self.macs[self.scope[-1]].update(counted.by_op)
            _note_difference(self.differences, _op_name(func).strip("_"), counted)
        elif _returns_tensor(out) and _op_name(func) not in _DATA_MOVEMENT:
            self.uncounted[self.scope[-1]][_op_name(func)] += 1
            if isinstance(func, pytypes.FunctionType):
                self.composites.add(_op_name(func))
        return out


def _describe(args, kwargs) -> str:
    shapes = [tuple(t.shape) for t in _tensors((*args, *kwargs.values()))]
    return "shapes " + ", ".join(str(list(s)) for s in shapes) if shapes else "no tensors"


def _note_difference(differences: dict[str, Counter], op: str, counted: Counted) -> None:
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


@contextlib.contextmanager
def _module_scope(model: nn.Module):
    """Yield a stack whose top is the name of the module whose forward is running; record who was called."""
    names = {id(m): n for n, m in model.named_modules()}
    stack, called = [""], set()

    def enter(module, inputs):
        name = names.get(id(module))
        stack.append(stack[-1] if name is None else name)
        if name is not None:
            called.add(name)

    def leave(module, inputs, output):
        stack.pop()

    pre = nn.modules.module.register_module_forward_pre_hook(enter)
    post = nn.modules.module.register_module_forward_hook(leave, always_call=True)
    try:
        yield stack, called
    finally:
        pre.remove()
        post.remove()


def _roll_up(leaf_counts: dict[str, Counter], module_names) -> dict[str, Counter]:
    """fvcore's 'owner' attribution: an op inside ``a.b.c`` counts for ``a.b.c``, ``a.b``, ``a`` and ``''``."""
    rolled: dict[str, Counter] = {name: Counter() for name in module_names}
    rolled.setdefault("", Counter())
    for name, counts in leaf_counts.items():
        parts = name.split(".") if name else []
        for i in range(len(parts) + 1):
            rolled.setdefault(".".join(parts[:i]), Counter()).update(counts)
    return rolled


def _count_meta(model: nn.Module, inputs: tuple) -> "_RawCounts":
    with _module_scope(model) as (stack, called), _ShapeCountingMode(stack) as mode, torch.no_grad():
        model(*inputs)
    names = [n for n, _ in model.named_modules()]
    uncalled = {n for n in names if n and n not in called}
    return _RawCounts(_roll_up(mode.macs, names), _roll_up(mode.uncounted, names)[""], uncalled, mode.read,
                      mode.counted_calls, mode.composites, mode.differences)


# --------------------------------------------------------------------------------------------------------------
# The fvcore engine, with the two handles it lacks.


def _shapes(values) -> list[list[int]]:
    from fvcore.nn.jit_handles import get_shape

    return [get_shape(v) for v in values]


def _list_shapes(value) -> list[list[int]]:
    """Shapes of the tensors in a traced list argument (a ``prim::ListConstruct``)."""
    return _shapes(value.node().inputs())


def _fvcore_sdpa_handle(inputs, outputs) -> Counted:
    q, k, v, out = _shapes([*inputs[:3], outputs[0]])
    return _counted("scaled_dot_product_attention", sdpa_macs(q, k, v, out), 0)


def _fvcore_einsum_handle(inputs, outputs) -> Counted:
    return _counted("einsum", einsum_macs(inputs[0].toIValue(), _list_shapes(inputs[1])))


def _fvcore_product_handle(op: str, first: int, plain_rule: bool) -> Callable:
    """aten::matmul and the products fvcore has no rule for (baddbmm, addbmm, mv, addmv, dot, vdot)."""

    def handle(inputs, outputs) -> Counted:
        a, b = _shapes(inputs[first : first + 2])
        return _counted(op, matmul_macs(a, b), fvcore_matmul_macs(a, b) if plain_rule else 0)

    return handle


def _fvcore_rnn_handle(inputs, outputs) -> Counted:
    """aten::lstm/gru/rnn_*: the flat weights are the last list among inputs 1-3 (see ``_rnn_rule``)."""
    weights = next(v for v in reversed(inputs[1:4]) if v.type().kind() == "ListType")
    return _counted("rnn", rnn_macs(_shapes(inputs[:1])[0], _list_shapes(weights)), 0)


def _fvcore_rnn_cell_handle(inputs, outputs) -> Counted:
    """aten::lstm_cell and kin, where a trace keeps them whole (torch 2.x traces their two linear calls)."""
    x, w_ih, w_hh = _shapes([inputs[0], inputs[2], inputs[3]])
    return _counted("linear", rnn_macs(x, [w_ih, w_hh]), 0)


def _fvcore_native_mha_handle(inputs, outputs) -> Counted:
    q, k, v = _shapes(inputs[:3])
    return native_mha_counted(q, k, v, inputs[10].toIValue())


EXTRA_FVCORE_HANDLES: dict[str, Callable] = {
    "aten::scaled_dot_product_attention": _fvcore_sdpa_handle,
    "aten::einsum": _fvcore_einsum_handle,
    "aten::matmul": _fvcore_product_handle("matmul", 0, True),
    "aten::baddbmm": _fvcore_product_handle("baddbmm", 1, False),
    "aten::addmm_": _fvcore_product_handle("addmm", 1, False),
    "aten::baddbmm_": _fvcore_product_handle("baddbmm", 1, False),
    "aten::addbmm_": _fvcore_product_handle("addbmm", 1, False),
    "aten::addmv_": _fvcore_product_handle("addmv", 1, False),
    "aten::addbmm": _fvcore_product_handle("addbmm", 1, False),
    "aten::mv": _fvcore_product_handle("mv", 0, False),
    "aten::addmv": _fvcore_product_handle("addmv", 1, False),
    "aten::dot": _fvcore_product_handle("dot", 0, False),
    "aten::vdot": _fvcore_product_handle("dot", 0, False),
    **{f"aten::{op}": _fvcore_rnn_handle for op in ("lstm", "gru", "rnn_tanh", "rnn_relu")},
    **{f"aten::{op}": _fvcore_rnn_cell_handle for op in ("lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell")},
    "aten::_native_multi_head_attention": _fvcore_native_mha_handle,
}


class _FvcoreRecorder:
    """Wraps every fvcore handle: counts the calls it counted, notes where plain fvcore would differ, and turns a
    handle's failure into an error naming the operator (never an input the model refused)."""

    def __init__(self):
        self.counted_calls = 0
        self.differences: dict[str, Counter] = defaultdict(Counter)

    def wrap(self, name: str, handle: Callable) -> Callable:
        op = name.removeprefix("aten::")

        def counted(inputs, outputs):
            try:
                result = handle(inputs, outputs)
            except Exception as exc:
                raise CountingError(f"the fvcore rule for {name} failed on shapes {_shapes(inputs)}: "
                                    f"{type(exc).__name__}: {first_line(exc)}") from exc
            self.counted_calls += 1
            if isinstance(result, Counted):
                _note_difference(self.differences, op, result)
                return Counter(result.by_op)
            return result

        return counted


@contextlib.contextmanager
def quiet():
    """fvcore and the JIT tracer warn loudly about things we report as data instead."""
    loggers = [logging.getLogger(n) for n in ("fvcore", "fvcore.nn.jit_analysis")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _count_fvcore(model: nn.Module, inputs: tuple) -> "_RawCounts":
    with quiet():
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

        recorder = _FvcoreRecorder()
        handles = {**_DEFAULT_SUPPORTED_OPS, **EXTRA_FVCORE_HANDLES}
        analysis = FlopCountAnalysis(model, inputs).set_op_handle(
            **{name: recorder.wrap(name, h) for name, h in handles.items() if h is not None})
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        with _ParameterReads() as reads:  # the trace runs here, lazily
            by_module = {name: Counter(ops) for name, ops in analysis.by_module_and_operator().items()}
        unsupported = Counter()
        for op, calls in analysis.unsupported_ops().items():
            name = op.removeprefix("aten::")
            if name not in _DATA_MOVEMENT and name.rstrip("_") not in _DATA_MOVEMENT:
                unsupported[name] += calls
        uncalled = set(analysis.uncalled_modules())
    return _RawCounts(by_module, unsupported, uncalled, reads.read, recorder.counted_calls, set(),
                      recorder.differences)


@dataclass
class _RawCounts:
    by_module: dict[str, Counter]  # module name -> operator -> MACs, rolled up ("" is the whole model)
    uncounted_ops: Counter  # operator -> calls that no rule counts
    uncalled_modules: set[str]  # fvcore's notion: modules whose forward never ran
    read_parameters: set[int]  # ids of the parameters forward read
    counted_calls: int = 0  # calls a rule counted
    composites: set[str] = field(default_factory=set)  # uncounted calls whose parts ran unseen
    differences: dict[str, Counter] = field(default_factory=dict)  # op -> where plain fvcore's rule differs


# --------------------------------------------------------------------------------------------------------------
# The result.


def _calls(n: int) -> str:
    return f"{n:,} call" + ("" if n == 1 else "s")


@dataclass
class Coverage:
    """How much of one forward the count saw: calls a rule counted, calls none did, and which of those cost
    GEMM work (their MACs are missing from the totals)."""

    counted_calls: int
    uncounted_calls: dict[str, int]  # operator -> calls no rule counts
    composites: list[str]  # of those, Python-level calls whose parts ran unseen
    costly_uncounted: dict[str, int]  # of those, GEMM-like operators

    @property
    def complete(self) -> bool:
        return not self.costly_uncounted

    def line(self) -> str:
        """One line for under the table."""
        uncounted = sum(self.uncounted_calls.values())
        text = f"coverage: {_calls(self.counted_calls)} counted by a rule, {uncounted:,} without one"
        if uncounted:
            top = sorted(self.uncounted_calls.items(), key=lambda kv: (-kv[1], kv[0]))
            text += " (" + ", ".join(f"{op} {n}" for op, n in top[:3]) + (", ..." if len(top) > 3 else "")
            hidden = sum(self.uncounted_calls.get(op, 0) for op in self.composites)
            text += f"; {hidden:,} composite, parts unseen" if hidden else ""
            text += ")"
        if self.costly_uncounted:
            n = sum(self.costly_uncounted.values())
            costly = ", ".join(f"{op} {n}" for op, n in sorted(self.costly_uncounted.items()))
            return text + f", {_calls(n)} GEMM-like UNCOUNTED: {costly} (missing from the totals)"
        return text + ", 0 GEMM-like calls uncounted"

    def to_dict(self) -> dict:
        return {
            "counted_calls": self.counted_calls,
            "uncounted_calls": sum(self.uncounted_calls.values()),
            "uncounted_by_operator": dict(self.uncounted_calls),
            "composite_calls": list(self.composites),
            "costly_uncounted": dict(self.costly_uncounted),
            "complete": self.complete,
            "line": self.line(),
        }


@dataclass
class MacCount:
    """MACs of one forward, per module and operator, renderable under any convention."""

    model: str
    input_shape: tuple[int, ...]
    engine: str
    params: int
    trainable_params: int
    unused_params: int  # parameters forward never reads
    by_module: dict[str, dict[str, int]]
    uncounted_ops: dict[str, int]
    unused_parameter_names: list[str] = field(default_factory=list)
    uncalled_modules: list[str] = field(default_factory=list)  # fvcore's: modules with parameters never called
    counted_calls: int = 0  # calls a rule counted
    composite_ops: list[str] = field(default_factory=list)  # uncounted calls whose parts ran unseen
    fvcore_differences: dict[str, dict[str, int]] = field(default_factory=dict)  # op -> where plain fvcore differs
    notes: list[str] = field(default_factory=list)  # one line each: why the count was made as it was

    @property
    def coverage(self) -> Coverage:
        costly = {op: n for op, n in self.uncounted_ops.items() if is_costly(op)}
        return Coverage(self.counted_calls, dict(self.uncounted_ops), list(self.composite_ops), costly)

    @property
    def by_operator(self) -> dict[str, int]:
        return dict(self.by_module.get("", {}))

    def total(self, convention: Convention = DEFAULT) -> int:
        return convention.count(self.by_operator)

    def module_totals(self, depth: int, convention: Convention = DEFAULT) -> dict[str, int]:
        """Counts of the modules at most ``depth`` dots deep (the model itself is depth 0)."""
        return {
            name: convention.count(ops)
            for name, ops in self.by_module.items()
            if module_depth(name) <= depth and convention.count(ops) > 0
        }

    def conventions(self, conventions=ALL_CONVENTIONS) -> dict[str, dict]:
        out = {}
        for c in conventions:
            raw = self.total(c)
            out[c.name] = {"label": c.label, "count": raw, "giga": c.giga_value(raw)}
        return out

    def to_dict(self, conventions=ALL_CONVENTIONS) -> dict:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "engine": self.engine,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "unused_params": self.unused_params,
            "unused_parameter_names": self.unused_parameter_names,
            "macs_by_operator": self.by_operator,
            "flops": self.conventions(conventions),
            "uncounted_ops": dict(self.uncounted_ops),
            "uncalled_modules": self.uncalled_modules,
            "coverage": self.coverage.to_dict(),
            "fvcore_differences": self.fvcore_differences,
            "notes": self.notes,
        }


def module_depth(name: str) -> int:
    """'' (the model itself) is 0, 'backbone' 1, 'backbone.stage1' 2."""
    return name.count(".") + 1 if name else 0


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(total, trainable), counting each shared parameter once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def unread_parameters(model: nn.Module, read: set[int]) -> dict[str, int]:
    """Name -> size of each parameter that forward never read."""
    return {name: p.numel() for name, p in model.named_parameters() if id(p) not in read}


def owners_of_parameters(model: nn.Module, uncalled: set[str]) -> list[str]:
    return sorted(n for n, m in model.named_modules() if n in uncalled and any(True for _ in m.parameters(False)))


def _count_meta_or_fall_back(model: nn.Module, inputs: tuple[torch.Tensor, ...]
                             ) -> tuple[str, "_RawCounts", nn.Module, list[str]]:
    """The meta engine on a meta copy; where a call cannot run on meta tensors, fvcore on the real model, with a
    note saying why. A model already on meta has nothing real to fall back on: that fails naming the operator."""
    state = [*model.parameters(), *model.buffers()]
    on_meta = bool(state) and all(t.is_meta for t in state)
    meta_model = model if on_meta else copy.deepcopy(model).to("meta")
    try:
        return "meta", _count_meta(meta_model, tuple(t.to("meta") for t in inputs)), meta_model, []
    except _MetaCallFailed as exc:
        if on_meta:
            raise NeedsRealTensors(exc.op, exc.reason) from exc
        note = f"the meta engine could not run {exc.op} ({exc.reason}): counted by fvcore on real tensors"
    return "fvcore", _count_fvcore(model, real_inputs(inputs)), model, [note]


def real_inputs(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """fvcore (and the cross-checks) run real tensors: meta inputs become zeros of their shape and dtype."""
    return tuple(torch.zeros(t.shape, dtype=t.dtype) if t.is_meta else t for t in inputs)


class NeedsRealTensors(CountingError):
    """The meta engine failed on a model that is itself on meta: count a real copy instead."""

    def __init__(self, op: str, reason: str):
        super().__init__(f"the meta engine cannot run {op} ({reason}) and the model is on the meta device: "
                         "count it with --engine fvcore")
        self.op, self.reason = op, reason


Inputs = "tuple[int, ...] | tuple[torch.Tensor, ...] | torch.Tensor"


def _as_inputs(inputs) -> tuple[tuple[torch.Tensor, ...], tuple]:
    """(the forward's positional tensors, the shape label): one input's shape, or a tuple of the shapes."""
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    inputs = tuple(inputs)
    if inputs and all(isinstance(d, int) and not isinstance(d, bool) for d in inputs):
        return (torch.zeros(inputs, device="meta"),), inputs
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise ValueError("inputs must be a shape (a tuple of ints) or a tensor or tuple of tensors, not "
                         f"{tuple(type(t).__name__ for t in inputs)}")
    shapes = tuple(tuple(t.shape) for t in inputs)
    return inputs, shapes[0] if len(shapes) == 1 else shapes


def count_macs(model: nn.Module, inputs: Inputs, *, engine: str = "meta", name: str = "") -> MacCount:
    """Count one forward of ``model`` on ``inputs``: a shape such as (B, C, H, W) (zeros of it are fed), or a
    tensor or tuple of tensors passed as the forward's positional arguments.

    ``engine="meta"`` moves a copy of the model, and the inputs, to the meta device (the caller's model is left
    alone unless it already is on meta) and falls back to fvcore on the caller's real model where a call cannot run
    on meta; ``engine="fvcore"`` runs fvcore on real tensors (meta inputs become zeros).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}")
    tensors, input_shape = _as_inputs(inputs)
    model = model.eval()
    params, trainable = parameter_counts(model)
    notes: list[str] = []
    if engine == "meta":
        engine, raw, counted_model, notes = _count_meta_or_fall_back(model, tensors)
    else:
        raw, counted_model = _count_fvcore(model, real_inputs(tensors)), model
    by_module = {n: {op: int(v) for op, v in ops.items() if v} for n, ops in raw.by_module.items()}
    unread = unread_parameters(counted_model, raw.read_parameters)
    return MacCount(
        model=name,
        input_shape=input_shape,
        engine=engine,
        params=params,
        trainable_params=trainable,
        unused_params=sum(unread.values()),
        by_module=by_module,
        uncounted_ops=dict(raw.uncounted_ops),
        unused_parameter_names=sorted(unread),
        uncalled_modules=owners_of_parameters(model, raw.uncalled_modules),
        counted_calls=raw.counted_calls,
        composite_ops=sorted(raw.composites),
        fvcore_differences={op: dict(row) for op, row in sorted(raw.differences.items())},
        notes=notes,
    )
