"""Numbers measured on the OFFICIAL implementations (data/official_counts.csv): parameter counts and fvcore MAC
totals, one row per model and input, with the official source they were counted from. The table is regenerated
from official checkouts by benchmarks/official_counts.py; tests and reports read it instead of repeating numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from . import zoo
from .published import read_data


# The note of rows whose official forward returns logits at 1/4 resolution (HRNet's segmenters): our forward adds
# the bilinear resize to the input, which fvcore (and the meta engine) counts as 4 per output element.
RESIZE_NOT_COUNTED = "the count lacks our final bilinear resize"


@dataclass(frozen=True)
class OfficialCount:
    model: str  # the registered name of our model that mirrors the official one
    task: str
    input: tuple[int, int]
    params: int
    fvcore_macs: int | None  # None where only the parameters were counted
    source: str  # repo@commit:path of the official code (its config, where one built the model)
    note: str

    @property
    def our_macs(self) -> int | None:
        """What our default build must count at this input: the official fvcore total, plus our final resize
        where the note says the official forward stops before it."""
        if self.fvcore_macs is None or RESIZE_NOT_COUNTED not in self.note:
            return self.fvcore_macs
        return self.fvcore_macs + 4 * zoo.info(self.model).num_classes * self.input[0] * self.input[1]


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
