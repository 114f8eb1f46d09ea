"""Where results go: rich tables on a terminal, JSON or CSV on stdout, report files written atomically."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterable

from rich.console import Console

from .errors import UsageError, first_line

MIB = 2**20


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader closed the pipe (``| head``). rich's own handler exits 1; the CLI decides instead (exit 0)."""
        self.quiet = True
        raise BrokenPipeError


def piped_width() -> int:
    """The width of output that is not a terminal (a terminal reports its own): $COLUMNS when it is a positive
    integer, else 160, room for wide tables in logs, CI and README examples where rich would assume 80."""
    columns = os.environ.get("COLUMNS", "").strip()
    return int(columns) if columns.isdigit() and int(columns) > 0 else 160


console = _Console(width=None if sys.stdout.isatty() else piped_width())
err_console = _Console(stderr=True)


def fmt(value: float | None, spec: str) -> str:
    """``format(value, spec)``, or "-" for a value that was not measured."""
    return "-" if value is None else format(value, spec)


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def csv_text(rows: Iterable[dict]) -> str:
    """Rows as CSV: the columns in the order they first appear, a missing value or None or nan as an empty cell,
    integers as integers (a column with gaps stays integer, unlike a DataFrame's)."""
    rows = list(rows)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})
    return buffer.getvalue()


def print_csv(rows: Iterable[dict]) -> None:
    sys.stdout.write(csv_text(rows))


def print_tables(tables) -> None:
    for table in tables:
        console.print(table)


def check_writable(target: str | Path, option: str = "--out", *, file_suffix: str | None = None) -> None:
    """Fail before the work, not after it, when ``target`` cannot be written: a folder (made when the files are
    written), or with ``file_suffix`` also a file of that suffix. A name with another suffix that is not a folder
    yet is refused, not made into one (``--out result.txt``). Creates nothing, so a run refused later leaves no
    empty folder behind."""
    path = Path(target)
    what = f"a FILE{file_suffix} or a folder" if file_suffix else "a folder"
    as_file = file_suffix is not None and path.suffix == file_suffix
    if as_file and path.is_dir():
        raise UsageError(f"{option} {target} is a folder; {option} takes {what}")
    if not as_file and not path.is_dir():
        if path.exists():
            raise UsageError(f"{option} {target} is a file; {option} takes {what}")
        if path.suffix:
            raise UsageError(f"{option} takes {what}: {target} would become a folder named {path.name} (create the "
                             "folder first if that is what you mean)")
    nearest = (path.parent if as_file else path).absolute()
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    try:
        if not nearest.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        with tempfile.TemporaryFile(dir=nearest):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to {option} {target}: {exc.strerror or first_line(exc)}") from None


def write_files(out_dir: str | Path, files: dict[str, str | bytes]) -> list[Path]:
    """Stage every file in a hidden folder inside ``out_dir``, then move each into place with an atomic rename:
    an interrupted run leaves every previous file whole and nothing half-written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".staging-"))
    try:
        for name, data in files.items():
            path = staging / name
            path.write_bytes(data.encode() if isinstance(data, str) else data)
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        written = []
        for name in files:
            os.replace(staging / name, out_dir / name)
            written.append(out_dir / name)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
