"""`hrvit-bench report`: count the whole zoo at its paper resolutions, check the claims, write reports/.

Files are staged in a hidden folder beside the targets and each is moved into place with an atomic rename at
the end, so an interrupted run leaves every previous report whole. `compare` is the CI gate: it fails, naming
each row, when a parameter or MAC count moved beyond a tolerance from a committed models.csv.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import plots, zoo
from .zoo import format_size
from .claims import (
    ClaimsReport,
    check_published,
    claim_inputs,
    load_claims,
    load_published,
    scaling_inputs,
)
from .conventions import ALL_CONVENTIONS
from .count_cache import CountCache
from .environment import Environment
from .errors import UsageError
from .latency import LatencySettings, run
from .output import csv_text, write_files

MODELS_CSV, CLAIMS_CSV, CLAIMS_MD, REPORT_JSON = "models.csv", "claims.csv", "claims.md", "report.json"
COMPARED = ("params", "macs_all", "macs_gemm")  # exact integers: the gate compares these


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

    def to_dict(self) -> dict:
        row = {k: v for k, v in self.__dict__.items() if k != "giga"}
        for name, value in self.giga.items():
            row[f"G[{name}]"] = round(value, 4)
        return row


def zoo_inputs() -> set[tuple[str, tuple[int, int]]]:
    return {(name, size) for name in zoo.names() for size in zoo.info(name).paper_inputs}


def count_zoo(counts: CountCache) -> list[ModelRow]:
    """One row per registered model and paper resolution."""
    published = {(p.published.model, format_size(p.published.input)): p for p in check_published(counts)}
    rows = []
    for name in zoo.names():
        info = zoo.info(name)
        for size in info.paper_inputs:
            count = counts.get(name, size)
            pub = published.get((name, format_size(size)))
            rows.append(ModelRow(
                model=name, family=info.family, task=info.task, dataset=info.dataset, input=format_size(size),
                params=count.params, unused_params=count.unused_params,
                macs_all=count.total(ALL_CONVENTIONS[0]), macs_gemm=count.total(ALL_CONVENTIONS[2]),
                giga={c.name: c.giga_value(count.total(c)) for c in ALL_CONVENTIONS},
                published_params_m=pub.published.params_m if pub else None,
                published_gflops=pub.published.gflops if pub else None,
                published_best_convention=pub.best_convention if pub else None,
            ))
    return rows


@dataclass
class Report:
    rows: list[ModelRow]
    claims: ClaimsReport
    environment: dict
    wall_time_s: float
    engine: str
    latency: list[dict] = field(default_factory=list)

    @classmethod
    def measure(cls, engine: str = "meta", progress=None, latency_device: str | None = None,
                jobs: int = 2) -> "Report":
        start = time.perf_counter()
        counts = CountCache(engine)
        counts.prefetch(zoo_inputs() | claim_inputs(load_claims()) | scaling_inputs()
                        | {(p.model, p.input) for p in load_published()}, jobs, progress)
        rows = count_zoo(counts)
        claims = ClaimsReport.measure(counts=counts)
        latency = measure_claim_latency(latency_device, progress) if latency_device else []
        wall = time.perf_counter() - start
        return cls(rows, claims, Environment.capture("cpu").to_dict(), wall, engine, latency)

    def to_dict(self) -> dict:
        return {
            "environment": self.environment | {"wall_time_s": round(self.wall_time_s, 2), "engine": self.engine},
            "models": [r.to_dict() for r in self.rows],
            **self.claims.to_dict(),
            "latency": self.latency,
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


def measure_claim_latency(device: str, progress=None, iters: int = 10) -> list[dict]:
    """Latency of every model a measurable claim compares, at the claim's input: a short run per model."""
    by_size: dict[tuple[int, int], set[str]] = {}
    for claim in load_claims():
        if claim.measurable:
            by_size.setdefault(claim.input, set()).update(m for pair in claim.pairs for m in pair)
    settings = LatencySettings(device=device, warmup=2, iters=iters)
    rows = []
    for size, names in sorted(by_size.items()):
        tick = (lambda done, total, label: progress(f"latency {label}")) if progress else None
        for report in run(sorted(names), [size], [1], settings, progress=tick):
            for point in report.points:
                stats = point.stats
                rows.append({
                    "model": report.model, "input": format_size(point.input_size), "device": report.environment.device_name,
                    "threads": report.environment.threads, "status": point.status,
                    "median_ms": stats.median_ms if stats else None, "p90_ms": stats.p90_ms if stats else None,
                    "iqr_ms": stats.iqr_ms if stats else None,
                    "gmacs": point.flops / 2e9 if point.flops else None,
                })
    return rows


@dataclass
class Change:
    key: str  # "model @ input"
    kind: str  # "moved", "missing" (in the baseline, not in the new report) or "new"
    column: str = ""
    before: int = 0
    after: int = 0

    @property
    def relative(self) -> float:
        return abs(self.after / self.before - 1.0) if self.before else float(self.after != self.before)

    def describe(self) -> str:
        if self.kind != "moved":
            return f"{self.key}: {'missing from the new report' if self.kind == 'missing' else 'new row'}"
        return f"{self.key}: {self.column} {self.before:,} -> {self.after:,} ({100 * (self.after / self.before - 1):+.2f}%)"


def parse_tolerance(text: str) -> float:
    """'0.5%' -> 0.005; '0.005' -> 0.005."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise UsageError(f"tolerance {text!r} is not a number or a percentage like 0.5%") from None
    value = value / 100 if text.strip().endswith("%") else value
    if value < 0:
        raise UsageError("tolerance must not be negative")
    return value


def load_baseline(path: str | Path) -> dict[str, dict]:
    path = Path(path)
    csv_path = path / MODELS_CSV if path.is_dir() else path
    if not csv_path.is_file():
        raise UsageError(f"no baseline at {csv_path}: run `hrvit-bench report --out {path}` first")
    try:
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        missing = {"model", "input", *COMPARED} - set(rows[0] if rows else {})
        if not rows or missing:
            raise ValueError(f"missing columns {sorted(missing)}" if rows else "no rows")
        return {f"{r['model']} @ {r['input']}": {c: int(r[c]) for c in COMPARED} for r in rows}
    except (ValueError, KeyError, csv.Error, UnicodeDecodeError) as exc:
        raise UsageError(f"baseline {csv_path} is malformed: {exc}") from None


def compare(baseline: dict[str, dict], rows: list[ModelRow], tolerance: float) -> tuple[list[Change], list[Change]]:
    """(failures, notes): counts that moved beyond ``tolerance`` or vanished; rows that are new."""
    current = {f"{r.model} @ {r.input}": {c: getattr(r, c) for c in COMPARED} for r in rows}
    failures = [Change(key, "missing") for key in baseline if key not in current]
    for key, before in baseline.items():
        for column in COMPARED if key in current else ():
            change = Change(key, "moved", column, before[column], current[key][column])
            if change.relative > tolerance:
                failures.append(change)
    notes = [Change(key, "new") for key in current if key not in baseline]
    return failures, notes
