"""`hrvit-bench merge`: join records from shards and machines into one set of files.

Counts are exact, so two records that cover the same row must agree to the integer; a disagreement names both
files (``MergeConflict``, exit 1, like the CI gate's changed count). Shards are checked for completeness per run
(command, settings, work list and, for latency, the device and its settings): a missing shard is a usage error
(exit 2) naming which K of N are absent, never a smaller table. Latency is not exact: rows stay apart per device,
and become a cross-device table (one column per device, ratios to a reference device) and a latency-vs-FLOPs plot
with one series per device. Merged report shards give the models.csv and claims.csv one machine would write.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from tabulate import tabulate

from . import zoo
from .counting import MacCount
from .errors import UsageError
from .output import csv_text
from .records import Record

EXACT_FIELDS = ("params", "trainable_params", "unused_params", "macs_by_operator")
CROSS_DEVICE_CSV, CROSS_DEVICE_MD, LATENCY_CSV = "cross_device.csv", "cross_device.md", "latency.csv"
FLOPS_CSV, PARAMS_CSV, MERGE_JSON = "flops.csv", "params.csv", "merge.json"
DEVICE_FLAGS = (("channels_last", "channels-last"), ("compile", "compiled"), ("cuda_graphs", "CUDA graphs"))


class MergeConflict(Exception):
    """Two records disagree on an exact count: a finding, not a usage error (exit 1)."""


@dataclass
class CrossDevice:
    """Latency per (model, input, batch), one column per device, each divided by the reference device's."""

    devices: list[str]
    reference: str
    rows: list[dict]  # model, input, batch_size, gmacs, medians {device: ms|None}

    def ratio(self, row: dict, device: str) -> float | None:
        mine, ref = row["medians"].get(device), row["medians"].get(self.reference)
        return mine / ref if mine is not None and ref else None

    def flat_rows(self) -> list[dict]:
        out = []
        for r in self.rows:
            flat = {k: r[k] for k in ("model", "input", "batch_size", "gmacs")}
            for d in self.devices:
                flat[f"median_ms[{d}]"] = r["medians"].get(d)
            for d in self.devices:
                if d != self.reference:
                    flat[f"ratio[{d} / {self.reference}]"] = self.ratio(r, d)
            out.append(flat)
        return out

    def to_markdown(self) -> str:
        headers = ["model", "input", "batch", "GMACs", *(f"{d} (ms)" for d in self.devices),
                   *(f"{d} / ref" for d in self.devices if d != self.reference)]
        body = [[r["model"], r["input"], r["batch_size"], _num(r["gmacs"], ".2f"),
                 *(_num(r["medians"].get(d), ".3f") for d in self.devices),
                 *(_num(self.ratio(r, d), ".3f", "x") for d in self.devices if d != self.reference)]
                for r in self.rows]
        return (f"# Latency across devices\n\nMedian ms per forward; ratios to the reference device, "
                f"**{self.reference}** (above 1: slower than it). `-`: not timed there, or out of memory.\n\n"
                + tabulate(body, headers=headers, tablefmt="github") + "\n")

    def table(self):
        from rich.table import Table

        table = Table(title=f"latency across devices (median ms; ratio to {self.reference})")
        for col in ("model", "input", "batch", "GMACs"):
            table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
        for d in self.devices:
            table.add_column(f"{d}" + (" (ref)" if d == self.reference else ""), justify="right")
        for r in self.rows:
            cells = [f"{_num(r['medians'].get(d), '.3f')}" + ("" if d == self.reference else
                                                               f" ({_num(self.ratio(r, d), '.2f', 'x')})")
                     for d in self.devices]
            table.add_row(r["model"], r["input"], str(r["batch_size"]), _num(r["gmacs"], ".2f"), *cells)
        return table

    def to_dict(self) -> dict:
        return {"devices": self.devices, "reference": self.reference, "rows": self.flat_rows()}


