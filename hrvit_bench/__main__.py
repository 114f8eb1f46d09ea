"""``python -m hrvit_bench``: the same as the ``hrvit-bench`` command."""
from .cli import main

main()
