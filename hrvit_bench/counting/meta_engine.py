"""The shape-only engine: fvcore's rules applied to torch calls on meta tensors, with no arithmetic.

A ``TorchFunctionMode`` sees the Python-level calls ``torch.jit.trace`` records (``linear``, ``matmul``,
``conv2d``, ...) and counts them with ``rules.RULES``; global module hooks give each call its module scope. Code the
Python level never sees (a TorchScript function or module called inside forward) still reaches the dispatcher: a
``TorchDispatchMode`` counts the aten operators that run outside every Python-level call with
``rules.ATEN_RULES``. The two modes never count one call twice: while a Python-level call runs, the dispatcher's
operators are its parts; while an aten operator runs, the Python calls of its meta kernel are its own.
"""
from __future__ import annotations

import contextlib
import types as pytypes
from collections import Counter, defaultdict

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import first_line
from .errors import CountingError, MetaCallFailed
from .params import ParameterReads
from .result import RawCounts
from .rules import ATEN_RULES, RULES, Counted, note_difference
from .shapes import SHAPE_FUNCTIONS
from .vocabulary import moves_data


def _all_meta(args, kwargs) -> bool:
    tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
    return bool(tensors) and all(t.is_meta for t in tensors)


def op_name(func) -> str:
    """A Python-level call's name ("linear"); an aten operator's packet name ("mm" for aten.mm.default)."""
    packet = getattr(func, "overloadpacket", None)
    return getattr(packet or func, "__name__", None) or str(func)


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
    if op in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero",
              "_local_scalar_dense") or any(word in text for word in (
                  "data-independent", "item() cannot be called", "data-dependent", "no fake impl")):
        return VALUE_DEPENDENT
    return first_line(exc)


VALUE_DEPENDENT = "its result depends on tensor values, which meta tensors do not hold"


def _returns_tensor(out) -> bool:
    return isinstance(out, torch.Tensor) or (isinstance(out, (list, tuple)) and any(
        isinstance(o, torch.Tensor) for o in out))


def _describe(args, kwargs) -> str:
    shapes = [tuple(t.shape) for t in _tensors((*args, *kwargs.values()))]
    return "shapes " + ", ".join(str(list(s)) for s in shapes) if shapes else "no tensors"


class _ShapeCountingMode(ParameterReads):
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
        self.in_python_call = 0  # > 0 while a Python-level call runs: the dispatcher's operators are its parts
        self.in_aten_call = 0  # > 0 while an unseen aten operator runs: Python calls are its meta kernel's

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.in_aten_call:
            return func(*args, **kwargs)
        self.in_python_call += 1
        try:
            return self._count(func, args, kwargs)
        finally:
            self.in_python_call -= 1

    def _count(self, func, args, kwargs):
        self.note_reads(args, kwargs)
        shape_function = SHAPE_FUNCTIONS.get(func)
        out = None
        if shape_function is not None and "out" not in kwargs and _all_meta(args, kwargs):
            with contextlib.suppress(Exception):  # a shortcut only: torch's own meta kernel decides below
                out = shape_function(args, kwargs)
        if out is None:
            out = self.run(func, args, kwargs)
        if not self.account(func, RULES.get(func), args, kwargs, out) and isinstance(func, pytypes.FunctionType):
            self.composites.add(op_name(func))
        return out

    @staticmethod
    def run(func, args, kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            op = op_name(func)
            raise MetaCallFailed(op, _why_not_on_meta(op, args, kwargs, exc)) from exc

    def account(self, func, rule, args, kwargs, out) -> bool:
        """Count one call with its rule, or list it as uncounted (data movement aside); False for one listed."""
        try:
            counted: Counted | None = rule(args, kwargs, out) if rule is not None else None
        except Exception as exc:
            raise CountingError(f"the rule for {op_name(func)} failed on {_describe(args, kwargs)}: "
                                f"{type(exc).__name__}: {first_line(exc)}") from exc
        if counted is not None:
            self.counted_calls += 1
            self.macs[self.scope[-1]].update(counted.by_op)
            note_difference(self.differences, op_name(func).strip("_"), counted)
            return True
        if _returns_tensor(out) and not moves_data(op_name(func)):
            self.uncounted[self.scope[-1]][op_name(func)] += 1
            return False
        return True


class _UnseenCode(TorchDispatchMode):
    """The aten operators no Python-level call accounts for (TorchScript code called inside forward), counted by
    ATEN_RULES in the same scope and tallies as the Python-level ones."""

    def __init__(self, calls: _ShapeCountingMode):
        super().__init__()
        self.calls = calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        calls = self.calls
        if calls.in_python_call or calls.in_aten_call:
            return func(*args, **kwargs)
        calls.in_aten_call += 1
        try:
            out = calls.run(func, args, kwargs)
        finally:
            calls.in_aten_call -= 1
        calls.note_reads(args, kwargs)
        calls.account(func, ATEN_RULES.get(func) or ATEN_RULES.get(func.overloadpacket), args, kwargs, out)
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


def count_meta(model: nn.Module, inputs: tuple) -> RawCounts:
    """One forward of ``model`` (on meta, or on real tensors where it cannot go there) under both modes."""
    with _module_scope(model) as (stack, called), _ShapeCountingMode(stack) as mode, _UnseenCode(mode), \
            torch.no_grad():
        model(*inputs)
    names = [n for n, _ in model.named_modules()]
    uncalled = {n for n in names if n and n not in called}
    return RawCounts(_roll_up(mode.macs, names), _roll_up(mode.uncounted, names)[""], uncalled, mode.read,
                     mode.counted_calls, mode.composites, mode.differences)
