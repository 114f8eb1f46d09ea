"""Where results go: rich tables on a terminal, JSON or CSV on stdout, files written atomically."""
from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import pandas as pd
from rich.console import Console

# Piped output (logs, CI, README examples) gets room for wide tables instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def csv_text(rows: Iterable[dict]) -> str:
    buffer = io.StringIO()
    pd.DataFrame(list(rows)).to_csv(buffer, index=False)
    return buffer.getvalue()


def print_csv(rows: Iterable[dict]) -> None:
    sys.stdout.write(csv_text(rows))


def print_tables(tables) -> None:
    for table in tables:
        console.print(table)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
