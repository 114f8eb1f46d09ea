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
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .conventions import ALL_CONVENTIONS, DEFAULT, Convention

ENGINES = ("meta", "fvcore")


# --------------------------------------------------------------------------------------------------------------
# Pure counting rules: shapes in, MACs out. Shared by both engines.


def einsum_macs(equation: str, shapes: list[list[int]]) -> int:
    """Exact MACs of ``torch.einsum``: one multiply per point of the joint index space of each contraction.

    Operands are contracted left to right, as torch does without opt_einsum; an intermediate keeps the indices
    still needed by later operands or the output.
    """
    equation = equation.replace(" ", "")
    lhs, _, out = equation.partition("->")
    terms = lhs.split(",")
    if "..." in equation:
        raise NotImplementedError("einsum with ellipsis")
    if not out and "->" not in equation:  # implicit output: letters appearing once, sorted
        letters = "".join(terms)
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
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
    """fvcore's rule for matmul/mm: all of a's elements times b's last dimension."""
    return math.prod(a_shape) * b_shape[-1]


# --------------------------------------------------------------------------------------------------------------
# The shape-only engine: fvcore's rules applied to Python-level torch calls on meta tensors.

Rule = Callable[[tuple, dict, Any], "tuple[str, int] | None"]


def _arg(args: tuple, kwargs: dict, index: int, name: str, default=None):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _shape(t) -> list[int]:
    return list(t.shape)


def _conv_rule(transposed: bool) -> Rule:
    return lambda a, k, out: ("conv", conv_macs(_shape(a[0]), _shape(a[1]), _shape(out), transposed))


def _norm_rule(op: str, weight_index: int, weight_name: str) -> Rule:
    def rule(a, k, out):
        has_affine = _arg(a, k, weight_index, weight_name) is not None
        return op, math.prod(_shape(a[0])) * (5 if has_affine else 4)

    return rule


def _batch_norm_rule(a, k, out):
    has_affine = _arg(a, k, 3, "weight") is not None
    numel = math.prod(_shape(a[0]))
    if _arg(a, k, 5, "training", False):
        return "batch_norm", numel * (5 if has_affine else 4)
    return "batch_norm", numel * (2 if has_affine else 1)


def _interpolate_rule(a, k, out):
    mode = _arg(a, k, 3, "mode", "nearest")
    if out.dim() != 4 or _arg(a, k, 6, "antialias", False):
        return None
    if mode == "nearest":
        return "upsample_nearest2d", out.numel()
    if mode == "bilinear":
        return "upsample_bilinear2d", 4 * out.numel()
    return None


def _einsum_rule(a, k, out):
    operands = a[1] if len(a) == 2 and isinstance(a[1], (list, tuple)) else a[1:]
    return "einsum", einsum_macs(a[0], [_shape(t) for t in operands])


def _sdpa_rule(a, k, out):
    q, key, v = a[0], _arg(a, k, 1, "key"), _arg(a, k, 2, "value")
    return "scaled_dot_product_attention", sdpa_macs(_shape(q), _shape(key), _shape(v), _shape(out))


_matmul: Rule = lambda a, k, out: ("matmul", matmul_macs(_shape(a[0]), _shape(a[1])))
_rmatmul: Rule = lambda a, k, out: ("matmul", matmul_macs(_shape(a[1]), _shape(a[0])))

