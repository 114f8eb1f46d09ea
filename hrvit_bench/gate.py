"""The CI gate: a new report against a committed baseline.

Exact things are compared exactly: parameter and MAC counts are integers, and any change to one fails, naming
the row; so does a claim's headline verdict that changed. Rows the baseline lacks fail too, unless they are
expected (``allow_new``). Measured things (latency) are compared only when a tolerance is given, and only where
both sides timed them: they are noise, never part of the exact gate.
"""
from __future__ import annotations

import csv
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

MODELS_CSV, CLAIMS_CSV = "models.csv", "claims.csv"
EXACT = ("params", "unused_params", "macs_all", "macs_gemm")  # integers: compared with no tolerance
LATENCY = "latency"


def parse_tolerance(text: str) -> float:
    """'0.5%' -> 0.005; '0.005' -> 0.005. A fraction in [0, 1]: nan, inf, negatives and over 100% are refused, and
    so is a bare number from 1 to 100, which is almost surely a percentage without its sign."""
    stripped = text.strip()
    try:
        value = float(stripped.rstrip("%"))
    except ValueError:
        raise UsageError(f"tolerance {text!r} is not a number or a percentage like 0.5%") from None
    percent = stripped.endswith("%")
    value = value / 100 if percent else value
    if not percent and 1 <= value <= 100:  # "5" means 5% to a reader, the fraction 5 (500%) to the parser
        raise UsageError(f"tolerance {text!r} is read as a fraction, {100 * value:g}%: for {value:g}% write "
                         f"{value:g}% (or {value / 100:g})")
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise UsageError(f"tolerance {text!r} must be between 0 and 100% (0 to 1 as a fraction)")
    return value


@dataclass
class Baseline:
    path: Path  # what the user gave: a report folder, or a models.csv
    models: dict[str, dict[str, int]]  # "model @ input" -> exact counts
    verdicts: dict[str, str] | None  # claim key -> headline verdict; None for a models.csv baseline
    latency_ratios: dict[str, float] = field(default_factory=dict)  # latency claim key -> ratio, where timed

    @classmethod
    def load(cls, path: str | Path) -> "Baseline":
        path = Path(path)
        models_csv = path / MODELS_CSV if path.is_dir() else path
        if not models_csv.is_file():
            raise UsageError(f"no baseline at {models_csv}: run `hrvit-bench report --out {shlex.quote(str(path))}` "
                             "first")
        models = {_model_key(r): {c: _integer(r, c, models_csv) for c in EXACT}
                  for r in _rows(models_csv, {"model", "input", *EXACT})}
        claims_csv = path / CLAIMS_CSV if path.is_dir() else None
        if claims_csv is not None and not claims_csv.is_file():  # a gate that silently skips verdicts passes too much
            raise UsageError(f"baseline {path} has {MODELS_CSV} but no {CLAIMS_CSV}, so its claim verdicts cannot be "
                             f"compared: to compare counts alone, give --compare {shlex.quote(str(models_csv))}")
        verdicts, ratios = None, {}
        if claims_csv is not None:
            rows = _rows(claims_csv, {"key", "metric", "verdict"})
            verdicts = {r["key"]: r["verdict"] for r in rows if r["metric"] != LATENCY}
            ratios = {r["key"]: float(r["ratio"]) for r in rows if r["metric"] == LATENCY and r.get("ratio")}
        return cls(path, models, verdicts, ratios)

    def regenerate_command(self, new_out: str | Path) -> str:
        """A command that makes the new report the baseline: the run just wrote it to ``new_out``."""
        if self.path.is_dir():
            return f"hrvit-bench report --out {shlex.quote(str(self.path))}"
        return f"cp {shlex.quote(str(Path(new_out) / MODELS_CSV))} {shlex.quote(str(self.path))}"


def _rows(path: Path, required: set[str]) -> list[dict]:
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (csv.Error, UnicodeDecodeError, OSError) as exc:
        raise UsageError(f"baseline {path} is malformed: {exc}") from None
    missing = required - set(rows[0] if rows else {})
    if not rows or missing:
        raise UsageError(f"baseline {path} is malformed: " + (f"missing columns {sorted(missing)}" if rows
                                                               else "no rows"))
    return rows


def _integer(row: dict, column: str, path: Path) -> int:
    try:
        return int(row[column])
    except (TypeError, ValueError):
        raise UsageError(f"baseline {path} is malformed: {column} of {_model_key(row)} is {row[column]!r}, "
                         "not an integer") from None


def _model_key(row) -> str:
    return f"{row['model']} @ {row['input']}"


@dataclass
class Change:
    key: str
    kind: str  # moved | missing | new | verdict | latency
    column: str = ""
    before: object = None
    after: object = None

    def describe(self) -> str:
        if self.kind == "missing":
            return f"{self.key}: in the baseline, missing from the new report"
        if self.kind == "new":
            return f"{self.key}: new, not in the baseline"
        if self.kind == "verdict":
            return f"claim {self.key}: verdict {self.before!r} -> {self.after!r}"
        if self.kind == "latency":
            return (f"claim {self.key}: time ratio {self.before:.3f} -> {self.after:.3f} "
                    f"({100 * (self.after / self.before - 1):+.1f}%)")
        delta = self.after - self.before
        relative = f", {100 * delta / self.before:+.4f}%" if self.before else ""
        return f"{self.key}: {self.column} {self.before:,} -> {self.after:,} ({delta:+,}{relative})"


@dataclass
class GateResult:
    failures: list[Change]
    notes: list[str]


def compare(baseline: Baseline, models: dict[str, dict[str, int]], verdicts: dict[str, str],
            latency_ratios: dict[str, float], latency_tolerance: float | None = None,
            allow_new: bool = False) -> GateResult:
    """Failures (exact counts that changed by any amount, vanished or unexpected rows, changed verdicts, time
    ratios beyond the tolerance) and notes."""
    failures, notes = _compare_keys(baseline.models, models, allow_new, notes := [])
    for key in baseline.models.keys() & models.keys():
        failures += [Change(key, "moved", c, baseline.models[key][c], models[key][c])
                     for c in EXACT if baseline.models[key][c] != models[key][c]]
    if baseline.verdicts is None:
        notes.append(f"a counts-only baseline ({baseline.path.name}): claim verdicts not compared")
    else:
        more, _ = _compare_keys(baseline.verdicts, verdicts, allow_new, notes, prefix="claim ")
        failures += more
        failures += [Change(k, "verdict", before=baseline.verdicts[k], after=verdicts[k])
                     for k in baseline.verdicts.keys() & verdicts.keys() if baseline.verdicts[k] != verdicts[k]]
    if latency_tolerance is not None:
        shared = baseline.latency_ratios.keys() & latency_ratios.keys()
        if not shared:
            notes.append("no latency timed on both sides: nothing measured to compare")
        failures += [Change(k, "latency", before=baseline.latency_ratios[k], after=latency_ratios[k])
                     for k in sorted(shared)
                     if abs(latency_ratios[k] / baseline.latency_ratios[k] - 1) > latency_tolerance]
    return GateResult(failures, notes)


def _compare_keys(before: dict, after: dict, allow_new: bool, notes: list[str], prefix: str = ""):
    failures = [Change(prefix + k, "missing") for k in before if k not in after]
    new = [Change(prefix + k, "new") for k in after if k not in before]
    if allow_new:
        notes += [c.describe() + " (allowed: --allow-new)" for c in new]
    else:
        failures += new
    return failures, notes
