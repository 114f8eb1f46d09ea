"""The `hrvit-bench` command line: thin wiring from options to the engine modules, one module per group of
commands (``counts``: list, params, flops; ``timing``: latency, profile; ``reports``: claims, report, merge).
Importing a group registers its commands, in the order `--help` lists them."""
from . import counts, timing, reports  # noqa: F401,I001  (registers the commands, in this order)
from .common import app, main

__all__ = ["app", "main"]
