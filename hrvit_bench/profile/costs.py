"""Which modules make up the rows of a profile, and what each costs on the meta engine: calls, MACs and bytes."""
from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import counting
from ..conventions import Convention
from ..counting import MacCount, module_depth
from ..latency.settings import DTYPES


def _ancestors(name: str) -> list[str]:
    """'a.b.c' -> ['', 'a', 'a.b']."""
    parts = name.split(".") if name else []
    return [".".join(parts[:i]) for i in range(len(parts))]


@dataclass(frozen=True)
class RowPlan:
    """The rows of a module table at ``depth``: each module at that depth ("module", its whole subtree), each
    shallower leaf ("module") and each shallower module with children ("self", its own code only). Every module
    name falls into exactly one row. ``hooked``: the modules the rows pass times."""

    depth: int
    rows: dict[str, str]  # row name -> "module" or "self", in the model's module order
    hooked: frozenset[str]

    @classmethod
    def build(cls, names: list[str], called: set[str], depth: int) -> "RowPlan":
        parents = {_ancestors(n)[-1] for n in names if n}
        rows = {}
        for n in names:
            d = module_depth(n)
            if d == depth or (d < depth and n not in parents):
                rows[n] = "module"
            elif d < depth:
                rows[n] = "self"
        hooked = frozenset(n for n in called if module_depth(n) <= depth or not any(
            a in called for a in _ancestors(n)[depth:]))
        return cls(depth, rows, hooked)

    def row_of(self, module: str) -> str:
        return ".".join(module.split(".")[: self.depth]) if module_depth(module) > self.depth else module

    def members(self) -> dict[str, list[str]]:
        """Row -> the hooked modules whose own time it sums."""
        out = defaultdict(list)
        for m in self.hooked:
            out[self.row_of(m)].append(m)
        return dict(out)


def _tensor_bytes(value, itemsize: int, seen: set[int]) -> int:
    """Bytes of every distinct tensor in a nested structure; floating tensors at the run's ``itemsize``."""
    if isinstance(value, torch.Tensor):
        if id(value) in seen:
            return 0
        seen.add(id(value))
        return value.numel() * (itemsize if value.is_floating_point() else value.element_size())
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v, itemsize, seen) for v in value)
    return 0


@dataclass
class ModuleCosts:
    """Per module, from one forward on the meta engine: calls, MACs (rolled up, fvcore-style) and bytes moved."""

    count: MacCount
    names: list[str]  # every module, in the model's order
    calls: dict[str, int]  # module -> calls per forward
    bytes: dict[str, int]  # module -> parameters read + input and output activations, per forward
    children: dict[str, list[str]] = field(init=False)

    def __post_init__(self):
        self.children = defaultdict(list)
        for n in self.names:
            if n:
                self.children[_ancestors(n)[-1]].append(n)

    @property
    def called(self) -> set[str]:
        return set(self.calls)

    def macs(self, module: str, convention: Convention) -> int:
        """MACs of the module's subtree, of the operators the convention counts."""
        return _macs(self.count.by_module.get(module, {}), convention)

    def own_macs(self, module: str, convention: Convention) -> int:
        """MACs of the module's own code: its subtree less its direct children's."""
        return self.macs(module, convention) - sum(self.macs(c, convention) for c in self.children.get(module, ()))

    @classmethod
    def measure(cls, name: str, shape: tuple[int, ...], dtype: str) -> "ModuleCosts":
        """Counted through the one door, with a hook on every module of the model it counts."""
        itemsize = DTYPES[dtype].itemsize
        calls, activations, counted = Counter(), Counter(), []

        @contextlib.contextmanager
        def hooked(model: nn.Module):
            calls.clear()  # a fallback counts again, on another model: only its calls count
            activations.clear()
            counted.append(model)
            names = {id(m): n for n, m in model.named_modules()}

            def record(module, args, kwargs, output):
                calls[names[id(module)]] += 1
                activations[names[id(module)]] += _tensor_bytes((args, kwargs, output), itemsize, set())

            handles = [m.register_forward_hook(record, with_kwargs=True) for m in model.modules()
                       if not isinstance(m, torch.jit.ScriptModule)]  # which take no hooks
            try:
                yield
            finally:
                for h in handles:
                    h.remove()

        count = counting.count(name, shape, observe=hooked)
        unread = set(count.unused_parameter_names)
        modules = dict(counted[-1].named_modules())
        moved = {}
        for n, n_calls in calls.items():
            weights = sum(p.numel() for pn, p in modules[n].named_parameters(prefix=n) if pn not in unread)
            moved[n] = activations[n] + n_calls * weights * itemsize
        return cls(count, list(modules), dict(calls), moved)


def _macs(ops: dict[str, int], convention: Convention) -> int:
    """MACs (never 2 x MACs) of the operators the convention includes: rates are computed from MACs."""
    return sum(v for op, v in ops.items() if convention.includes(op))
