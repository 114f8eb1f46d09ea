"""hrvit-bench's only door to models: resolve names (registered, or outside specs such as ``timm:resnet50``), parse
input sizes, build on the right device.

Names, metadata and sizes never import torch (``hrvit-bench list`` and every ``--help`` start in a blink); torch is
imported where a model is built."""
from __future__ import annotations

import contextlib
import functools
import re
from typing import TYPE_CHECKING

import hrvit_bench_models as models
from hrvit_bench_models import ModelInfo, UnknownModelError

from . import outside
from .errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

_SIZE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?(?:[xX]\s*(\d+)\s*)?$")


def parse_size(text: str) -> tuple[int, ...]:
    """'512x1024' -> (512, 1024); a single number means a square; 'TxHxW' (a video clip) -> (T, H, W)."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"input size {text!r} is not HxW with positive integers (e.g. 512x512; TxHxW for video)")
    numbers = [int(n) for n in match.groups() if n is not None]
    if min(numbers) <= 0:
        raise UsageError(f"input size {text!r} must be positive")
    return (numbers[0], numbers[0]) if len(numbers) == 1 else tuple(numbers)


def format_size(dims) -> str:
    """(512, 1024) -> '512x1024'; also whole shapes, (1, 3, 224, 224) -> '1x3x224x224', and several inputs'
    shapes, ((1, 3, 8, 8), (1, 5)) -> '1x3x8x8, 1x5'."""
    if dims and isinstance(dims[0], (tuple, list)):  # torch.Size is a tuple
        return ", ".join(format_size(d) for d in dims)
    return "x".join(str(int(d)) for d in dims)


def parse_shape(text: str) -> tuple:
    """The inverse of ``format_size`` on whole shapes: '1x3x224x224' -> (1, 3, 224, 224); '1x3x8x8, 1x5' ->
    ((1, 3, 8, 8), (1, 5))."""
    try:
        shapes = [tuple(int(d) for d in part.split("x")) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"shape {text!r} is not sizes joined by x (e.g. 1x3x224x224)") from None
    if not all(shapes) or any(d < 0 for s in shapes for d in s):
        raise UsageError(f"shape {text!r} is not sizes joined by x (e.g. 1x3x224x224)")
    return shapes[0] if len(shapes) == 1 else tuple(shapes)


def names(pattern: str = "*", *, family: str | None = None, task: str | None = None) -> list[str]:
    """Registered names matching a glob, sorted."""
    return models.list_models(pattern, family=family, task=task)


def info(name: str) -> ModelInfo:
    if outside.is_spec(name):
        return _outside_info(_outside(name))
    try:
        return models.model_info(name)
    except UnknownModelError as exc:
        raise UsageError(str(exc)) from None


def resolve(names_or_patterns: list[str]) -> list[ModelInfo]:
    """Names, or glob patterns (``hrvit_b*_seg_ade20k``), in the order given, without repeats."""
    found: list[str] = []
    for item in names_or_patterns:
        if outside.is_spec(item):
            if item not in found:
                _outside(item)  # every spec is checked before anything is counted
                found.append(item)
        elif any(ch in item for ch in "*?["):
            matched = models.list_models(item)
            if not matched:
                raise UsageError(f"no model matches {item!r}; see `hrvit-bench list`")
            found += [m for m in matched if m not in found]
        elif item not in found:
            found.append(info(item).name)
    return [info(n) for n in found]


def input_shape(model: ModelInfo, size: tuple[int, ...] | None, batch_size: int = 1) -> tuple[int, ...]:
    """(B, 3, H, W) (a video model's (B, 3, T, H, W)), checked against what the model can take."""
    if batch_size <= 0:
        raise UsageError(f"batch size must be a positive integer, not {batch_size}")
    known = outside.lookup(model.name)
    if known is not None and known.example_shapes is not None:
        return _example_shape(known, size, batch_size)
    if known is not None and known.frames is not None:  # a video model: B x 3 x T x H x W
        frames, (h, w) = (size[0], size[1:]) if size is not None and len(size) == 3 else (
            known.frames, size or model.input_size)
        return (batch_size, 3, frames, h, w)
    if size is not None and len(size) != 2:
        raise UsageError(f"{model.name} takes an image, HxW; TxHxW (frames x height x width) is for video models")
    h, w = size or model.input_size
    if min(h, w) < model.input_multiple:
        raise UsageError(
            f"{model.name} cannot take {h}x{w}: each side must be at least {model.input_multiple} "
            f"(its deepest feature map has stride {model.input_multiple})"
        )
    return (batch_size, 3, h, w)


@functools.cache
def _no_init_on_meta_mode() -> type:
    """The mode class, made on first use: torch.overrides is imported only where a model is built."""
    from torch.overrides import TorchFunctionMode

    class NoInitOnMeta(TorchFunctionMode):
        """Skips in-place ops on meta tensors: weight initialisation (trunc_normal_, kaiming_uniform_, ...) has no
        values to write on meta, yet recent torch runs its meta kernels as slow Python refs."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name.endswith("_") and not name.endswith("__") and args and getattr(args[0], "is_meta", False):
                return args[0]
            return func(*args, **(kwargs or {}))

    return NoInitOnMeta


@contextlib.contextmanager
def _seeded():
    """Random weights, the same every build (the caller's random state untouched): a count that depends on the
    weights (detection heads after NMS) is then the same from run to run."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def build(name: str, device: str = "cpu", **overrides) -> nn.Module:
    """Build in eval mode; on ``meta`` no memory is allocated and no weights are initialised; elsewhere the random
    weights are seeded."""
    import torch

    if outside.is_spec(name):
        return _build_outside(_outside(name), device)[0]
    if torch.device(device).type == "meta":
        with torch.device(device), _no_init_on_meta_mode()():
            return models.create_model(name, **overrides).eval()
    with torch.device(device), _seeded():
        return models.create_model(name, **overrides).eval()


def build_with_inputs(name: str, shape, device: str = "cpu") -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The model and the inputs of one forward: zeros of ``shape`` (from ``input_shape``), or an outside builder's
    own example inputs, on ``device``."""
    import torch

    known = outside.lookup(name) if outside.is_spec(name) else None
    if known is not None and known.example_shapes is not None:
        model, inputs = _build_outside(known, device)
        return model, tuple(t.to(device) for t in inputs)
    return build(name, device), (torch.zeros(shape, device=device),)


def require_image_input(names: list[str], why: str) -> None:
    """Timing feeds random B x 3 x H x W images: refuse an outside model that brings inputs of another kind."""
    for name in names:
        known = outside.lookup(name)
        if known is not None and known.example_shapes is not None and (
                len(known.example_shapes) != 1 or len(known.example_shapes[0]) != 4):
            raise UsageError(f"{name} brings its own example inputs ({format_size(known.example_shapes)}); {why} "
                             "feeds one B x 3 x H x W image: make the builder return only the module")


# --------------------------------------------------------------------------------------------------------------
# Outside models (hrvit_bench/outside.py): built on the device asked for, named by their spec.


def _outside(spec: str) -> outside.OutsideModel:
    return outside.resolve(spec, lambda unprobed: _build_outside(unprobed, "meta"))


def _build_outside(model: outside.OutsideModel, device: str) -> tuple[nn.Module, tuple[torch.Tensor, ...] | None]:
    """On meta, a builder that cannot run there (``.item()`` on a meta tensor, say) is built on the CPU and moved."""
    import torch

    if torch.device(device).type == "meta":
        try:
            with torch.device(device), _no_init_on_meta_mode()():
                module, inputs = model.build()
        except UsageError:
            with torch.device("cpu"):
                module, inputs = model.build()
            module = module.to("meta")
        inputs = None if inputs is None else tuple(t.to("meta") for t in inputs)
        return module.eval(), inputs
    with torch.device(device), _seeded():
        module, inputs = model.build()
    return module.to(device).eval(), inputs


def _outside_info(model: outside.OutsideModel) -> ModelInfo:
    return ModelInfo(
        name=model.spec, family="outside", variant=model.spec.partition(":")[2], task="classification",
        dataset=None, num_classes=None, input_size=model.input_size, paper_inputs=(model.input_size,),
        reference=model.spec, official_code="", input_multiple=1, attention="unknown",
        notes="an outside model, built from its spec",
    )


def _example_shape(model: outside.OutsideModel, size: tuple[int, int] | None, batch_size: int):
    """An outside builder's example inputs are used as given: --input and --batch-size must match them."""
    shapes = model.example_shapes
    image = shapes[0] if len(shapes) == 1 and len(shapes[0]) == 4 else None
    if size is not None and (image is None or tuple(size) != tuple(image[2:])):
        raise UsageError(f"{model.spec} brings its own example inputs ({format_size(shapes)}); --input "
                         f"{format_size(size)} does not match them: leave --input out")
    if batch_size != 1 and (image is None or batch_size != image[0]):
        raise UsageError(f"{model.spec} brings its own example inputs ({format_size(shapes)}); --batch-size "
                         f"{batch_size} does not match them: leave --batch-size out")
    return image if image is not None else shapes
