"""What `params` and `flops` report: results that render themselves as rich tables, dicts and CSV rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from rich.table import Table
from rich.text import Text
from torch import nn

from . import zoo
from .conventions import ALL_CONVENTIONS, DEFAULT, Convention
from .counting import CountingError, MacCount, NeedsRealTensors, count_macs, real_inputs
from .crosscheck import CounterResult, cross_check
from .errors import UsageError, first_line


@dataclass
class ParamReport:
    """Exact parameter counts, by module, with the ones forward never touches."""

    model: str
    total: int
    trainable: int
    unused: int  # parameters forward never reads
    unused_names: list[str]
    uncalled_modules: list[str]  # fvcore's notion, for comparison
    by_module: dict[str, int]  # module -> parameters it and its children own, to the requested depth
    depth: int

    @classmethod
    def measure(cls, name: str, depth: int = 1) -> "ParamReport":
        model, inputs = zoo.build_with_inputs(name, zoo.input_shape(zoo.info(name), None), device="meta")
        count = count_macs(model, inputs, engine="meta", name=name)
        return cls(
            model=name,
            total=count.params,
            trainable=count.trainable_params,
            unused=count.unused_params,
            unused_names=count.unused_parameter_names,
            uncalled_modules=count.uncalled_modules,
            by_module=module_parameters(model, depth),
            depth=depth,
        )

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "params": self.total,
            "trainable_params": self.trainable,
            "unused_params": self.unused,
            "unused_parameter_names": self.unused_names,
            "uncalled_modules": self.uncalled_modules,
            "depth": self.depth,
            "by_module": self.by_module,
        }

    def csv_rows(self) -> list[dict]:
        return [{"model": self.model, "module": m or "(total)", "params": n} for m, n in self.by_module.items()]

    def tables(self) -> list[Table]:
        summary = Table(title=f"{self.model}: parameters")
        for col in ("total", "trainable", "unused by forward"):
            summary.add_column(col, justify="right")
        summary.add_row(f"{self.total:,}", f"{self.trainable:,}", f"{self.unused:,}")
        modules = Table(title=f"by module (depth {self.depth})")
        modules.add_column("module")
        modules.add_column("params", justify="right")
        modules.add_column("share", justify="right")
        for name, n in self.by_module.items():
            modules.add_row(name or "(total)", f"{n:,}", f"{100 * n / max(self.total, 1):.1f}%")
        tables = [summary, modules]
        if self.unused_names:
            unused = Table(title="parameters forward never reads")
            unused.add_column("parameter")
            for m in self.unused_names:
                unused.add_row(m)
            tables.append(unused)
        return tables


def module_parameters(model: nn.Module, depth: int) -> dict[str, int]:
    """Parameters per module up to ``depth``, each shared parameter counted once under its first owner."""
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
    return totals


@dataclass
class FlopReport:
    """MACs of one forward under every convention, by operator or module, with the cross-checks."""

    count: MacCount
    conventions: tuple[Convention, ...] = ALL_CONVENTIONS
    shown: Convention = DEFAULT
    by: str = "operator"  # or "module"
    depth: int = 1
    cross_checks: list[CounterResult] = field(default_factory=list)

    @classmethod
    def measure(
        cls,
        name: str,
        size: tuple[int, int] | None = None,
        batch_size: int = 1,
        engine: str = "meta",
        cross_checks: bool = True,
        **options,
    ) -> "FlopReport":
        info = zoo.info(name)
        shape = zoo.input_shape(info, size, batch_size)
        model, inputs = zoo.build_with_inputs(name, shape, device="meta" if engine == "meta" else "cpu")
        built: list[nn.Module] = []

        def real_model() -> nn.Module:  # where the meta engine needs real tensors to fall back on
            built.append(zoo.build_with_inputs(name, shape, device="cpu")[0])
            return built[-1]

        count = count_model(model, inputs, engine, name, real_model)
        model = built[-1] if built else model
        checks = []
        if cross_checks:
            if count.engine != "meta":
                inputs = real_inputs(inputs)
            checks = cross_check(model, inputs, count)
        return cls(count=count, cross_checks=checks, **options)

    def to_dict(self) -> dict:
        out = self.count.to_dict(self.conventions)
        out["by_module"] = {
            c.name: self.count.module_totals(self.depth, c) for c in self.conventions
        } if self.by == "module" else None
        out["cross_checks"] = [c.to_dict() for c in self.cross_checks]
        return out

    def csv_rows(self) -> list[dict]:
        """One row per convention; gemm_calls_uncounted > 0 says the count is short (coverage), never silently."""
        base = {"model": self.count.model, "input": zoo.format_size(self.count.input_shape),
                "engine": self.count.engine, "params": self.count.params}
        short = sum(self.count.coverage.costly_uncounted.values())
        return [{**base, "convention": c.name, "count": self.count.total(c), "giga": c.giga_value(self.count.total(c)),
                 "gemm_calls_uncounted": short} for c in self.conventions]

    def tables(self) -> list:
        """The conventions table with the notes and the coverage line under it, the breakdown, the cross-checks."""
        count = self.count
        head = Table(title=f"{count.model} @ {zoo.format_size(count.input_shape)}: {count.params:,} params "
                           f"({count.engine} engine)")
        head.add_column("convention")
        head.add_column("count", justify="right")
        head.add_column("giga", justify="right")
        for c in self.conventions:
            raw = count.total(c)
            head.add_row(c.label, f"{raw:,}", f"{c.giga_value(raw):.3f}")
        tables: list = [head, *(Text(note, style="yellow") for note in count.notes)]
        costly = not count.coverage.complete
        tables.append(Text(count.coverage.line(), style="bold red" if costly else "dim"))
        detail = Table(title=f"by {self.by} ({self.shown.label})")
        detail.add_column(self.by)
        detail.add_column("count", justify="right")
        detail.add_column("share", justify="right")
        total = max(count.total(self.shown), 1)
        if self.by == "module":
            rows = self.count.module_totals(self.depth, self.shown).items()
        else:
            rows = sorted(
                ((op, self.shown.count({op: v})) for op, v in count.by_operator.items() if self.shown.includes(op)),
                key=lambda kv: -kv[1],
            )
        for key, raw in rows:
            detail.add_row(key or "(total)", f"{raw:,}", f"{100 * raw / total:.1f}%")
        tables.append(detail)
        if self.cross_checks:
            cross = Table(title="cross-checks, all in MACs")
            for col in ("counter", "counts", "MACs", "where and why it differs"):
                cross.add_column(col, justify="right" if col == "MACs" else "left", overflow="fold")
            for c in self.cross_checks:
                cross.add_row(c.counter, c.native_convention, f"{c.macs:,}", c.note)
            tables.append(cross)
        if count.uncounted_ops:
            missed = Table(title="operators no rule counts (calls)")
            missed.add_column("operator")
            missed.add_column("calls", justify="right")
            for op, n in sorted(count.uncounted_ops.items(), key=lambda kv: -kv[1]):
                missed.add_row(op, str(n))
            tables.append(missed)
        return tables


def count_model(model: nn.Module, inputs, engine: str, name: str,
                real_model: Callable[[], nn.Module] | None = None) -> MacCount:
    """Count, mapping errors. ``inputs``: a shape, or the tensors of one forward (count_macs's). A meta model the
    meta engine cannot run is counted again from a real one (``real_model``), which falls back to fvcore. Only an
    input the model refuses on real tensors is "cannot take input"; an engine that cannot count says so, naming
    the operator."""
    try:
        return count_macs(model, inputs, engine=engine, name=name)
    except NeedsRealTensors:
        if real_model is None:
            raise
        return count_model(real_model(), inputs, engine, name)
    except CountingError:
        raise
    except (RuntimeError, ValueError, IndexError, AssertionError) as exc:
        shapes = [tuple(t.shape) for t in inputs] if isinstance(inputs[0], torch.Tensor) else [inputs]
        raise UsageError(f"{name} cannot take input {zoo.format_size(shapes)}: {first_line(exc)}") from exc
