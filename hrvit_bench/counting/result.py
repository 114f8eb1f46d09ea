"""What a count is: MACs per module and operator, the coverage that says what the engine saw, and the one
dictionary form every JSON output, record and report row uses (``MacCount.to_dict`` / ``from_dict``)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..zoo import format_size, parse_shape
from .vocabulary import is_costly, is_opaque

if TYPE_CHECKING:  # conventions.py takes its GEMM set from this package: imported where used, never at import time
    from ..conventions import Convention


def convention_of(convention: "Convention | str | None") -> "Convention":
    """A Convention, or its name ("flops-gemm-2^30"); None is the default, fvcore's."""
    from ..conventions import DEFAULT, Convention

    if convention is None:
        return DEFAULT
    return Convention.parse(convention) if isinstance(convention, str) else convention


def module_depth(name: str) -> int:
    """'' (the model itself) is 0, 'backbone' 1, 'backbone.stage1' 2."""
    return name.count(".") + 1 if name else 0


@dataclass
class RawCounts:
    """What an engine hands back: per module and operator, before it becomes a MacCount."""

    by_module: dict[str, Counter]  # module name -> operator -> MACs, rolled up ("" is the whole model)
    uncounted_ops: Counter  # operator -> calls that no rule counts
    uncalled_modules: set[str]  # fvcore's notion: modules whose forward never ran
    read_parameters: set[int]  # ids of the parameters forward read
    counted_calls: int = 0  # calls a rule counted
    composites: set[str] = field(default_factory=set)  # uncounted calls whose parts ran unseen
    differences: dict[str, Counter] = field(default_factory=dict)  # op -> where plain fvcore's rule differs


def _calls(n: int) -> str:
    return f"{n:,} call" + ("" if n == 1 else "s")


@dataclass
class Coverage:
    """How much of one forward the count saw: calls a rule counted, calls none did, and which of those cost, or
    may hide, GEMM work (their MACs are missing from the totals)."""

    counted_calls: int
    uncounted_calls: dict[str, int]  # operator -> calls no rule counts
    composites: list[str]  # of those, calls whose parts ran unseen
    costly_uncounted: dict[str, int]  # of those, GEMM-like operators and code no rule could see into

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
            unseen = [op for op in sorted(self.costly_uncounted) if is_opaque(op)]
            why = f"; {', '.join(unseen)}: code the engine could not see into, possibly GEMM-like" if unseen else ""
            return text + f", {_calls(n)} GEMM-like UNCOUNTED: {costly} (missing from the totals{why})"
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
    input_shape: tuple  # one input's shape, or a tuple of the inputs' shapes
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

    def total(self, convention: "Convention | str | None" = None) -> int:
        """The count under ``convention`` (a Convention or its name; default fvcore's, macs-all-1e9)."""
        return convention_of(convention).count(self.by_operator)

    def module_totals(self, depth: int, convention: "Convention | str | None" = None) -> dict[str, int]:
        """Counts of the modules at most ``depth`` dots deep (the model itself is depth 0)."""
        convention = convention_of(convention)
        return {
            name: convention.count(ops)
            for name, ops in self.by_module.items()
            if module_depth(name) <= depth and convention.count(ops) > 0
        }

    def conventions(self, conventions=None) -> dict[str, dict]:
        """Convention name -> label, count and giga value (every convention by default)."""
        from ..conventions import ALL_CONVENTIONS

        out = {}
        for c in map(convention_of, ALL_CONVENTIONS if conventions is None else conventions):
            raw = self.total(c)
            out[c.name] = {"label": c.label, "count": raw, "giga": c.giga_value(raw)}
        return out

    def to_dict(self, conventions=None, *, detail: bool = True) -> dict:
        """The one dictionary form: `flops --json`, record rows and report rows. ``input`` is written as the CSV
        writes it ("1x3x224x224"); ``macs_by_operator`` and the counts beside it rebuild every number.
        ``detail=False`` (a report record's rows) leaves out what is derived or only listed: each convention's
        count, the coverage summary, and the names of unused parameters and uncalled modules."""
        out = {
            "model": self.model,
            "input": format_size(self.input_shape),
            "engine": self.engine,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "unused_params": self.unused_params,
            "unused_parameter_names": self.unused_parameter_names,
            "macs_by_operator": self.by_operator,
            "flops": self.conventions(conventions),
            "uncounted_ops": dict(self.uncounted_ops),
            "uncalled_modules": self.uncalled_modules,
            "counted_calls": self.counted_calls,
            "composite_ops": self.composite_ops,
            "coverage": self.coverage.to_dict(),
            "fvcore_differences": self.fvcore_differences,
            "notes": self.notes,
        }
        if not detail:
            for derived in ("unused_parameter_names", "flops", "uncalled_modules", "coverage"):
                del out[derived]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "MacCount":
        """A count from ``to_dict``'s form (a record row); what ``to_dict`` derives (conventions, coverage) is
        recomputed, not read. The per-module breakdown is not kept: the whole model's operators are."""
        return cls(
            model=data["model"], input_shape=parse_shape(data["input"]), engine=data["engine"],
            params=data["params"], trainable_params=data["trainable_params"], unused_params=data["unused_params"],
            by_module={"": dict(data["macs_by_operator"])}, uncounted_ops=dict(data["uncounted_ops"]),
            unused_parameter_names=list(data.get("unused_parameter_names", [])),
            uncalled_modules=list(data.get("uncalled_modules", [])), counted_calls=data.get("counted_calls", 0),
            composite_ops=list(data.get("composite_ops", [])),
            fvcore_differences=dict(data.get("fvcore_differences", {})), notes=list(data.get("notes", [])),
        )
