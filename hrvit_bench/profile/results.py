"""What `profile` reports, and how it renders: rows, the sum check, the small-ops view, operator counts."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from rich.table import Table

from .. import zoo
from ..conventions import Convention
from ..environment import Environment
from ..latency import LatencySettings
from ..latency.timer import CLOCKS
from ..output import fmt
from ..roofline import Roofline

MARGIN = 0.05  # the rows' medians must add up to within 5% of the plain median


@dataclass
class ProfileRow:
    name: str  # a module, "module (self)", an operator, or one of the OUTSIDE rows
    kind: str  # "module", "self", "operator" or "outside"
    ms: float  # median time per forward
    # Median per call: a module's whole call, a "self" row's own code, a container's (ModuleList's) members' calls.
    ms_per_call: float | None = None
    calls: float | None = None  # per forward
    macs: int | None = None  # per forward, of the operators the convention counts; None: no counting rule
    params: int | None = None
    bytes: int | None = None  # parameters read + input and output activations, per forward
    ops: int | None = None  # aten operators called from Python, per forward (one profiled forward)
    share: float = 0.0  # of the rows' summed medians

    @property
    def gflops(self) -> float | None:
        """Achieved GFLOP/s: 2 x MACs over the median time."""
        return 2 * self.macs / (self.ms * 1e-3) / 1e9 if self.macs and self.ms > 0 else None

    @property
    def intensity(self) -> float | None:
        """FLOPs per byte moved (2 x MACs / bytes)."""
        return 2 * self.macs / self.bytes if self.macs and self.bytes else None

    def to_dict(self) -> dict:
        calls = int(self.calls) if self.calls is not None and float(self.calls).is_integer() else self.calls
        return {**self.__dict__, "calls": calls, "gflops_per_s": self.gflops, "flop_per_byte": self.intensity}


@dataclass
class SumCheck:
    """Do the rows account for the plain forward? Their medians, added up, against the plain median of the same
    rounds; and the part of any gap that is the instrument's own cost."""

    instrument: str  # "hooked" or "profiled"
    plain_ms: float
    instrumented_ms: float  # median of the instrumented forwards
    parts_ms: dict[str, float]  # row kind -> the sum of those rows' medians
    on_gpu: bool = False
    margin: float = MARGIN
    plain_samples_ms: list[float] = field(default_factory=list)  # per round, for a check that fails
    instrumented_samples_ms: list[float] = field(default_factory=list)

    @property
    def rows_ms(self) -> float:
        return sum(self.parts_ms.values())

    @property
    def agreement(self) -> float:
        return self.rows_ms / self.plain_ms

    @property
    def overhead(self) -> float:
        return self.instrumented_ms / self.plain_ms - 1

    @property
    def ok(self) -> bool:
        return abs(self.agreement - 1) <= self.margin

    @property
    def spread(self) -> float | None:
        """The plain forwards' own spread, IQR / median: noise the check cannot tell from the instrument's cost."""
        if len(self.plain_samples_ms) < 4:
            return None
        q1, _, q3 = statistics.quantiles(self.plain_samples_ms, n=4)
        return (q3 - q1) / self.plain_ms

    def why(self) -> str:
        """For a check outside the margin: noise, or the instrument's cost."""
        head = f"the rows sum to {100 * self.agreement:.1f}% of the plain median, outside ±{100 * self.margin:g}%"
        if self.spread is None:
            return f"{head}, and too few rounds to tell noise from the instrument's cost: time more rounds (--iters)"
        if self.spread >= self.margin:
            return (f"{head}; the plain forwards alone spread by {100 * self.spread:.1f}% (IQR / median): the machine "
                    "is noisy; time more rounds (--iters) or on a quieter machine")
        return (f"{head}; the plain forwards spread by only {100 * self.spread:.1f}%: the {self.instrument} forward "
                f"costs {100 * self.overhead:+.1f}%, more than the margin allows")

    def describe(self, depth: int | None = None) -> str:
        verdict = "ok" if self.ok else "OUTSIDE the margin"
        head = (f"Check: the rows sum to {100 * self.agreement:.1f}% of the plain median ({self.plain_ms:.2f} ms; "
                f"margin ±{100 * self.margin:g}%: {verdict}). They are {100 * self.rows_ms / self.instrumented_ms:.1f}"
                f"% of the {self.instrument} forward, which is {self.instrumented_ms / self.plain_ms:.3f}x the plain "
                f"median ({'hook' if self.instrument == 'hooked' else 'profiler'} overhead "
                f"{100 * self.overhead:+.1f}%).")
        share = {kind: 100 * ms / self.rows_ms for kind, ms in self.parts_ms.items()}
        if self.instrument == "hooked":
            return head + (f" Modules at depth {depth} (and shallower leaves) hold {share.get('module', 0):.1f}%, "
                           f"their parents' own code {share.get('self', 0):.1f}%, code outside every module "
                           f"{share.get('outside', 0):.1f}%.")
        return head + (f" Operators hold {share.get('operator', 0):.1f}%, the time between them (Python, "
                       f"dispatch{', GPU idle' if self.on_gpu else ''}) "
                       f"{share.get('outside', 0):.1f}%.")

    def to_dict(self) -> dict:
        return {**self.__dict__, "rows_ms": self.rows_ms, "agreement": self.agreement, "overhead": self.overhead,
                "ok": self.ok, "plain_spread": self.spread}


