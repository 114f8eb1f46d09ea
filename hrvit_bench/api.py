"""The Python door: count any model in a notebook or a script, with the result the `flops` command renders."""
from __future__ import annotations

import copy

import torch
from torch import nn

from . import counting, zoo
from .conventions import ALL_CONVENTIONS, DEFAULT, Convention
from .cost import FlopReport
from .counting.door import as_inputs, counting_mode
from .crosscheck import cross_check as run_cross_checks
from .errors import UsageError


def count(
    model: nn.Module | str,
    inputs: tuple[int, ...] | str | tuple[torch.Tensor, ...] | torch.Tensor | None = None,
    *,
    engine: str = "meta",
    cross_check: bool = False,
    name: str | None = None,
    conventions: tuple[Convention, ...] = ALL_CONVENTIONS,
) -> FlopReport:
    """MACs and parameters of one forward of ``model`` on ``inputs``.

    ``model``: an ``nn.Module``, or a name or spec as ``--model`` takes it (``"hrvit_b1"``, ``"timm:resnet50"``,
    ``"my_model.py:build"``). ``inputs``: a shape such as ``(1, 3, 224, 224)`` or ``"1x3x224x224"``, or the
    tensor(s) of the forward's positional arguments; for a name or spec, None means its own input.
    ``engine="meta"`` counts on shapes alone (a copy of the model goes to the meta device); ``"fvcore"`` runs
    fvcore itself. The model keeps its device and every submodule its training mode (the count runs in eval).
    ``cross_check=True`` adds the CLI's cross-checks (torch FlopCounterMode and thop). The result renders as the
    CLI does (``.tables()``, ``.to_dict()``, ``.csv_rows()``); ``.count.total()`` is the MAC total in fvcore's
    convention, ``.count.total("flops-gemm-2^30")`` another's.
    """
    shown = conventions[0] if conventions else DEFAULT
    real_copy = None
    if isinstance(model, str):
        info = _one(model)
        if inputs is None:
            return FlopReport.measure(info.name, engine=engine, cross_checks=cross_check, conventions=conventions,
                                      shown=shown)
        name = name or info.name
        model = zoo.build(info.name, "meta" if engine == "meta" else "cpu")
        real_copy = lambda: zoo.build(info.name, "cpu")  # noqa: E731
    result = counting.count(model, inputs, engine=engine, name=name, real_copy=real_copy)
    checks = []
    if cross_check:
        subject, tensors = _cross_check_subject(model, as_inputs(inputs)[0], result.engine)
        with counting_mode(subject, "eval"):
            checks = run_cross_checks(subject, tensors, result)
    return FlopReport(count=result, conventions=conventions, shown=shown, cross_checks=checks)


def _one(spec: str):
    infos = zoo.resolve([spec])
    if len(infos) != 1:
        raise UsageError(f"{spec!r} names {len(infos)} models; count() counts one")
    return infos[0]


def _cross_check_subject(model: nn.Module, tensors: tuple, engine: str) -> tuple[nn.Module, tuple]:
    """What the cross-checks run: a meta copy beside the meta engine (the caller's model stays where it is), the
    model itself on real tensors beside fvcore, or where it cannot go to meta."""
    if engine == "meta":
        try:
            on_meta = all(t.is_meta for t in model.parameters())
            return (model if on_meta else copy.deepcopy(model).to("meta")), tuple(t.to("meta") for t in tensors)
        except Exception:  # a TorchScript module cannot move to meta; the meta engine counted it on real tensors
            pass
    return model, counting.real_inputs(tensors)