@dataclass
class MergeResult:
    records: list[Record]
    files: dict[str, str | bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cross_device: CrossDevice | None = None
    report_summary: str | None = None

    def lines(self, out: str, others: list[str] = ()) -> list:
        """What the terminal shows: what was merged and written, the claims' summary, the table across devices."""
        shards = ", ".join(f"{r.command} {r.shard_label}" for r in self.records)
        lines: list = [f"merged {len(self.records)} records ({shards}): wrote {len(self.files)} files to {out}/"]
        if self.report_summary:
            lines.append(f"report: {self.report_summary}")
        if self.cross_device:
            lines.append(self.cross_device.table())
        return lines + [f"note: {n}" for n in self.notes] + [f"note: not a record, not read: {p}" for p in others]

    def to_dict(self) -> dict:
        return {
            "records": [{"source": r.source, "command": r.command, "shard": r.shard_label, "machine": r.machine,
                         "rows": len(r.rows), "created": r.created, "hrvit_bench_version": r.hrvit_bench_version}
                        for r in self.records],
            "files": sorted(set(self.files) | {MERGE_JSON}),
            "notes": self.notes,
            "claims": self.report_summary,
            "cross_device": self.cross_device.to_dict() if self.cross_device else None,
        }


def merge(records: list[Record], reference: str | None = None) -> MergeResult:
    if not records:
        raise UsageError("nothing to merge: give record files or folders")
    result = MergeResult(records)
    check_shards(records)
    count_records = [r for r in records if r.command in ("report", "flops")]
    _check_agreement(count_records, lambda r, row: (row["model"], row["input"], row["engine"]),
                     lambda key: f"{key[0]} @ {key[1]} ({key[2]} engine)")
    _check_agreement([r for r in records if r.command == "params"], lambda r, row: row["model"], str)
    by_command = {c: [r for r in records if r.command == c] for c in ("report", "flops", "params", "latency")}
    if by_command["report"]:
        _merge_report(by_command["report"], result)
    if by_command["flops"]:
        result.files[FLOPS_CSV] = csv_text(_flops_rows(by_command["flops"]))
    if by_command["params"]:
        result.files[PARAMS_CSV] = csv_text(_unique_rows(by_command["params"], lambda row: row["model"],
                                                         lambda row: {k: row[k] for k in (
                                                             "model", "params", "trainable_params", "unused_params")}))
    if by_command["latency"]:
        _merge_latency(by_command["latency"], reference, result)
    elif reference is not None:
        raise UsageError("--reference picks a device for latency records; none was given")
    result.files[MERGE_JSON] = json.dumps(result.to_dict(), indent=2, default=str) + "\n"
    return result


# ------------------------------------------------------------------------------------------------------------------
# Shards and agreement.

def _run_key(record: Record) -> tuple:
    """Records of one run: their shards must together cover the work list."""
    device = device_setup(record) if record.command == "latency" else None
    return (record.command, json.dumps(record.settings, sort_keys=True), device)


def check_shards(records: list[Record]) -> None:
    """Every run given in shards has all N of them, cut from the same work list."""
    runs: dict[tuple, list[Record]] = {}
    for r in records:
        if r.shard:
            runs.setdefault(_run_key(r), []).append(r)
    problems = []
    for key, shards in runs.items():
        what = f"`{key[0]}`" + (f" on {_describe(key[2])}" if key[2] else "")
        prints = {s.shard["work_fingerprint"] for s in shards}
        counts = {s.shard["count"] for s in shards}
        if len(prints) > 1 or len(counts) > 1:
            listing = ", ".join(f"{s.source} ({s.shard_label}, work list {s.shard['work_fingerprint']})"
                                for s in shards)
            raise UsageError(f"shards of {what} were cut differently (another N, model list or hrvit-bench "
                             f"version): {listing}")
        count = counts.pop()
        have = {s.shard["index"] for s in shards}
        missing = [k for k in range(1, count + 1) if k not in have]
        if missing:
            problems.append(f"{what} is missing shard {', '.join(f'{k}/{count}' for k in missing)} (have "
                            + ", ".join(f"{s.shard_label} from {s.source}" for s in sorted(
                                shards, key=lambda s: s.shard["index"])) + ")")
    if problems:
        raise UsageError("; ".join(problems))


def _check_agreement(records: list[Record], key_of, describe) -> None:
    """Exact fields of rows two records share must be equal; the first disagreement names both sources."""
    seen: dict = {}
    for record in records:
        for row in record.rows:
            key = key_of(record, row)
            exact = {f: row.get(f) for f in EXACT_FIELDS if f in row}
            if key not in seen:
                seen[key] = (record, exact)
                continue
            first, theirs = seen[key]
            for f in exact:
                if f in theirs and theirs[f] != exact[f]:
                    raise MergeConflict(f"{describe(key)}: {f} {_short(theirs[f])} in {first.source} but "
                                        f"{_short(exact[f])} in {record.source}")


def _short(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}" for k, v in sorted(
            value.items())) + "}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _unique_rows(records: list[Record], key_of, shape) -> list[dict]:
    rows: dict = {}
    for record in records:
        for row in record.rows:
            rows.setdefault(key_of(row), shape(row))
    return [rows[k] for k in sorted(rows)]


# ------------------------------------------------------------------------------------------------------------------
# Counts: the report, flops, params.

def _merge_report(records: list[Record], result: MergeResult) -> None:
    from .count_cache import CountCache
    from .report import Report, wanted_inputs

    engines = {r.settings.get("engine") for r in records}
    if len(engines) > 1:
        raise UsageError("report records counted with different engines (" + ", ".join(
            f"{r.source}: {r.settings.get('engine')}" for r in records) + "); merge one engine's records")
    engine = engines.pop()
    store = {}
    for record in records:
        for count in map(MacCount.from_dict, record.rows):
            store.setdefault((engine, count.model, tuple(count.input_shape[2:])), count)
    missing = sorted(f"{name} @ {zoo.format_size(size)}" for name, size in wanted_inputs()
                     if (engine, name, size) not in store)
    if missing:
        raise UsageError(f"the report records lack {len(missing)} of the counts a report needs (first: "
                         f"{', '.join(missing[:3])}); give every shard, or records of this hrvit-bench version")
    if any(r.settings.get("latency") for r in records):
        result.notes.append("the latency rows of report records are not merged; time them with "
                            "`hrvit-bench latency --out` and merge those records")
    counts = CountCache(engine, store)
    report = Report.measure_from(counts, engine, {"merged_from": [
        {"source": r.source, "shard": r.shard_label, "machine": r.machine, "created": r.created,
         "environment": r.environment} for r in records]}, sum(r.wall_time_s or 0 for r in records))
    result.files.update(report.files())
    result.report_summary = report.claims.summary()


