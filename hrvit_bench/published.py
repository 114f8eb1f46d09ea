"""Numbers from outside: what the papers and READMEs published (data/published.csv), set beside ours with the
counting convention each matches best."""
from __future__ import annotations

import csv
import importlib.resources
from dataclasses import dataclass

from . import zoo
from .conventions import ALL_CONVENTIONS
from .count_cache import CountCache


def read_data(name: str) -> list[dict]:
    """Rows of one of the package's data tables (hrvit_bench/data/NAME)."""
    with importlib.resources.files("hrvit_bench.data").joinpath(name).open(newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass(frozen=True)
class Published:
    model: str
    input: tuple[int, int]
    params_m: float
    gflops: float
    source: str


def load_published() -> list[Published]:
    return [
        Published(r["model"], zoo.parse_size(r["input"]), float(r["params_m"]), float(r["gflops"]), r["source"])
        for r in read_data("published.csv")
    ]


@dataclass
class PublishedResult:
    published: Published
    params: int
    giga_by_convention: dict[str, float]

    @property
    def best_convention(self) -> str:
        return min(self.giga_by_convention, key=lambda c: abs(self.giga_by_convention[c] - self.published.gflops))

    def to_dict(self) -> dict:
        p, best = self.published, self.best_convention
        return {
            "model": p.model, "input": zoo.format_size(p.input), "source": p.source,
            "published_params_m": p.params_m, "measured_params_m": round(self.params / 1e6, 3),
            "published_gflops": p.gflops, "best_convention": best,
            "measured_giga_best": round(self.giga_by_convention[best], 3),
            "gap_pct": round(100 * (self.giga_by_convention[best] / p.gflops - 1), 2),
            "measured_giga": {k: round(v, 3) for k, v in self.giga_by_convention.items()},
        }


def check_published(counts: CountCache, published: list[Published] | None = None) -> list[PublishedResult]:
    results = []
    for p in load_published() if published is None else published:
        count = counts.get(p.model, p.input)
        giga = {c.name: c.giga_value(count.total(c)) for c in ALL_CONVENTIONS}
        results.append(PublishedResult(p, count.params, giga))
    return results
