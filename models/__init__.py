"""Architectures in plain PyTorch: HRViT and the baselines it is compared with.

Reach them through ``create_model``, ``list_models`` and ``model_info``. Importing this package does not import
torch: names and metadata come from ``catalog.json``, and a family's module is imported when one of its models is
built. Nothing here imports ``hrvit_bench``: the models know nothing of benchmarking.
"""
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

# Each family registers its models when its module is imported; catalog.json lists what they register.
FAMILY_MODULES = ("hrvit", "mit", "cswin", "hrnet", "hrnet_vit")

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
