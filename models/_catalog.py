"""Writes ``catalog.json``: every family's registered models and their metadata, as the family modules declare
them, so that listing models needs neither torch nor the family modules.

Run it after adding a model or changing a registration (tests/test_registry.py fails until the file matches)::

    python -m hrvit_bench_models._catalog
"""
from __future__ import annotations

import json
import os
import tempfile
from importlib import import_module

from . import FAMILY_MODULES, _registry


def entries() -> list[dict]:
    """What the family modules register, one entry per name (sorted): the builder's module and the metadata."""
    modules = [f"{__package__}.{family}" for family in FAMILY_MODULES]
    for module in modules:
        import_module(module)
    return [{"module": module, **info.to_dict()}
            for name, (info, module) in sorted(_registry.declarations().items()) if module in modules]


def render(items: list[dict]) -> str:
    """JSON with one field per line, each value on its own line whole, so a changed note is a one-line diff."""
    blocks = ["  {\n" + ",\n".join(f"    {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}"
                                    for key, value in item.items()) + "\n  }" for item in items]
    return "[\n" + ",\n".join(blocks) + "\n]\n"


def main() -> None:
    text = render(entries())
    handle, staged = tempfile.mkstemp(dir=_registry.CATALOG.parent, prefix=".catalog-", suffix=".json")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(staged, _registry.CATALOG)  # atomic: an interrupted run leaves the old catalog whole
    print(f"wrote {len(json.loads(text))} models to {_registry.CATALOG}")


if __name__ == "__main__":
    main()
