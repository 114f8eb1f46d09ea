"""Numbers measured on the OFFICIAL implementations (data/official_counts.csv): parameter counts and fvcore MAC
totals, one row per model and input, with the official source they were counted from. The table is regenerated
from official checkouts by benchmarks/official_counts.py; tests and reports read it instead of repeating numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from . import zoo
from .published import read_data


@dataclass(frozen=True)
class OfficialCount:
    model: str  # the registered name of our model that mirrors the official one
    task: str
    input: tuple[int, int]
    params: int
    fvcore_macs: int | None  # None where only the parameters were counted
    source: str  # repo@commit:path of the official code (its config, where one built the model)
    note: str


@cache
def load_official() -> tuple[OfficialCount, ...]:
    return tuple(
        OfficialCount(r["model"], r["task"], zoo.parse_size(r["input"]), int(r["params"]),
                      int(r["fvcore_macs"]) if r["fvcore_macs"] else None, r["source"], r["note"])
        for r in read_data("official_counts.csv")
    )


def official_count(model: str, input: tuple[int, int] | str | None = None) -> OfficialCount:
    """The row of MODEL at INPUT ('512x512' or (512, 512)); without INPUT, the model's first row (enough for its
    parameters, which do not depend on the input)."""
    rows = [r for r in load_official() if r.model == model]
    if input is not None:
        size = zoo.parse_size(input) if isinstance(input, str) else tuple(input)
        rows = [r for r in rows if r.input == size]
    if not rows:
        raise KeyError(f"no official count for {model}" + (f" at {input}" if input is not None else ""))
    return rows[0]
