"""Counting: parameters and MACs of one forward, by two engines behind one door.

- ``door.count``: the one entry point (inputs, builds by name, eval mode, the meta -> fvcore fallback, errors);
- ``meta_engine`` (fvcore's rules on meta tensors, fast) and ``fvcore_engine`` (fvcore itself, on real tensors);
- ``rules`` (the Python-level and aten rule tables), ``formulas`` (pure shape -> MACs), ``shapes`` (the meta
  engine's shape shortcuts), ``vocabulary`` (every operator name set and map), ``params`` (parameter helpers);
- ``result``: ``MacCount`` and ``Coverage``, with the one dictionary form records and reports use.

Only this package runs an engine; the rest of hrvit-bench calls ``count``. The names below load on first use, so
``conventions.py`` (and the CLI's start) can read the vocabulary without importing torch and the engines.
"""
import importlib

_EXPORTS = {
    "ENGINES": "door", "MODES": "door", "count": "door", "real_inputs": "door",
    "CountingError": "errors", "NeedsRealTensors": "errors",
    "Coverage": "result", "MacCount": "result", "module_depth": "result",
    "quiet": "fvcore_engine",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
