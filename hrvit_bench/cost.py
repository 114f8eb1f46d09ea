"""What `params` and `flops` report: results that render themselves as rich tables, dicts and CSV rows."""
from __future__ import annotations

from dataclasses import dataclass, field

from rich.table import Table
from rich.text import Text
from torch import nn

from . import counting, zoo
from .conventions import ALL_CONVENTIONS, DEFAULT, Convention
from .counting.params import module_parameters
from .crosscheck import CounterResult, cross_check


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
        """Counted on the model's own input, as `flops` counts it: forward decides which parameters are read."""
        count, model, _ = count_built(name, zoo.input_shape(zoo.info(name), None))
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


def count_built(name: str, shape, engine: str = "meta") -> tuple[counting.MacCount, nn.Module, tuple]:
    """Count a registered or outside model, built here on the engine's device, through the door; also the model
    and inputs that were counted (the CPU rebuild where the meta engine needed real tensors), for the
    cross-checks and the parameter breakdown."""
    model, inputs = zoo.build_with_inputs(name, shape, device="meta" if engine == "meta" else "cpu")
    built: list[nn.Module] = []

    def real_copy() -> nn.Module:
        built.append(zoo.build(name, device="cpu"))
        return built[-1]

    count = counting.count(model, inputs, engine=engine, name=name, real_copy=real_copy)
    if built:
        return count, built[-1], counting.real_inputs(inputs)
    return count, model, inputs


@dataclass
class FlopReport:
    """MACs of one forward under every convention, by operator or module, with the cross-checks."""

    count: counting.MacCount
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
        count, model, inputs = count_built(name, zoo.input_shape(zoo.info(name), size, batch_size), engine)
        return cls(count=count, cross_checks=cross_check(model, inputs, count) if cross_checks else [], **options)

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
