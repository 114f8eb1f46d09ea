"""The fvcore engine: fvcore's ``FlopCountAnalysis`` itself, on real tensors, with the handles it lacks.

fvcore traces the model with ``torch.jit.trace`` and applies one handle per aten node. Ours add
``aten::scaled_dot_product_attention`` (fvcore: 0), exact einsums (fvcore parses ``np.einsum_path`` text), true
broadcast matmuls, ``out=`` on the products, baddbmm/addbmm/mv/addmv/dot, recurrent gates and the native
multi-head attention. Every handle's failure becomes an error naming the operator.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections import Counter, defaultdict
from typing import Callable

import torch
from torch import nn

from ..errors import first_line
from .errors import CountingError
from .formulas import einsum_macs, fvcore_matmul_macs, matmul_macs, rnn_macs, sdpa_macs
from .params import ParameterReads
from .result import RawCounts
from .rules import Counted, native_mha_counted, note_difference, one_op
from .vocabulary import is_opaque, moves_data


def _shapes(values) -> list[list[int]]:
    from fvcore.nn.jit_handles import get_shape

    return [get_shape(v) for v in values]


def _list_shapes(value) -> list[list[int]]:
    """Shapes of the tensors in a traced list argument (a ``prim::ListConstruct``)."""
    return _shapes(value.node().inputs())


def _fvcore_sdpa_handle(inputs, outputs) -> Counted:
    q, k, v, out = _shapes([*inputs[:3], outputs[0]])
    return one_op("scaled_dot_product_attention", sdpa_macs(q, k, v, out), 0)


def _fvcore_einsum_handle(inputs, outputs) -> Counted:
    return one_op("einsum", einsum_macs(inputs[0].toIValue(), _list_shapes(inputs[1])))


def _fvcore_product_handle(op: str, first: int, plain_rule: bool) -> Callable:
    """aten::matmul, mm and bmm, whose fvcore rules assert two inputs (an ``out=`` tensor is a third), and the
    products fvcore has no rule for (baddbmm, addbmm, mv, addmv, dot, vdot). Operands are read by position."""

    def handle(inputs, outputs) -> Counted:
        a, b = _shapes(inputs[first : first + 2])
        plain = (fvcore_matmul_macs(a, b) if len(inputs) == first + 2 else None) if plain_rule else 0
        return one_op(op, matmul_macs(a, b), plain)

    return handle


def _fvcore_rnn_handle(inputs, outputs) -> Counted:
    """aten::lstm/gru/rnn_*: the flat weights are the last list among inputs 1-3 (see ``_rnn_rule``)."""
    weights = next(v for v in reversed(inputs[1:4]) if v.type().kind() == "ListType")
    return one_op("rnn", rnn_macs(_shapes(inputs[:1])[0], _list_shapes(weights)), 0)


def _fvcore_rnn_cell_handle(inputs, outputs) -> Counted:
    """aten::lstm_cell and kin, where a trace keeps them whole (torch 2.x traces their two linear calls)."""
    x, w_ih, w_hh = _shapes([inputs[0], inputs[2], inputs[3]])
    return one_op("linear", rnn_macs(x, [w_ih, w_hh]), 0)


def _fvcore_native_mha_handle(inputs, outputs) -> Counted:
    q, k, v = _shapes(inputs[:3])
    return native_mha_counted(q, k, v, inputs[10].toIValue())


EXTRA_FVCORE_HANDLES: dict[str, Callable] = {
    "aten::scaled_dot_product_attention": _fvcore_sdpa_handle,
    "aten::einsum": _fvcore_einsum_handle,
    "aten::matmul": _fvcore_product_handle("matmul", 0, True),
    "aten::mm": _fvcore_product_handle("mm", 0, True),
    "aten::bmm": _fvcore_product_handle("bmm", 0, True),
    "aten::baddbmm": _fvcore_product_handle("baddbmm", 1, False),
    "aten::addmm_": _fvcore_product_handle("addmm", 1, False),
    "aten::baddbmm_": _fvcore_product_handle("baddbmm", 1, False),
    "aten::addbmm_": _fvcore_product_handle("addbmm", 1, False),
    "aten::addmv_": _fvcore_product_handle("addmv", 1, False),
    "aten::addbmm": _fvcore_product_handle("addbmm", 1, False),
    "aten::mv": _fvcore_product_handle("mv", 0, False),
    "aten::addmv": _fvcore_product_handle("addmv", 1, False),
    "aten::dot": _fvcore_product_handle("dot", 0, False),
    "aten::vdot": _fvcore_product_handle("dot", 0, False),
    **{f"aten::{op}": _fvcore_rnn_handle for op in ("lstm", "gru", "rnn_tanh", "rnn_relu")},
    **{f"aten::{op}": _fvcore_rnn_cell_handle for op in ("lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell")},
    "aten::_native_multi_head_attention": _fvcore_native_mha_handle,
}


class _FvcoreRecorder:
    """Wraps every fvcore handle: counts the calls it counted, notes where plain fvcore would differ, and turns a
    handle's failure into an error naming the operator (never an input the model refused)."""

    def __init__(self):
        self.counted_calls = 0
        self.differences: dict[str, Counter] = defaultdict(Counter)

    def wrap(self, name: str, handle: Callable) -> Callable:
        op = name.removeprefix("aten::")

        def counted(inputs, outputs):
            try:
                result = handle(inputs, outputs)
            except Exception as exc:
                raise CountingError(f"the fvcore rule for {name} failed on shapes {_shapes(inputs)}: "
                                    f"{type(exc).__name__}: {first_line(exc)}") from exc
            self.counted_calls += 1
            if isinstance(result, Counted):
                note_difference(self.differences, op, result)
                return Counter(result.by_op)
            return result

        return counted


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


def _refuse_script_modules(model: nn.Module) -> None:
    scripted = [name or "(the model)" for name, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)]
    if scripted:
        raise CountingError(f"fvcore cannot count a model holding a TorchScript module ({', '.join(scripted[:3])}): "
                            "its trace hooks every module, and a ScriptModule takes no hooks; count it with the meta "
                            "engine, which counts what runs inside")


def count_fvcore(model: nn.Module, inputs: tuple) -> RawCounts:
    """fvcore's FlopCountAnalysis on real tensors, with our handles; a call it traces as one opaque node (a
    TorchScript function, a custom autograd.Function) is listed by that node's name, which coverage counts as
    possibly GEMM-like."""
    _refuse_script_modules(model)
    with quiet():
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

        recorder = _FvcoreRecorder()
        handles = {**_DEFAULT_SUPPORTED_OPS, **EXTRA_FVCORE_HANDLES}
        analysis = FlopCountAnalysis(model, inputs).set_op_handle(
            **{name: recorder.wrap(name, h) for name, h in handles.items() if h is not None})
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        with ParameterReads() as reads:  # the trace runs here, lazily
            by_module = {name: Counter(ops) for name, ops in analysis.by_module_and_operator().items()}
        unsupported = Counter()
        for op, calls in analysis.unsupported_ops().items():
            name = op.removeprefix("aten::")
            if not moves_data(name):
                unsupported[name] += calls
        uncalled = set(analysis.uncalled_modules())
    return RawCounts(by_module, unsupported, uncalled, reads.read, recorder.counted_calls,
                     {op for op in unsupported if is_opaque(op)}, recorder.differences)