RULES: dict[Any, Rule] = {
    torch.conv1d: _conv_rule(False),
    torch.conv2d: _conv_rule(False),
    torch.conv3d: _conv_rule(False),
    torch.conv_transpose1d: _conv_rule(True),
    torch.conv_transpose2d: _conv_rule(True),
    torch.conv_transpose3d: _conv_rule(True),
    F.linear: lambda a, k, out: ("linear", math.prod(_shape(a[0])) * a[1].shape[0]),
    torch.matmul: _matmul,
    torch.Tensor.matmul: _matmul,
    torch.Tensor.__matmul__: _matmul,
    torch.Tensor.__rmatmul__: _rmatmul,
    torch.mm: lambda a, k, out: ("mm", matmul_macs(_shape(a[0]), _shape(a[1]))),
    torch.Tensor.mm: lambda a, k, out: ("mm", matmul_macs(_shape(a[0]), _shape(a[1]))),
    torch.bmm: lambda a, k, out: ("bmm", math.prod(_shape(a[0])) * a[1].shape[-1]),
    torch.Tensor.bmm: lambda a, k, out: ("bmm", math.prod(_shape(a[0])) * a[1].shape[-1]),
    torch.addmm: lambda a, k, out: ("addmm", a[1].shape[0] * a[1].shape[1] * a[2].shape[1]),
    torch.einsum: _einsum_rule,
    F.scaled_dot_product_attention: _sdpa_rule,
    F.batch_norm: _batch_norm_rule,
    F.layer_norm: _norm_rule("layer_norm", 2, "weight"),
    F.group_norm: _norm_rule("group_norm", 2, "weight"),
    F.instance_norm: _norm_rule("instance_norm", 3, "weight"),
    F.interpolate: _interpolate_rule,
    F.adaptive_avg_pool2d: lambda a, k, out: ("adaptive_avg_pool2d", a[0].numel()),
    F.grid_sample: lambda a, k, out: ("grid_sampler", 4 * out.numel()),
}

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
    element_size storage_offset _is_view untyped_storage identity""".split()
)


# Shape functions for the calls whose meta kernels are slow Python refs in recent torch (norms, activations,
# attention, resizes, linear, add): on meta tensors their output is just an empty tensor of a known shape.
# tests/test_engines.py holds the result equal to fvcore's own count on every registered model.


def _like_input(a, k):
    """relu, hardswish, silu, ...: ``(input, inplace=False)``; in place returns the input itself."""
    return a[0] if _arg(a, k, 1, "inplace", False) else torch.empty_like(a[0])


def _linear_shape(a, k):
    x, w = a[0], _arg(a, k, 1, "weight")
    return x.new_empty((*x.shape[:-1], w.shape[0]))


def _sdpa_shape(a, k):
    q, v = a[0], _arg(a, k, 2, "value")
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


def _interpolate_shape(a, k):
    x = a[0]
    size, scale = _arg(a, k, 1, "size"), _arg(a, k, 2, "scale_factor")
    spatial = x.dim() - 2
    if size is not None:
        out = [int(size)] * spatial if isinstance(size, int) else [int(s) for s in size]
    else:
        scales = [scale] * spatial if isinstance(scale, (int, float)) else list(scale)
        out = [math.floor(float(n) * float(f)) for n, f in zip(x.shape[2:], scales)]
    return x.new_empty((*x.shape[:2], *out))


def _add_shape(a, k):
    x, y = a[0], a[1]
    if not isinstance(y, torch.Tensor):
        return torch.empty_like(x)
    shape = torch.broadcast_shapes(x.shape, y.shape)
    return torch.empty(shape, dtype=torch.result_type(x, y), device="meta")


_ELEMENTWISE = (F.layer_norm, F.group_norm, F.batch_norm, F.instance_norm, F.gelu, F.softmax, torch.softmax,
                torch.Tensor.softmax, F.dropout, F.dropout2d)
_ELEMENTWISE_MAYBE_INPLACE = (F.hardswish, F.relu, F.silu, F.hardsigmoid, F.relu6)
SHAPE_FUNCTIONS: dict[Any, Callable] = {
    **{f: (lambda a, k: torch.empty_like(a[0])) for f in _ELEMENTWISE},
    **{f: _like_input for f in _ELEMENTWISE_MAYBE_INPLACE},
    F.linear: _linear_shape,
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


class _ShapeCountingMode(_ParameterReads):
    """Applies RULES to each Python-level torch call, attributing MACs to the innermost running module."""

    def __init__(self, scope: list[str]):
        super().__init__()
        self.scope = scope
        self.macs: dict[str, Counter] = defaultdict(Counter)
        self.uncounted: dict[str, Counter] = defaultdict(Counter)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self._note_reads(args, kwargs)
        shape_function = SHAPE_FUNCTIONS.get(func)
        if shape_function is not None and "out" not in kwargs and _all_meta(args, kwargs):
            out = shape_function(args, kwargs)
        else:
            out = func(*args, **kwargs)
        rule = RULES.get(func)
        counted = rule(args, kwargs, out) if rule is not None else None
        if counted is not None:
            self.macs[self.scope[-1]][counted[0]] += counted[1]
        elif isinstance(out, torch.Tensor) and _op_name(func) not in _DATA_MOVEMENT:
            self.uncounted[self.scope[-1]][_op_name(func)] += 1
        return out


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
    return _RawCounts(_roll_up(mode.macs, names), _roll_up(mode.uncounted, names)[""], uncalled, mode.read)


# --------------------------------------------------------------------------------------------------------------
# The fvcore engine, with the two handles it lacks.


def _fvcore_sdpa_handle(inputs, outputs):
    from fvcore.nn.jit_handles import get_shape

    return sdpa_macs(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(inputs[2]), get_shape(outputs[0]))


def _fvcore_einsum_handle(inputs, outputs):
    from fvcore.nn.jit_handles import get_shape

    equation = inputs[0].toIValue()
    shapes = [get_shape(v) for v in inputs[1].node().inputs()]
    return einsum_macs(equation, shapes)


EXTRA_FVCORE_HANDLES = {
    "aten::scaled_dot_product_attention": _fvcore_sdpa_handle,
    "aten::einsum": _fvcore_einsum_handle,
}


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

        analysis = FlopCountAnalysis(model, inputs).set_op_handle(**EXTRA_FVCORE_HANDLES)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        with _ParameterReads() as reads:  # the trace runs here, lazily
            by_module = {name: Counter(ops) for name, ops in analysis.by_module_and_operator().items()}
        unsupported = Counter()
        for op, calls in analysis.unsupported_ops().items():
            name = op.removeprefix("aten::")
            if name not in _DATA_MOVEMENT and name.rstrip("_") not in _DATA_MOVEMENT:
                unsupported[name] += calls
        uncalled = set(analysis.uncalled_modules())
    return _RawCounts(by_module, unsupported, uncalled, reads.read)


@dataclass
class _RawCounts:
    by_module: dict[str, Counter]  # module name -> operator -> MACs, rolled up ("" is the whole model)
    uncounted_ops: Counter  # operator -> calls that no rule counts
    uncalled_modules: set[str]  # fvcore's notion: modules whose forward never ran
    read_parameters: set[int]  # ids of the parameters forward read


# --------------------------------------------------------------------------------------------------------------
# The result.


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
    alone unless it already is on meta); ``engine="fvcore"`` runs fvcore on real tensors (meta inputs become zeros).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}")
    tensors, input_shape = _as_inputs(inputs)
    model = model.eval()
    params, trainable = parameter_counts(model)
    if engine == "meta":
        on_meta = all(p.is_meta for p in model.parameters())
        meta_model = model if on_meta else copy.deepcopy(model).to("meta")
        raw = _count_meta(meta_model, tuple(t.to("meta") for t in tensors))
    else:
        real = tuple(torch.zeros(t.shape, dtype=t.dtype) if t.is_meta else t for t in tensors)
        raw = _count_fvcore(model, real)
    by_module = {n: {op: int(v) for op, v in ops.items() if v} for n, ops in raw.by_module.items()}
    counted_model = meta_model if engine == "meta" else model
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
    )
