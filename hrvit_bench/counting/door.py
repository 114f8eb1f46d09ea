"""The one door to counting: every command, the count cache and ``hrvit_bench.count`` count through ``count``.

It owns what each caller would otherwise do its own way: reading the inputs (a shape, a "1x3x224x224" string,
tensors), building a registered or outside model by name, counting in eval mode with every submodule's training
flag restored afterwards, leaving the caller's module where it was (the meta engine counts a copy), falling back
from the meta engine to fvcore on real tensors (rebuilt on the CPU when the model was built on meta), and mapping
errors: "cannot take input" only when a plain forward on real tensors fails too, a CountingError naming the
operator when a rule or engine fails.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Callable, ContextManager

import torch
from torch import nn

from .. import zoo
from ..errors import UsageError, first_line
from .errors import CountingError, MetaCallFailed, NeedsRealTensors
from .fvcore_engine import count_fvcore
from .meta_engine import VALUE_DEPENDENT, count_meta
from .params import owners_of_parameters, parameter_counts, unread_parameters
from .result import MacCount, RawCounts

ENGINES = ("meta", "fvcore")
MODES = ("eval",)  # the mode the forward is counted in; training (backward rules) is the next to come
DATA_DEPENDENT = ("data-dependent: this count depends on tensor values (here: zeros in, the weights as built), so other "
                  "weights or inputs may give another")

Inputs = "tuple[int, ...] | str | torch.Tensor | tuple[torch.Tensor, ...]"
Observer = Callable[[nn.Module], ContextManager]


def count(target: nn.Module | str, inputs: Inputs | None = None, *, engine: str = "meta", mode: str = "eval",
          name: str | None = None, real_copy: Callable[[], nn.Module] | None = None,
          observe: Observer | None = None) -> MacCount:
    """MACs and parameters of one forward of ``target`` on ``inputs``.

    ``target``: an ``nn.Module``, or a registered name or outside spec (built through the zoo; ``inputs`` None
    means its own input). ``inputs``: a shape such as (B, C, H, W) or "BxCxHxW" (zeros of it are fed), or the
    tensor(s) of the forward's positional arguments. ``engine="meta"`` counts a meta copy on shapes alone and falls
    back to fvcore on real tensors where a call cannot run on meta (a model already on meta needs ``real_copy``
    for that); ``"fvcore"`` runs fvcore itself. ``mode``: what the forward is counted in ("eval"); the caller's
    module keeps its device and every submodule its own training flag. ``observe(module)`` gives a context the
    counted forward runs in (profile's hooks).
    """
    if engine not in ENGINES:
        raise UsageError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if isinstance(target, str):
        info = zoo.info(target)
        device = "meta" if engine == "meta" else "cpu"
        if inputs is None:
            model, tensors = zoo.build_with_inputs(info.name, zoo.input_shape(info, None), device)
        else:
            model, tensors = zoo.build(info.name, device), inputs
        return count(model, tensors, engine=engine, mode=mode, name=name or info.name, observe=observe,
                     real_copy=lambda: zoo.build(info.name, "cpu"))
    if not isinstance(target, nn.Module):
        raise UsageError(f"count() takes an nn.Module or a model name, not {type(target).__name__}")
    if inputs is None:
        raise UsageError("count() of an nn.Module needs inputs: a shape such as (1, 3, 224, 224) or the tensors")
    tensors, label = as_inputs(inputs)
    run = _Run(mode, observe, name or type(target).__name__, label)
    if engine == "meta":
        engine, raw, counted, notes = run.meta_or_fallback(target, tensors, real_copy)
    else:
        raw, counted, notes = run.fvcore(target, tensors), target, []
    return _mac_count(target, counted, raw, run, engine, notes)


def as_inputs(inputs) -> tuple[tuple[torch.Tensor, ...], tuple]:
    """(the forward's positional tensors, the shape label): one input's shape, or a tuple of the shapes."""
    if isinstance(inputs, str):
        inputs = zoo.parse_shape(inputs)
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    inputs = tuple(inputs)
    if inputs and all(_is_shape(d) for d in inputs):  # several shapes: one input each
        return tuple(torch.zeros(s, device="meta") for s in inputs), tuple(tuple(s) for s in inputs)
    if _is_shape(inputs):
        return (torch.zeros(inputs, device="meta"),), inputs
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise UsageError("inputs must be a shape (a tuple of ints, or a string such as '1x3x224x224') or a tensor or "
                         f"tuple of tensors, not {tuple(type(t).__name__ for t in inputs)}")
    shapes = tuple(tuple(t.shape) for t in inputs)
    return inputs, shapes[0] if len(shapes) == 1 else shapes


def _is_shape(value) -> bool:
    return isinstance(value, (tuple, list)) and bool(value) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)


def real_inputs(inputs: tuple[torch.Tensor, ...], device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """fvcore (and the cross-checks) run real tensors: meta inputs become zeros of their shape and dtype."""
    return tuple(torch.zeros(t.shape, dtype=t.dtype, device=device) if t.is_meta else t for t in inputs)


def _device_of(model: nn.Module) -> torch.device:
    state = [t for t in (*model.parameters(), *model.buffers()) if not t.is_meta]
    return state[0].device if state else torch.device("cpu")


def _on_meta(model: nn.Module) -> bool:
    state = [*model.parameters(), *model.buffers()]
    return bool(state) and all(t.is_meta for t in state)


@contextlib.contextmanager
def counting_mode(model: nn.Module, mode: str):
    """Every submodule in ``mode`` for the count, each one's own training flag restored afterwards."""
    flags = {m: m.training for m in model.modules()}
    model.train(mode == "train")
    try:
        yield model
    finally:
        for module, training in flags.items():
            module.training = training


class _Run:
    """One count's settings, shared by its attempts: the meta engine, and fvcore where it falls back."""

    def __init__(self, mode: str, observe: Observer | None, name: str, label: tuple):
        self.mode, self.observe, self.name, self.label = mode, observe, name, label

    def engine(self, count_fn, model: nn.Module, inputs: tuple) -> RawCounts:
        with counting_mode(model, self.mode), self.observe(model) if self.observe else contextlib.nullcontext():
            return count_fn(model, inputs)

    def meta_or_fallback(self, model, tensors, real_copy) -> tuple[str, RawCounts, nn.Module, list[str]]:
        on_meta = _on_meta(model)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a failed move warns about .grad on its way out
                subject = model if on_meta else copy.deepcopy(model).to("meta")
        except Exception as exc:  # a TorchScript module cannot move: the same rules, on real tensors
            note = (f"the model cannot move to the meta device ({type(exc).__name__}: {first_line(exc)}): the meta "
                    "engine's rules counted it on real tensors")
            return "meta", self.engine(count_meta, model, real_inputs(tensors, _device_of(model))), model, [note]
        try:
            return "meta", self.engine(count_meta, subject, tuple(t.to("meta") for t in tensors)), subject, []
        except CountingError:
            raise
        except MetaCallFailed as exc:
            op, reason = exc.op, exc.reason
        except Exception as exc:  # the forward's own code failed on meta tensors: real ones decide
            op, reason = "the forward", f"{type(exc).__name__}: {first_line(exc)}"
        if on_meta:
            if real_copy is None:
                raise NeedsRealTensors(op, reason)
            model = real_copy()
        notes = [f"the meta engine could not run {op} ({reason}): counted by fvcore on real tensors"]
        notes += [DATA_DEPENDENT] if reason == VALUE_DEPENDENT else []
        return "fvcore", self.fvcore(model, tensors), model, notes

    def fvcore(self, model: nn.Module, tensors: tuple) -> RawCounts:
        inputs = real_inputs(tensors, _device_of(model))
        try:
            return self.engine(count_fvcore, model, inputs)
        except CountingError:
            raise
        except Exception as exc:
            raise self._refused(model, inputs, exc) from exc

    def _refused(self, model: nn.Module, inputs: tuple, exc: Exception) -> Exception:
        """The input, if a plain forward refuses it too (a usage error); otherwise fvcore's own failure."""
        try:
            with counting_mode(model, self.mode), torch.no_grad():
                model(*inputs)
        except Exception as plain:
            return UsageError(f"{self.name} cannot take input {zoo.format_size(self.label)}: {first_line(plain)}")
        return CountingError(f"fvcore could not count {self.name} on {zoo.format_size(self.label)}, which a plain "
                             f"forward takes: {type(exc).__name__}: {first_line(exc)}")


def _mac_count(model: nn.Module, counted: nn.Module, raw: RawCounts, run: _Run, engine: str,
               notes: list[str]) -> MacCount:
    params, trainable = parameter_counts(model)
    unread = unread_parameters(counted, raw.read_parameters)
    return MacCount(
        model=run.name,
        input_shape=run.label,
        engine=engine,
        params=params,
        trainable_params=trainable,
        unused_params=sum(unread.values()),
        by_module={n: {op: int(v) for op, v in ops.items() if v} for n, ops in raw.by_module.items()},
        uncounted_ops=dict(raw.uncounted_ops),
        unused_parameter_names=sorted(unread),
        uncalled_modules=owners_of_parameters(model, raw.uncalled_modules),
        counted_calls=raw.counted_calls,
        composite_ops=sorted(raw.composites),
        fvcore_differences={op: dict(row) for op, row in sorted(raw.differences.items())},
        notes=notes,
    )