@dataclass
class SmallOps:
    """Time in module code that does fewer than ``threshold_mflops`` MFLOPs (2 x MACs) per call, with every
    called module hooked: each module's own code is one piece."""

    threshold_mflops: float
    share: float  # median over forwards: own time of the small pieces / own time of all
    small_calls: int  # per forward
    calls: int
    overhead: float  # every-module-hooked forward over the plain median, less 1

    def describe(self) -> str:
        return (f"Small ops: {100 * self.share:.1f}% of the time is module code doing under "
                f"{self.threshold_mflops:g} MFLOPs per call ({self.small_calls:,} of {self.calls:,} module calls "
                f"per forward; every module hooked: overhead {100 * self.overhead:+.1f}%).")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class OperatorCalls:
    top_level: int  # aten operators called from Python, per forward: each pays the dispatcher once
    aten_events: int  # every aten event, nested calls included
    kernel_launches: int | None  # CUDA runtime/driver launch calls, per forward (GPU only)

    def describe(self, plain_ms: float) -> str:
        text = (f"{self.top_level:,} aten operators from Python ({self.top_level / plain_ms:.1f} per ms; "
                f"{self.aten_events:,} aten events in all)")
        return text + (f", {self.kernel_launches:,} kernel launches" if self.kernel_launches is not None else "")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


BYTES_RULE = ("parameters read + input and output activations, each distinct tensor once per call, at the run's "
              "dtype (meta engine): a lower bound on traffic")


