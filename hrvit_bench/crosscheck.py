"""Two independent counters beside fvcore's rules, and one line on where and why each differs.

- torch's ``FlopCounterMode`` counts 2 FLOPs per MAC and only matrix products (convolutions, mm/bmm/addmm,
  attention kernels); on CPU it has no formula for ``aten._scaled_dot_product_flash_attention_for_cpu``, so one
  is supplied here.
- thop counts per module with forward hooks (conv, linear, norms, pooling, resize modules), so functional
  matmuls, einsums, attention and ``F.interpolate`` are invisible to it; it also leaves ``total_ops`` buffers in
  modules it has no rule for, which is why it only ever sees a deep copy.
"""
from __future__ import annotations

import copy
import importlib
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from .counting import MacCount, quiet
from .counting.formulas import sdpa_macs
from .counting.vocabulary import FLOP_COUNTER_GROUPS, GEMM_OPS, THOP_MODULE_PREFIXES


@dataclass
class CounterResult:
    counter: str  # who counted
    native_convention: str  # how it counts
    macs: int  # its total expressed in MACs, for side-by-side comparison
    macs_by_operator: dict[str, int]
    note: str  # where and why it differs from fvcore's rules

    def to_dict(self) -> dict:
        return {
            "counter": self.counter,
            "native_convention": self.native_convention,
            "macs": self.macs,
            "macs_by_operator": self.macs_by_operator,
            "note": self.note,
        }


def _sdpa_cpu_formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * sdpa_macs(query_shape, key_shape, value_shape, out_shape[0])


def torch_flop_counter(model: nn.Module, inputs: tuple, reference: MacCount) -> CounterResult:
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_formula}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
        model(*inputs)
    by_op: Counter = Counter()
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        name = str(op).removeprefix("aten.")
        by_op[FLOP_COUNTER_GROUPS.get(name, name)] += flops // 2
    macs = counter.get_total_flops() // 2
    gemm = sum(v for op, v in reference.by_operator.items() if op in GEMM_OPS)
    others = {op: v for op, v in reference.by_operator.items() if op not in GEMM_OPS}
    if macs == gemm:
        note = "equals fvcore's GEMM-only MACs exactly (it counts 2 FLOPs per MAC, matrix products only)"
        if others:
            note += "; it leaves out " + _list(others)
    else:
        note = f"differs from fvcore's GEMM-only MACs by {macs - gemm:+,}: " + _list(dict(by_op))
    return CounterResult("torch FlopCounterMode", "FLOPs = 2 x MACs, GEMM only", macs, dict(by_op), note)


def _thop_category(module: nn.Module) -> str:
    kind = type(module).__name__
    for prefix, category in THOP_MODULE_PREFIXES:
        if kind.startswith(prefix):
            return category
    return kind.lower()


def thop_counter(model: nn.Module, inputs: tuple, reference: MacCount) -> CounterResult:
    thop_profile = importlib.import_module("thop.profile")  # the module; `thop.profile` is also its function

    by_op: Counter = Counter()

    def recording(rule):
        def hook(module, x, y):
            before = float(module.total_ops)
            rule(module, x, y)
            by_op[_thop_category(module)] += int(float(module.total_ops) - before)

        return hook

    custom = {kind: recording(rule) for kind, rule in thop_profile.register_hooks.items()}
    with quiet():
        macs, _ = thop_profile.profile(copy.deepcopy(model), inputs=inputs, custom_ops=custom, verbose=False)
    by_op = Counter({k: v for k, v in by_op.items() if v})
    diffs = []
    for op in sorted(set(reference.by_operator) | set(by_op)):
        ref, got = reference.by_operator.get(op, 0), by_op.get(op, 0)
        if ref != got:
            diffs.append(f"{op}: thop {got:,}, fvcore {ref:,}")
    note = "agrees with fvcore per operator" if not diffs else "; ".join(diffs)
    if any(by_op.get(op, 0) < v for op, v in reference.by_operator.items() if op in GEMM_OPS):
        note += " (thop sees only nn.Module calls: functional products such as F.linear, matmul, SDPA escape it)"
    if any(op.endswith("norm") for op in reference.by_operator):
        note += (" (norms: thop counts 2 per element, 4 when affine; fvcore 5 for affine LayerNorm/GroupNorm, 2 for "
                 "eval BatchNorm)")
    return CounterResult("thop", "MACs, nn.Module hooks only", int(macs), dict(by_op), note)


def _list(macs_by_op: dict[str, int]) -> str:
    return ", ".join(f"{op} {v:,}" for op, v in sorted(macs_by_op.items(), key=lambda kv: -kv[1]))


def plain_fvcore_note(reference: MacCount) -> str:
    """Where fvcore's own rules would report something else than ours, per operator (empty where they agree).

    Ours count broadcast matmuls' true product (fvcore's rule multiplies a's elements by b's last dimension and
    raises on a vector b), SDPA, baddbmm, mv, recurrent gates and multi-head attention's products (no fvcore rule:
    counted 0)."""
    parts = []
    for op, row in reference.fvcore_differences.items():
        calls = row.get("calls", 0)
        part = f"{op} ({calls} call{'s' if calls != 1 else ''}): {row.get('macs', 0):,} here"
        if row.get("fvcore_raises"):
            part += f", its rule raises on {row['fvcore_raises']}"
            if row.get("fvcore_raises") != calls:
                part += f" and gives {row.get('fvcore_macs', 0):,} on the others"
        else:
            part += f", {row.get('fvcore_macs', 0):,} by its rule"
        parts.append(part)
    return "plain fvcore differs: " + "; ".join(parts) if parts else ""


def cross_check(model: nn.Module, inputs: tuple, reference: MacCount) -> list[CounterResult]:
    """fvcore's rules (from ``reference``), torch's FlopCounterMode and thop, each in MACs."""
    note = "the reference: fvcore's rules plus exact einsum, attention, broadcast-matmul and recurrent handles"
    plain = plain_fvcore_note(reference)
    fvcore = CounterResult(
        f"fvcore rules ({reference.engine} engine)",
        "MACs, all counted ops",
        reference.total(),
        reference.by_operator,
        note + ("; " + plain if plain else ""),
    )
    return [fvcore, torch_flop_counter(model, inputs, reference), thop_counter(model, inputs, reference)]
