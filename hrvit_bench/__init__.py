"""hrvit-bench: what a vision backbone costs, counted and timed honestly, and HRViT's claims checked."""

__version__ = "0.1.0"