@dataclass
class ProfileReport:
    """One model's time and FLOPs side by side, by module to ``depth`` or by operator, with the sum check."""

    model: str
    input_shape: tuple[int, ...]
    by: str
    depth: int
    convention: Convention
    settings: LatencySettings
    environment: Environment
    clock: str = "wall"  # a CLOCKS key
    total_macs: int = 0  # the whole forward, of the operators the convention counts
    rows: list[ProfileRow] = field(default_factory=list)
    check: SumCheck | None = None
    small_ops: SmallOps | None = None
    operator_calls: OperatorCalls | None = None
    roofline: Roofline | None = None
    rounds: int = 0
    never_called: list[str] = field(default_factory=list)  # module rows whose forward never ran
    no_macs: list[str] = field(default_factory=list)  # operator view: operators no counting rule covers
    macs_not_joined: dict[str, int] = field(default_factory=dict)  # engine operator -> MACs no timed operator took
    error: str | None = None  # out of memory
    warnings: list[str] = field(default_factory=list)

    def roofline_rows(self) -> list[ProfileRow]:
        """The module rows that are points on a roofline: FLOPs, bytes and time all known."""
        return [r for r in self.rows if r.kind == "module" and r.intensity and r.gflops]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "input": zoo.format_size(self.input_shape),
            "by": self.by,
            "depth": self.depth if self.by == "module" else None,
            "convention": self.convention.name,
            "settings": self.settings.to_dict(),
            "environment": self.environment.to_dict(),
            "rounds": self.rounds,
            "clock": CLOCKS[self.clock],
            "total_macs": self.total_macs,
            "gflops_per_s": self.gflops,
            "rows": [r.to_dict() for r in self.rows],
            "check": self.check.to_dict() if self.check else None,
            "small_ops": self.small_ops.to_dict() if self.small_ops else None,
            "operator_calls": self.operator_calls.to_dict() if self.operator_calls else None,
            "roofline": self.roofline.to_dict() if self.roofline else None,
            "bytes_rule": BYTES_RULE,
            "never_called": self.never_called,
            "operators_without_macs": self.no_macs,
            "macs_not_joined": self.macs_not_joined,
            "error": self.error,
            "warnings": self.warnings,
        }

    def csv_rows(self) -> list[dict]:
        base = {"model": self.model, "input": zoo.format_size(self.input_shape), "device": self.settings.device,
                "dtype": self.settings.dtype, "threads": self.settings.threads, "by": self.by,
                "depth": self.depth if self.by == "module" else None, "convention": self.convention.name}
        if self.error:
            return [{**base, "error": self.error}]
        return [{**base, **r.to_dict()} for r in self.rows]

    def _count_header(self) -> str:
        return "GMACs" if self.convention.unit == "macs" else "GFLOPs"

    def _count_cell(self, macs: int | None) -> str:
        if macs is None:
            return "-"
        raw = macs * (2 if self.convention.unit == "flops" else 1)
        return f"{self.convention.giga_value(raw):.3f}"

    @property
    def gflops(self) -> float | None:
        """The whole forward's achieved GFLOP/s, at the plain median."""
        return 2 * self.total_macs / (self.check.plain_ms * 1e-3) / 1e9 if self.check else None

    def headline(self) -> str:
        """The numbers to set beside another model's: time, work, rate, operators, small ops."""
        text = (f"Forward: {self.check.plain_ms:.1f} ms (plain median), {self._count_cell(self.total_macs)} "
                f"{self._count_header()}, {self.gflops:.1f} GFLOP/s")
        if self.operator_calls:
            text += f"; {self.operator_calls.describe(self.check.plain_ms)}"
        if self.small_ops:
            text += f"; {100 * self.small_ops.share:.1f}% of the time in small ops"
        return text + "."

    def _caption(self) -> str:
        lines = [self.headline(), self.check.describe(self.depth)] if self.check else []
        lines += [self.small_ops.describe()] if self.small_ops else []
        lines.append(f"{self.environment.summary()}; {self.rounds} rounds, medians, {CLOCKS[self.clock]}."
                     + (f" {self.roofline.describe()}." if self.roofline else ""))
        lines.append(f"{self._count_header()}: {self.convention.label}. GFLOP/s: 2 x MACs / median time.")
        if self.by == "module":
            lines.append(f"FLOP/B: 2 x MACs / bytes moved, {BYTES_RULE}. (self): a module's own code, outside its "
                         "submodules. ops: aten operators called from Python, per forward.")
        if self.no_macs:
            lines.append(f"No MACs (no counting rule): {', '.join(self.no_macs)}.")
        if self.macs_not_joined:
            lines.append("Warning: MACs no timed operator took: "
                         + ", ".join(f"{op} {n:,}" for op, n in self.macs_not_joined.items()) + ".")
        if self.never_called:
            lines.append(f"Never called: {', '.join(self.never_called)}.")
        lines += [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def tables(self) -> list[Table]:
        where = f"{self.model} @ {zoo.format_size(self.input_shape)}"
        if self.error:
            table = Table(title=f"{where}: out of memory on {self.settings.device}")
            table.add_column("error")
            table.add_row(self.error)
            return [table]
        module_view = self.by == "module"
        rows_are = f"module to depth {self.depth}" if module_view else "operator"
        title = f"{where}: where the time goes, by {rows_are}"
        table = Table(title=title, caption=self._caption(), caption_justify="left")
        columns = [self.by, "share", "ms", "ms/call" if module_view else "µs/call", "calls", self._count_header(),
                   "GFLOP/s"] + (["params", "FLOP/B", "ops"] if module_view else [])
        for col in columns:
            table.add_column(col, justify="left" if col == self.by else "right", no_wrap=True)
        for r in self.rows:
            per_call = None if r.ms_per_call is None else r.ms_per_call * (1 if module_view else 1e3)
            cells = [r.name, f"{100 * r.share:.1f}%", _ms(r.ms), fmt(per_call, ".3f" if module_view else ".1f"),
                     _calls(r.calls), self._count_cell(r.macs), fmt(r.gflops, ".1f")]
            if module_view:
                cells += [_compact(r.params), fmt(r.intensity, ".1f"), fmt(r.ops, ",")]
            table.add_row(*cells, style="dim" if r.kind == "outside" else None)
        return [table]


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _calls(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _compact(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)
