"""Joining times with counts: the module view's rows, the operator view's rows, the small-ops view."""
from __future__ import annotations

import statistics
from collections import Counter, defaultdict

from torch import nn

from ..conventions import Convention
from ..counting import MacCount
from ..counting.vocabulary import PROFILER_TO_ENGINE
from .costs import ModuleCosts, RowPlan
from .passes import HookedSample, OpEvent, ProfiledSample
from .results import ProfileRow, SmallOps

OUTSIDE_MODULES, OUTSIDE_OPERATORS = "(outside modules)", "(outside operators)"


def median(values) -> float:
    return statistics.median(values) if values else 0.0


def by_share(rows: list[ProfileRow]) -> list[ProfileRow]:
    """Shares of the rows' summed medians, largest time first."""
    total = sum(r.ms for r in rows) or 1.0
    for r in rows:
        r.share = r.ms / total
    return sorted(rows, key=lambda r: -r.ms)


def module_rows(plan: RowPlan, samples: list[HookedSample], costs: ModuleCosts, convention: Convention,
                params: dict[str, int], ops: dict[str, int] | None = None) -> tuple[list[ProfileRow], list[str]]:
    """The rows of the module view, and the module rows whose forward never ran."""
    members = plan.members()
    rows, never_called = [], []
    for name, kind in plan.rows.items():
        timed = members.get(name)
        if not timed:
            if kind == "module":
                never_called.append(name)
            continue
        per_forward = median([sum(s.own_ms.get(m, 0.0) for m in timed) for s in samples])
        # A container that is never called itself (a ModuleList): the calls of the modules it holds.
        calls = [c for s in samples for m in timed
                 for c in (s.call_own_ms if kind == "self" else s.call_ms).get(m, ())]
        rows.append(ProfileRow(
            name=(f"{name} (self)" if name else "(model self)") if kind == "self" else (name or "(model)"),
            kind=kind, ms=per_forward, ms_per_call=median(calls), calls=len(calls) / len(samples),
            macs=costs.own_macs(name, convention) if kind == "self" else costs.macs(name, convention),
            params=params.get(name, 0),
            bytes=sum(costs.bytes[m] for m in timed) if kind == "module" else None,
            ops=ops.get(name, 0) if ops is not None else None,
        ))
    rows.append(ProfileRow(OUTSIDE_MODULES, "outside", median([s.outside_ms for s in samples]),
                           ops=ops.get(OUTSIDE_MODULES, 0) if ops is not None else None))
    return by_share(rows), never_called


def params_by_row(model: nn.Module, plan: RowPlan) -> dict[str, int]:
    """Each parameter under the row of the module that owns it (a shared one once, under its first owner)."""
    out: Counter = Counter()
    for pname, p in model.named_parameters():
        out[plan.row_of(pname.rpartition(".")[0])] += p.numel()
    return dict(out)


def ops_by_row(plan: RowPlan, sample: ProfiledSample) -> dict[str, int]:
    """Top-level aten operators per row, from a forward whose hooked modules were record_function scopes."""
    return dict(Counter(OUTSIDE_MODULES if scope is None else plan.row_of(scope) for scope in sample.scopes()))


def small_ops(samples: list[HookedSample], plain_ms: float, costs: ModuleCosts, convention: Convention,
              threshold_mflops: float) -> SmallOps:
    per_call = {m: costs.own_macs(m, convention) / n for m, n in costs.calls.items()}
    small = {m for m, macs in per_call.items() if 2 * macs < threshold_mflops * 1e6}
    shares = [sum(ms for m, ms in s.own_ms.items() if m in small) / (sum(s.own_ms.values()) or 1.0)
              for s in samples]
    return SmallOps(threshold_mflops, median(shares), sum(costs.calls[m] for m in small),
                    sum(costs.calls.values()), median([s.total_ms for s in samples]) / plain_ms - 1)


def operator_rows(samples: list[ProfiledSample], count: MacCount, convention: Convention
                  ) -> tuple[list[ProfileRow], list[str], dict[str, int]]:
    """Rows by operator (the engine's name where a counting rule joins, else the aten name), the operators
    without MACs, and the engine's operators whose MACs no timed operator took."""
    def key(event: OpEvent) -> str:
        return PROFILER_TO_ENGINE.get(event.name, event.name.removeprefix("aten::"))

    per_forward: list[Counter] = []
    per_call: dict[str, list[float]] = defaultdict(list)
    outside = []
    for s in samples:
        times: Counter = Counter()
        for e in s.top_level_ops():
            times[key(e)] += s.op_ms(e)
            per_call[key(e)].append(s.op_ms(e))
        per_forward.append(times)
        outside.append(s.total_ms - sum(times.values()))
    engine = {op: macs for op, macs in count.by_operator.items() if convention.includes(op) and macs}
    rows = [ProfileRow(op, "operator", median([t.get(op, 0.0) for t in per_forward]),
                       ms_per_call=median(times), calls=len(times) / len(samples), macs=engine.get(op))
            for op, times in per_call.items()]
    rows.append(ProfileRow(OUTSIDE_OPERATORS, "outside", median(outside)))
    no_macs = sorted(op for op in per_call if op not in engine)
    return by_share(rows), no_macs, {op: macs for op, macs in engine.items() if op not in per_call}
