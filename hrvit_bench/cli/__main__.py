"""``python -m hrvit_bench.cli``: the same as the ``hrvit-bench`` command."""
from . import main

main()
