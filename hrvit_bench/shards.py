"""`--shard K/N`: one deterministic slice of a command's work list, so N jobs on N machines cover it exactly once.

The split depends only on the work list, never on the machine, the clock or the order models were given: items are
sorted by name and dealt round-robin (the i-th item, counting from 0, goes to shard ``i % N + 1``). Sizes differ by
at most one item, and neighbours in name (a family's b1, b2, b3, which cost alike) land in different shards. Each
shard records a fingerprint of the whole work list, so a merge can tell shards cut from different lists apart.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import UsageError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    index: int  # K, 1-based
    count: int  # N

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """'2/3' -> Shard(2, 3); K counts from 1 (a Slurm array's 0-based id is K - 1)."""
        match = _SHARD.match(text)
        if not match:
            raise UsageError(f"--shard {text!r} is not K/N with whole numbers, e.g. 1/3")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1 or not 1 <= index <= count:
            raise UsageError(f"--shard {text!r}: K must be between 1 and N (N at least 1), e.g. 1/{max(count, 1)}")
        return cls(index, count)

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, items: list[str]) -> list[str]:
        """This shard's items: the sorted, de-duplicated list dealt round-robin."""
        return [item for i, item in enumerate(sorted(set(items))) if i % self.count == self.index - 1]

    def to_dict(self, items: list[str], fingerprint_of: list[str] | None = None) -> dict:
        """What a record says about its shard: which one, of how many, what it covers and of what whole."""
        return {"index": self.index, "count": self.count, "items": self.select(items),
                "work_items": len(set(items)), "work_fingerprint": fingerprint(fingerprint_of or items)}


def fingerprint(items: list[str]) -> str:
    """A short hash of the sorted work list: equal on every machine that would cut the same shards."""
    return hashlib.sha256("\n".join(sorted(set(items))).encode()).hexdigest()[:16]


def parse_optional(text: str | None) -> Shard | None:
    return None if text is None else Shard.parse(text)
