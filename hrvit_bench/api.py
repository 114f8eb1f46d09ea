"""The Python door: count any model in a notebook or a script, with the result the `flops` command renders."""
from __future__ import annotations

import copy

import torch
from torch import nn

from . import zoo
from .conventions import ALL_CONVENTIONS, DEFAULT, Convention
from .cost import FlopReport, count_model
from .counting import real_inputs
from .crosscheck import cross_check as run_cross_checks
from .errors import UsageError


def count(
    model: nn.Module | str,
    inputs: tuple[int, ...] | tuple[torch.Tensor, ...] | torch.Tensor | None = None,
    *,
    engine: str = "meta",
    cross_check: bool = False,
    name: str | None = None,
    conventions: tuple[Convention, ...] = ALL_CONVENTIONS,
) -> FlopReport:
    """MACs and parameters of one forward of ``model`` on ``inputs``.

    ``model``: an ``nn.Module``, or a name or spec as ``--model`` takes it (``"hrvit_b1"``, ``"timm:resnet50"``,
    ``"my_model.py:build"``). ``inputs``: a shape such as ``(1, 3, 224, 224)``, or the tensor(s) of the forward's
    positional arguments; for a name or spec, None means its own input. ``engine="meta"`` counts on shapes alone
    (a copy of the model goes to the meta device); ``"fvcore"`` runs fvcore itself. ``cross_check=True`` adds the
    CLI's cross-checks (torch FlopCounterMode and thop). The result renders as the CLI does (``.tables()``,
    ``.to_dict()``, ``.csv_rows()``); ``.count.total()`` is the MAC total in fvcore's convention.
    """
    device = "meta" if engine == "meta" else "cpu"
    if isinstance(model, str):
        spec = model
        if inputs is None:
            return FlopReport.measure(spec, engine=engine, cross_checks=cross_check, conventions=conventions,
                                      shown=conventions[0] if conventions else DEFAULT)
        [info] = _one(spec)
        model, _ = zoo.build_with_inputs(info.name, zoo.input_shape(info, None), device)
        name = name or info.name
    elif not isinstance(model, nn.Module):
        raise UsageError(f"count() takes an nn.Module or a model name, not {type(model).__name__}")
    elif inputs is None:
        raise UsageError("count() of an nn.Module needs inputs: a shape such as (1, 3, 224, 224) or the tensors")
    name = name or type(model).__name__
    result = count_model(model, inputs if isinstance(inputs, tuple) else (inputs,), engine, name)
    checks = []
    if cross_check:
        on_meta = all(p.is_meta for p in model.parameters())
        source = model if engine != "meta" or on_meta else copy.deepcopy(model).to("meta")  # the caller's stays
        tensors = _tensors(inputs, device)
        checks = run_cross_checks(source, tensors, result)
    return FlopReport(count=result, conventions=conventions, shown=conventions[0] if conventions else DEFAULT,
                      cross_checks=checks)


def _one(spec: str):
    infos = zoo.resolve([spec])
    if len(infos) != 1:
        raise UsageError(f"{spec!r} names {len(infos)} models; count() counts one")
    return infos


def _tensors(inputs, device: str) -> tuple[torch.Tensor, ...]:
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if all(isinstance(d, int) for d in inputs):
        return (torch.zeros(inputs, device=device),)
    if device == "meta":
        return tuple(t.to("meta") for t in inputs)
    return real_inputs(inputs)
