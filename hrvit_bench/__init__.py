"""hrvit-bench: what a vision backbone costs, counted and timed honestly, and HRViT's claims checked."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``hrvit_bench.count``, imported on first use so that importing the package stays light."""
    if name == "count":
        from .api import count

        return count
    raise AttributeError(f"module 'hrvit_bench' has no attribute {name!r}")
