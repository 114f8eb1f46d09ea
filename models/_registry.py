"""One registry for every architecture: names map to builders and the metadata a benchmark needs.

Modelled on timm's and torchvision's registries: a builder is a small function decorated with
``@register_model(...)``; variants are data; registering a name twice is an error.

Listing models must not cost a torch import, so the metadata the family modules declare is also kept in
``catalog.json`` (written by ``python -m hrvit_bench_models._catalog``; a test holds it equal to the declarations).
Names and metadata come from that file; a family's module, and torch with it, is imported when one of its models
is built. Models registered at run time (a test's toy model, a user's own) live beside the catalogued ones.
"""
from __future__ import annotations

import difflib
import fnmatch
import json
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    from torch import nn

TASKS = ("classification", "segmentation", "backbone")
# How a model computes attention, so a latency can be read beside the kernels it ran: "sdpa" (one fused
# F.scaled_dot_product_attention call), "explicit" (q @ k^T, softmax, @ v as separate ops, as most official code
# does) or "none" (no attention).
ATTENTION_PATHS = ("sdpa", "explicit", "none")


@dataclass(frozen=True)
class ModelInfo:
    """What a benchmark needs to know about a registered model, beside how to build it."""

    name: str
    family: str  # "hrvit", "mit", "cswin", "hrnet", "hrnet_vit", ...
    variant: str  # the family's own size name: "b1", "t", "w48", ...
    task: str  # one of TASKS
    dataset: str | None  # "imagenet", "ade20k", "cityscapes"; None for a bare backbone
    num_classes: int | None
    input_size: tuple[int, int]  # default (H, W)
    paper_inputs: tuple[tuple[int, int], ...]  # every resolution the papers report it at
    reference: str  # where its published numbers come from
    official_code: str  # the official implementation this one follows (repo@commit:path)
    input_multiple: int = 32  # smallest side it takes; the output stride of its deepest map
    attention: str = "none"  # one of ATTENTION_PATHS: what the default build runs
    reconstruction: str | None = None  # why no official code exists for this exact model; None: official
    ablation: str | None = None  # the switch flipped, for ablation variants
    notes: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "variant": self.variant,
            "task": self.task,
            "dataset": self.dataset,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "paper_inputs": [list(s) for s in self.paper_inputs],
            "reference": self.reference,
            "official_code": self.official_code,
            "input_multiple": self.input_multiple,
            "attention": self.attention,
            "reconstruction": self.reconstruction,
            "ablation": self.ablation,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ModelInfo":
        """The inverse of ``to_dict`` (JSON has lists where the fields hold tuples)."""
        return cls(**{**data, "input_size": tuple(data["input_size"]),
                      "paper_inputs": tuple(tuple(s) for s in data["paper_inputs"])})


class UnknownModelError(KeyError):
    """Raised for a name that is not registered; carries the closest registered names."""

    def __init__(self, name: str, suggestions: list[str]):
        self.name = name
        self.suggestions = suggestions
        hint = f"; did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown model {name!r}{hint}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


CATALOG = Path(__file__).with_name("catalog.json")


def _load_catalog() -> tuple[dict[str, ModelInfo], dict[str, str]]:
    entries = json.loads(CATALOG.read_text())
    return ({e["name"]: ModelInfo.from_dict({k: v for k, v in e.items() if k != "module"}) for e in entries},
            {e["name"]: e["module"] for e in entries})


_INFO, _MODULE = _load_catalog()  # every listed name's metadata; a catalogued name's module
_DECLARED: dict[str, tuple[ModelInfo, Callable[..., nn.Module], str]] = {}  # registered in this process


def register_model(
    *,
    family: str,
    variant: str,
    task: str,
    input_size: tuple[int, int],
    reference: str,
    official_code: str,
    dataset: str | None = None,
    num_classes: int | None = None,
    paper_inputs: Iterable[tuple[int, int]] | None = None,
    input_multiple: int = 32,
    attention: str = "none",
    reconstruction: str | None = None,
    ablation: str | None = None,
    notes: str = "",
    name: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``fn`` (a builder taking ``**overrides``) under its own name or ``name``."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    if attention not in ATTENTION_PATHS:
        raise ValueError(f"attention must be one of {ATTENTION_PATHS}, not {attention!r}")

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key != key.lower():
            raise ValueError(f"model names are lower-case: {key!r}")
        module = getattr(getattr(fn, "func", fn), "__module__", None)  # a functools.partial names its function's
        owner = _DECLARED[key][2] if key in _DECLARED else _MODULE.get(key, module)
        if key in _DECLARED or owner != module:
            raise ValueError(f"model {key!r} is already registered (by {owner})")
        info = ModelInfo(
            name=key,
            family=family,
            variant=variant,
            task=task,
            dataset=dataset,
            num_classes=num_classes,
            input_size=tuple(input_size),
            paper_inputs=tuple(tuple(s) for s in (paper_inputs or (input_size,))),
            reference=reference,
            official_code=official_code,
            input_multiple=input_multiple,
            attention=attention,
            reconstruction=reconstruction,
            ablation=ablation,
            notes=notes,
        )
        _DECLARED[key] = (info, fn, module)
        _INFO.setdefault(key, info)  # a catalogued name keeps the catalog's metadata, which the tests hold equal
        return fn

    return decorate


def unregister_model(name: str) -> None:
    """Remove a name registered at run time (for tests that register toy models)."""
    del _DECLARED[name]
    if name not in _MODULE:
        del _INFO[name]


def is_model(name: str) -> bool:
    return name in _INFO


def close_matches(name: str, n: int = 5) -> list[str]:
    names = sorted(_INFO)
    found = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    found += [m for m in names if name and name in m and m not in found]
    return found[:n]


def model_info(name: str) -> ModelInfo:
    try:
        return _INFO[name]
    except KeyError:
        raise UnknownModelError(name, close_matches(name)) from None


def list_models(pattern: str = "*", *, family: str | None = None, task: str | None = None) -> list[str]:
    """Registered names matching a glob ``pattern`` (and family/task when given), sorted."""
    return sorted(
        n
        for n, info in _INFO.items()
        if fnmatch.fnmatchcase(n, pattern)
        and (family is None or info.family == family)
        and (task is None or info.task == task)
    )


def builder(name: str) -> Callable[..., nn.Module]:
    """A registered model's builder; a catalogued one's family module is imported (and registers it) first."""
    model_info(name)  # an unknown name raises, with close matches
    if name not in _DECLARED:
        import_module(_MODULE[name])
    if name not in _DECLARED:
        raise LookupError(f"catalog.json lists {name!r} under {_MODULE[name]}, which does not register it: "
                          "regenerate it with `python -m hrvit_bench_models._catalog`")
    return _DECLARED[name][1]


def declarations() -> dict[str, tuple[ModelInfo, str]]:
    """What this process's registrations declared: name -> (metadata, module)."""
    return {name: (info, module) for name, (info, _, module) in _DECLARED.items()}


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; ``overrides`` go to the architecture's constructor."""
    return builder(name)(**overrides)