def _flops_rows(records: list[Record]) -> list[dict]:
    from .report import count_columns

    def shape(row: dict) -> dict:
        return {"model": row["model"], "input": row["input"], "engine": row["engine"],
                **count_columns(MacCount.from_dict(row))}

    return _unique_rows(records, lambda row: (row["model"], row["input"], row["engine"]), shape)


# ------------------------------------------------------------------------------------------------------------------
# Latency across devices.

def device_setup(record: Record) -> tuple:
    """What a latency column stands for: the device and the settings that change its numbers."""
    env, s = record.environment, record.settings
    return (env.get("device_name") or s.get("device"), s.get("device", "cpu").split(":")[0],
            s.get("dtype"), env.get("threads"), *(bool(s.get(k)) for k, _ in DEVICE_FLAGS))


def _describe(setup: tuple) -> str:
    name, kind, dtype, threads, *flags = setup
    parts = [name, dtype, f"{threads} thread{'s' if threads != 1 else ''}" if kind == "cpu" else "",
             *(label for (_, label), on in zip(DEVICE_FLAGS, flags) if on)]
    return ", ".join(str(p) for p in parts if p)


def device_labels(setups: list[tuple]) -> dict[tuple, str]:
    """Short, unique column names: the device name, and of the rest only what differs between the devices (a
    CPU's thread count always)."""
    labels = {}
    for setup in setups:
        name, kind, dtype, threads, *flags = setup
        parts = [name]
        if len({s[2] for s in setups}) > 1:
            parts.append(dtype)
        if kind == "cpu":
            parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
        for i, (_, label) in enumerate(DEVICE_FLAGS):
            if len({s[4 + i] for s in setups}) > 1 and flags[i]:
                parts.append(label)
        labels[setup] = ", ".join(p for p in parts if p)
    return labels


def _merge_latency(records: list[Record], reference: str | None, result: MergeResult) -> None:
    setups = list(dict.fromkeys(device_setup(r) for r in records))
    labels = device_labels(setups)
    long_rows, cells, where = [], {}, {}
    for record in records:
        device = labels[device_setup(record)]
        for row in record.rows:
            for point in row.get("points", []):
                key = (row["model"], zoo.format_size(point["input_size"]), point["batch_size"])
                if (key, device) in where:
                    raise UsageError(f"{key[0]} @ {key[1]}, batch {key[2]} was timed twice on {device}: in "
                                     f"{where[key, device]} and {record.source}; merge one of them")
                where[key, device] = record.source
                stats = point.get("latency_ms") or {}
                median = stats.get("median_ms")
                cells.setdefault(key, {"flops": point.get("flops"), "medians": {}})["medians"][device] = median
                cells[key]["flops"] = cells[key]["flops"] or point.get("flops")
                long_rows.append({"device": device, "model": key[0], "input": key[1], "batch_size": key[2],
                                  "status": point.get("status"), "samples": stats.get("n"), "median_ms": median,
                                  "p90_ms": stats.get("p90_ms"), "iqr_ms": stats.get("iqr_ms"),
                                  "flops": point.get("flops"), "achieved_tflops": point.get("achieved_tflops"),
                                  "source": record.source, "shard": record.shard_label, "machine": record.machine,
                                  "torch": record.environment.get("torch_version")})
    devices = [labels[s] for s in setups]
    ref = _pick_reference(devices, reference)
    rows = [{"model": k[0], "input": k[1], "batch_size": k[2],
             "gmacs": cells[k]["flops"] / 2e9 if cells[k]["flops"] else None, "medians": cells[k]["medians"]}
            for k in sorted(cells, key=lambda k: (k[0], zoo.parse_size(k[1]), k[2]))]
    cross = CrossDevice(devices, ref, rows)
    result.cross_device = cross
    result.files[LATENCY_CSV] = csv_text(long_rows)
    result.files[CROSS_DEVICE_CSV] = csv_text(cross.flat_rows())
    result.files[CROSS_DEVICE_MD] = cross.to_markdown()
    from .plots import latency_vs_flops_by_device

    result.files.update(latency_vs_flops_by_device(cross))


def _pick_reference(devices: list[str], wanted: str | None) -> str:
    """The device ratios divide by: the one whose name contains ``wanted`` (case-insensitive), else the first."""
    if wanted is None:
        return devices[0]
    exact = [d for d in devices if d.lower() == wanted.lower()]
    matches = exact or [d for d in devices if wanted.lower() in d.lower()]
    if len(matches) != 1:
        raise UsageError(f"--reference {wanted!r} matches {'no' if not matches else len(matches)} device"
                         f"{'s' if len(matches) != 1 else ''}; devices: {'; '.join(devices)}")
    return matches[0]


def _num(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{format(value, spec)}{suffix}"
