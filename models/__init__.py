"""Architectures in plain PyTorch: HRViT and the baselines it is compared with.

Importing this package registers every model; reach them through ``create_model`` and ``list_models``.
Nothing here imports ``hrvit_bench``: the models know nothing of benchmarking.
"""
from importlib import import_module

from ._registry import (
    ATTENTION_PATHS,
    TASKS,
    ModelInfo,
    UnknownModelError,
    close_matches,
    create_model,
    is_model,
    list_models,
    model_info,
    register_model,
    unregister_model,
)

# Each family registers its models on import.
FAMILY_MODULES = ("hrvit", "mit", "cswin", "hrnet", "hrnet_vit")
for _module in FAMILY_MODULES:
    import_module(f"{__name__}.{_module}")

__all__ = [
    "ATTENTION_PATHS",
    "TASKS",
    "ModelInfo",
    "UnknownModelError",
    "close_matches",
    "create_model",
    "is_model",
    "list_models",
    "model_info",
    "register_model",
    "unregister_model",
]
