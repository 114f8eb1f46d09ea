"""`hrvit-bench report`: count the whole zoo at its paper resolutions, check the claims, write reports/.

Files are written atomically (staged, then renamed into place), so an interrupted run leaves every previous report
whole. ``gate`` compares a new report with a committed one.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import plots, zoo
from .claims_report import ClaimsReport, claim_inputs, scaling_inputs
from .claims import load_claims
from .conventions import ALL_CONVENTIONS, MACS_ALL, MACS_GEMM
from .count_cache import CountCache
from .counting import MacCount
from .environment import Environment
from .gate import CLAIMS_CSV, MODELS_CSV, EXACT
from .latency.settings import LatencySettings
from .official import load_official
from .output import csv_text, write_files
from .published import check_published, load_published
from .records import Record
from .shards import Shard
from .zoo import format_size

CLAIMS_MD, REPORT_JSON = "claims.md", "report.json"


@dataclass
class ModelRow:
    model: str
    family: str
    task: str
    dataset: str | None
    input: str
    params: int
    unused_params: int
    macs_all: int
    macs_gemm: int
    giga: dict[str, float]
    published_params_m: float | None = None
    published_gflops: float | None = None
    published_best_convention: str | None = None
    official_params: int | None = None  # counted on the official code (data/official_counts.csv)
    official_macs_all: int | None = None  # what our count must be, from the official code's fvcore total

    @property
    def equals_official(self) -> bool | None:
        """None where the official code was not counted at this input."""
        if self.official_params is None:
            return None
        return self.params == self.official_params and self.official_macs_all in (None, self.macs_all)

    def to_dict(self) -> dict:
        row = {k: v for k, v in self.__dict__.items() if k != "giga"} | {"equals_official": self.equals_official}
        return row | giga_columns(self.giga)


def exact_columns(count: MacCount) -> dict[str, int]:
    """The integers the gate compares, by convention name (never a position in a list)."""
    return {"params": count.params, "unused_params": count.unused_params, "macs_all": count.total(MACS_ALL),
            "macs_gemm": count.total(MACS_GEMM)}


def giga_values(count: MacCount) -> dict[str, float]:
    return {c.name: c.giga_value(count.total(c)) for c in ALL_CONVENTIONS}


def giga_columns(giga: dict[str, float]) -> dict[str, float]:
    return {f"G[{name}]": round(value, 4) for name, value in giga.items()}


def count_columns(count: MacCount) -> dict:
    """A count's columns in models.csv and a merged flops.csv: the exact integers, then each convention's giga."""
    return exact_columns(count) | giga_columns(giga_values(count))


def zoo_inputs() -> set[tuple[str, tuple[int, int]]]:
    return {(name, size) for name in zoo.names() for size in zoo.info(name).paper_inputs}


def wanted_inputs() -> set[tuple[str, tuple[int, int]]]:
    """Every (model, input) the report counts: the zoo at its paper inputs, the claims, Table 6, published rows."""
    return zoo_inputs() | claim_inputs(load_claims()) | scaling_inputs() | {(p.model, p.input)
                                                                          for p in load_published()}


def work_list() -> list[str]:
    """The models a report counts, sorted: what --shard K/N slices."""
    return sorted({name for name, _ in wanted_inputs()})


def count_record(engine: str, shard: Shard | None, progress=None, jobs: int = 2) -> Record:
    """The counts behind a report (one shard of them with ``shard``): the work list is the models, sorted, and a
    shard counts every input its models are wanted at."""
    start = time.perf_counter()
    wanted = wanted_inputs()
    models = work_list()
    mine = set(shard.select(models)) if shard else set(models)
    keys = sorted((name, size) for name, size in wanted if name in mine)
    counts = CountCache(engine)
    counts.prefetch(keys, jobs, progress)
    rows = [counts.get(name, size).to_dict(detail=False) for name, size in keys]  # MacCount.from_dict reads them
    return Record("report", {"engine": engine}, rows, Environment.capture("cpu").to_dict(),
                  shard.to_dict(models, [f"{n}@{format_size(s)}" for n, s in wanted]) if shard else None,
                  wall_time_s=round(time.perf_counter() - start, 2))


def count_zoo(counts: CountCache) -> list[ModelRow]:
    """One row per registered model and paper resolution."""
    published = {(p.published.model, format_size(p.published.input)): p for p in check_published(counts)}
    official = {(o.model, format_size(o.input)): o for o in load_official()}
    rows = []
    for name in zoo.names():
        info = zoo.info(name)
        for size in info.paper_inputs:
            count = counts.get(name, size)
            pub = published.get((name, format_size(size)))
            off = official.get((name, format_size(size)))
            rows.append(ModelRow(
                model=name, family=info.family, task=info.task, dataset=info.dataset, input=format_size(size),
                **exact_columns(count), giga=giga_values(count),
                published_params_m=pub.published.params_m if pub else None,
                published_gflops=pub.published.gflops if pub else None,
                published_best_convention=pub.best_convention if pub else None,
                official_params=off.params if off else None, official_macs_all=off.our_macs if off else None,
            ))
    return rows


@dataclass
class Report:
    rows: list[ModelRow]
    claims: ClaimsReport
    environment: dict
    wall_time_s: float
    engine: str
    profiles: list = field(default_factory=list)  # with --latency: profile.REPORT_MODELS, for the roofline plot

    @classmethod
    def measure(cls, engine: str = "meta", progress=None, latency: LatencySettings | None = None,
                jobs: int = 2) -> "Report":
        start = time.perf_counter()
        counts = CountCache(engine)
        counts.prefetch(wanted_inputs(), jobs, progress)
        report = cls.measure_from(counts, engine, Environment.capture("cpu").to_dict(), 0.0, latency, progress)
        if latency is not None:
            from .profile import profile_for_report

            report.profiles = profile_for_report(latency, progress)
        report.wall_time_s = time.perf_counter() - start
        return report

    @classmethod
    def measure_from(cls, counts: CountCache, engine: str, environment: dict, wall_time_s: float,
                     latency: LatencySettings | None = None, progress=None) -> "Report":
        """The report from counts already made (here, or read from shards' records by `hrvit-bench merge`)."""
        rows = count_zoo(counts)
        claims = ClaimsReport.measure(counts=counts, latency=latency, progress=progress)
        return cls(rows, claims, environment, wall_time_s, engine)

    @property
    def latency(self) -> list[dict]:
        """Each model the latency rows timed, once per input: its median and GMACs (for the latency plot)."""
        seen = {}
        for h in self.claims.latency_headlines:
            for cmp in h.latency.comparisons if h.latency else ():
                for side in cmp.sides:
                    seen.setdefault((side.model, cmp.input_size), {
                        "model": side.model, "input": format_size(cmp.input_size),
                        "device": cmp.environment.device_name, "threads": cmp.settings.threads,
                        "median_ms": side.median.value, "gmacs": side.flops / 2e9 if side.flops else None})
        return list(seen.values())

    @property
    def unlike_official(self) -> list[ModelRow]:
        """Rows whose counts differ from the official code's: a bug, never a convention."""
        return [r for r in self.rows if r.equals_official is False]

    def exact_counts(self) -> dict[str, dict[str, int]]:
        """What the gate compares exactly: "model @ input" -> integer counts."""
        return {f"{r.model} @ {r.input}": {c: getattr(r, c) for c in EXACT} for r in self.rows}

    def verdicts(self) -> dict[str, str]:
        return {h.claim.key: h.verdict for h in self.claims.cost_headlines}

    def latency_ratios(self) -> dict[str, float]:
        return {h.claim.key: h.latency.change.value for h in self.claims.latency_headlines if h.latency}

    def to_dict(self) -> dict:
        return {
            "environment": self.environment | {"wall_time_s": round(self.wall_time_s, 2), "engine": self.engine},
            "models": [r.to_dict() for r in self.rows],
            **self.claims.to_dict(),
            **({"profiles": [p.to_dict() for p in self.profiles]} if self.profiles else {}),
        }

    def files(self) -> dict[str, str | bytes]:
        out = {
            MODELS_CSV: csv_text(r.to_dict() for r in self.rows),
            CLAIMS_CSV: csv_text(self.claims.csv_rows()),
            CLAIMS_MD: self.claims.to_markdown(),
            REPORT_JSON: json.dumps(self.to_dict(), indent=2, default=str) + "\n",
        }
        out.update(plots.render_all(self))
        return out

    def write(self, out_dir: str | Path) -> list[Path]:
        return write_files(out_dir, self.files())
