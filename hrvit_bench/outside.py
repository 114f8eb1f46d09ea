"""Models from outside the registry, named by a spec: ``timm:NAME``, ``torchvision:NAME``, ``path/to/file.py:BUILDER``
or ``package.module:BUILDER``.

A researcher's first question is what *their* backbone costs, so any builder that returns an ``nn.Module`` (or a
``(module, example_inputs)`` pair) can be counted and timed like a registered model. Every way a spec can be wrong
becomes one line (a UsageError) before anything is counted, and importing a user's file writes nothing beside it.
Only zoo.py reaches this module: the rest of hrvit-bench sees outside models as names, their spec.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import UsageError, first_line

if TYPE_CHECKING:  # torch is imported where a model is built, so that naming models stays light
    import torch
    from torch import nn

DEFAULT_INPUT = (224, 224)
# What works (README, "Any model"): timm needs torchvision, and PyPI's torchvision imports only beside the torch
# it was built for, so both go in a venv of their own, with the checkout installed there too.
TIMM_VENV = ("python3 -m venv .venv-timm && . .venv-timm/bin/activate && pip install torch==2.14.1 "
             'torchvision==0.29.1 && pip install -e ".[timm]"')
TIMM_INSTALL = ("install it in a venv of its own, as the README's \"Any model\" does, from the hrvit-bench checkout: "
                + TIMM_VENV)
KINDS = ("timm", "torchvision")


def is_spec(text: str) -> bool:
    """Registered names never hold a colon; every outside spec does."""
    return ":" in text


@dataclass(frozen=True)
class OutsideModel:
    """A resolved spec: how to build it, and the input a forward takes when the user gives none."""

    spec: str
    make: Callable[[], object]  # returns an nn.Module or (nn.Module, example_inputs)
    input_size: tuple[int, int]  # (H, W) of the default image input
    example_shapes: tuple[tuple[int, ...], ...] | None  # the builder's own example inputs, when it brings them
    frames: int | None = None  # a video model's clip length: its input is B x 3 x T x H x W

    def build(self) -> tuple[nn.Module, tuple[torch.Tensor, ...] | None]:
        """Call the builder (on whatever device context the caller set): the module, and its example inputs."""
        return _checked(self.spec, _call(self.spec, self.make))


_RESOLVED: dict[tuple[str, str], OutsideModel] = {}  # (spec, working directory): a file spec's path is relative


def lookup(spec: str) -> OutsideModel | None:
    """The resolved model of a spec seen before, else None (registered names are never outside models)."""
    return _RESOLVED.get((spec, os.getcwd()))


def resolve(spec: str, probe: Callable[["OutsideModel"], tuple]) -> OutsideModel:
    """Check a spec fully, once per process: import what it names, call the builder through ``probe`` (zoo builds
    on the meta device), and learn its default input."""
    if lookup(spec) is not None:
        return lookup(spec)
    kind, _, target = spec.partition(":")
    clip = None
    if kind in KINDS:
        if not target:
            raise UsageError(f"{spec!r} names no model: write {kind}:NAME")
        if kind == "timm":
            make = _timm_maker(spec, target)
        else:
            make, clip = _torchvision_maker(spec, target)
    else:
        source, _, builder = spec.rpartition(":")
        if not source or not builder:
            raise UsageError(f"{spec!r} is not a model spec: use timm:NAME, torchvision:NAME, path/to/file.py:BUILDER "
                             "or package.module:BUILDER")
        make = _builder(spec, source, builder)
    unprobed = OutsideModel(spec, make, DEFAULT_INPUT, None)
    module, inputs = probe(unprobed)
    example_shapes = None if inputs is None else tuple(tuple(t.shape) for t in inputs)
    if example_shapes is not None:
        size = example_shapes[0][-2:] if len(example_shapes[0]) == 4 else DEFAULT_INPUT
    else:
        size = (clip[1:] if clip else None) or _pretrained_input_size(module) or DEFAULT_INPUT
    resolved = OutsideModel(spec, make, tuple(int(s) for s in size), example_shapes, clip[0] if clip else None)
    _RESOLVED[(spec, os.getcwd())] = resolved
    return resolved


def _pretrained_input_size(module: nn.Module) -> tuple[int, int] | None:
    """timm models carry their training resolution in ``pretrained_cfg["input_size"]`` (C, H, W)."""
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None)
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    return (int(size[-2]), int(size[-1])) if size and len(size) >= 2 else None


# --------------------------------------------------------------------------------------------------------------
# timm and torchvision: optional, and named by their own registries.


def _import_optional(name: str, spec: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or name
        raise UsageError(f"{spec} needs {name}, but {missing} is not installed: {TIMM_INSTALL}") from None
    except Exception as exc:  # e.g. a torchvision built for another torch fails while importing
        raise UsageError(f"{spec} needs {name}, which does not import here ({type(exc).__name__}: "
                         f"{first_line(exc)}): {TIMM_INSTALL}") from None


def _unknown(kind: str, name: str, known: list[str]) -> UsageError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return UsageError(f"unknown {kind} model {name!r}{hint}")


def _timm_maker(spec: str, name: str) -> Callable[[], nn.Module]:
    timm = _import_optional("timm", spec)
    architecture = name.partition(".")[0]  # "vit_base_patch16_224.augreg_in21k": a pretrained tag after the dot
    if not timm.is_model(architecture):
        raise _unknown("timm", name, timm.list_models())
    return lambda: timm.create_model(name, pretrained=False)


VIDEO_FRAMES = 16  # torchvision's video classification recipe trains on 16-frame clips


def _torchvision_maker(spec: str, name: str) -> tuple[Callable[[], nn.Module], tuple[int, int, int] | None]:
    """The builder, with no weights at all (segmentation and detection builders would otherwise fetch their
    backbone's), and for a video model its clip (frames, height, width) from its weights' transforms."""
    _import_optional("torchvision", spec)
    from torchvision import models as tv_models

    known = tv_models.list_models()
    if name not in known:
        raise _unknown("torchvision", name, known)
    builder = tv_models.get_model_builder(name)
    options = {"weights": None}
    if "weights_backbone" in inspect.signature(builder).parameters:
        options["weights_backbone"] = None
    clip = _video_clip(tv_models, name) if builder.__module__.startswith("torchvision.models.video") else None
    return (lambda: tv_models.get_model(name, **options)), clip


def _video_clip(tv_models, name: str) -> tuple[int, int, int]:
    """(frames, height, width): the crop of the first weights' transforms, and at least VIDEO_FRAMES frames (more
    where the model needs them: ``min_temporal_size``)."""
    weights = next(iter(tv_models.get_model_weights(name)))
    crop = getattr(weights.transforms, "keywords", {}).get("crop_size", DEFAULT_INPUT)
    height, width = (crop, crop) if isinstance(crop, int) else tuple(crop)
    return max(VIDEO_FRAMES, int(weights.meta.get("min_temporal_size", 1))), int(height), int(width)


# --------------------------------------------------------------------------------------------------------------
# A user's builder: in a file, or in an importable module.


@contextlib.contextmanager
def _importing(folder: str | None):
    """Import without writing __pycache__ beside the user's code, with ``folder`` on sys.path meanwhile (as
    ``python file.py`` would have it), and leave sys.path as it was."""
    saved_path, saved_flag = list(sys.path), sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    if folder is not None and folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_flag


def _load_file(spec: str, source: str):
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"{spec}: no file {source}" + ("" if path.suffix == ".py" else " (a file spec ends in .py)"))
    module_name = f"_hrvit_bench_outside_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look a module up by name while it runs
    try:
        with _importing(str(path.resolve().parent)):
            loader_spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise UsageError(f"{spec}: syntax error in {source}, line {exc.lineno}: {exc.msg}") from None
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise UsageError(f"{spec}: importing {source} failed: {type(exc).__name__}: {first_line(exc)}") from None
    return module


def _load_module(spec: str, source: str):
    if not all(part.isidentifier() for part in source.split(".")):
        raise UsageError(f"{spec}: {source!r} is neither a .py file nor a module name (package.module)")
    try:
        with _importing(os.getcwd()):  # as `python -m` would: the working directory's packages import
            return importlib.import_module(source)
    except ModuleNotFoundError as exc:
        if exc.name and source.startswith(exc.name):
            raise UsageError(f"{spec}: no module named {exc.name!r} (nor a file {source})") from None
        raise UsageError(f"{spec}: importing {source} failed: {type(exc).__name__}: {first_line(exc)}") from None
    except SyntaxError as exc:
        raise UsageError(f"{spec}: syntax error in {exc.filename}, line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:
        raise UsageError(f"{spec}: importing {source} failed: {type(exc).__name__}: {first_line(exc)}") from None


def _builder(spec: str, source: str, name: str) -> Callable[[], object]:
    module = _load_file(spec, source) if source.endswith(".py") or os.sep in source else _load_module(spec, source)
    builder = getattr(module, name, None)
    if builder is None:
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        hint = f"; it defines: {', '.join(defined)}" if defined else ""
        raise UsageError(f"{spec}: {source} has no {name!r}{hint}")
    if not callable(builder):
        raise UsageError(f"{spec}: {name} is a {type(builder).__name__}, not a callable builder")
    try:
        required = [p.name for p in inspect.signature(builder).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        required = []
    if required:
        raise UsageError(f"{spec}: the builder {name!r} has required arguments ({', '.join(required)}); it must "
                         "take none (give them defaults, or wrap it)")
    return builder


# --------------------------------------------------------------------------------------------------------------
# What a builder returns.


def _call(spec: str, make: Callable[[], object]) -> object:
    try:
        return make()
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"{spec}: building the model failed: {type(exc).__name__}: {first_line(exc)}") from exc


def _checked(spec: str, built: object) -> tuple[nn.Module, tuple[torch.Tensor, ...] | None]:
    """An nn.Module, or (nn.Module, example_inputs) with example_inputs a tensor or a tuple of tensors."""
    import torch
    from torch import nn

    if isinstance(built, nn.Module):
        return built, None
    if isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], nn.Module):
        module, inputs = built
        inputs = (inputs,) if isinstance(inputs, torch.Tensor) else inputs
        if isinstance(inputs, (tuple, list)) and inputs and all(isinstance(t, torch.Tensor) for t in inputs):
            return module, tuple(inputs)
        raise UsageError(f"{spec}: the builder's example inputs are {type(built[1]).__name__}, not a tensor or a "
                         "tuple of tensors")
    raise UsageError(f"{spec}: the builder returned {type(built).__name__}, not an nn.Module or "
                     "(nn.Module, example_inputs)")
