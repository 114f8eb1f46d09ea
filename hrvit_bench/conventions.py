"""FLOP-counting conventions, made explicit: every number hrvit-bench prints carries one.

Papers disagree on three things, and each changes a published number by up to 2x or 7%:
- unit: a multiply-accumulate counted once (MACs, fvcore's and thop's "FLOPs") or twice (FLOPs = 2 x MACs,
  torch's FlopCounterMode);
- ops: every operator the counter knows (fvcore also counts norms, resizes and pooling) or GEMM only
  (convolutions, linear layers, matmuls, einsums, attention: what HRNet's and most CNN papers count);
- giga: 1e9 or 2^30 (HRNet's published GFLOPs divide by 2^30).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from .counting.vocabulary import GEMM_OPS
from .errors import UsageError

UNITS = ("macs", "flops")
OPS = ("all", "gemm")
GIGAS = ("1e9", "2^30")
GIGA_DIVISOR = {"1e9": 1e9, "2^30": float(2**30)}

@dataclass(frozen=True)
class Convention:
    unit: str = "macs"
    ops: str = "all"
    giga: str = "1e9"

    def __post_init__(self):
        if self.unit not in UNITS or self.ops not in OPS or self.giga not in GIGAS:
            raise UsageError(f"bad convention {self.unit}-{self.ops}-{self.giga}; valid: {', '.join(CONVENTION_NAMES)}")

    @property
    def name(self) -> str:
        return f"{self.unit}-{self.ops}-{self.giga}"

    @property
    def label(self) -> str:
        """Human label, e.g. 'GMACs, all ops, 1e9'."""
        unit = "GMACs" if self.unit == "macs" else "GFLOPs (2xMAC)"
        ops = "all ops" if self.ops == "all" else "GEMM only"
        return f"{unit}, {ops}, giga={self.giga}"

    def includes(self, op: str) -> bool:
        return self.ops == "all" or op in GEMM_OPS

    def count(self, macs_by_op: dict[str, float]) -> int:
        """Raw count (MACs or FLOPs) of the operators this convention includes."""
        macs = sum(v for op, v in macs_by_op.items() if self.includes(op))
        return int(round(macs * (2 if self.unit == "flops" else 1)))

    def giga_value(self, raw: float) -> float:
        return raw / GIGA_DIVISOR[self.giga]

    @classmethod
    def parse(cls, name: str) -> "Convention":
        parts = name.strip().lower().split("-")
        if len(parts) != 3 or name.strip().lower() not in CONVENTION_NAMES:
            raise UsageError(f"unknown convention {name!r}; valid: {', '.join(CONVENTION_NAMES)}")
        return cls(*parts)


DEFAULT = Convention()  # fvcore's: one MAC = one "flop", every counted operator, 1e9
MACS_ALL, MACS_GEMM = DEFAULT, Convention("macs", "gemm", "1e9")  # models.csv's two exact columns
ALL_CONVENTIONS = tuple(Convention(u, o, g) for u, o, g in product(UNITS, OPS, GIGAS))
CONVENTION_NAMES = tuple(c.name for c in ALL_CONVENTIONS)


def parse_conventions(names: list[str] | None) -> tuple[Convention, ...]:
    """`None`, `[]` or `["all"]` mean every convention."""
    if not names or names == ["all"]:
        return ALL_CONVENTIONS
    return tuple(Convention.parse(n) for n in names)
