"""Parameters: how many, which ones forward reads, and who owns them, each shared parameter counted once."""
from __future__ import annotations

from torch import nn
from torch.overrides import TorchFunctionMode

SELF = "(self)"  # a module's own parameters, outside its submodules


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(total, trainable), counting each shared parameter once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def unread_parameters(model: nn.Module, read: set[int]) -> dict[str, int]:
    """Name -> size of each parameter that forward never read."""
    return {name: p.numel() for name, p in model.named_parameters() if id(p) not in read}


def owners_of_parameters(model: nn.Module, uncalled: set[str]) -> list[str]:
    return sorted(n for n, m in model.named_modules() if n in uncalled and any(True for _ in m.parameters(False)))


def self_row(module: str) -> str:
    """The row of a module's own parameters: "(self)" for the model itself, "backbone (self)" below it."""
    return f"{module} {SELF}" if module else SELF


def module_parameters(model: nn.Module, depth: int) -> dict[str, int]:
    """Parameters per module up to ``depth`` ("" is the whole model), each shared parameter counted once under its
    first owner. A module shallower than ``depth`` with submodules that owns parameters itself (a root-level
    position embedding) gets a ``self_row``, so each level's rows add up to their parent's."""
    parents = {name for name, module in model.named_modules() if next(module.children(), None) is not None}
    totals: dict[str, int] = {"": 0}
    seen = set()
    for pname, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        parts = pname.split(".")[:-1]
        totals[""] += p.numel()
        for i in range(1, min(len(parts), depth) + 1):
            key = ".".join(parts[:i])
            totals[key] = totals.get(key, 0) + p.numel()
        if len(parts) < depth and ".".join(parts) in parents:
            key = self_row(".".join(parts))
            totals[key] = totals.get(key, 0) + p.numel()
    return totals


class ParameterReads(TorchFunctionMode):
    """Records every parameter a torch call reads: a model may use a layer's weight without calling the layer
    (fused or split products), which fvcore's "uncalled modules" would misreport as unused."""

    def __init__(self):
        super().__init__()
        self.read: set[int] = set()

    def note_reads(self, args, kwargs) -> None:
        for value in (*args, *kwargs.values()):
            if isinstance(value, nn.Parameter):
                self.read.add(id(value))
            elif isinstance(value, (list, tuple)):
                self.read.update(id(v) for v in value if isinstance(v, nn.Parameter))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.note_reads(args, kwargs)
        return func(*args, **kwargs)
