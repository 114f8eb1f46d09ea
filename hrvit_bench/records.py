"""The versioned result record: what a measuring command writes with `--out`, and what `hrvit-bench merge` reads.

One JSON object per run (or per shard of a run): a schema name and version, the command and its settings, the
shard it covers, the machine and environment it ran on, and the rows. Readers refuse any other version with one
line saying which side is out of date, instead of guessing at fields that moved. The schema is documented in the
README ("Result records").
"""
from __future__ import annotations

import datetime
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .errors import UsageError, first_line
from .output import check_writable, write_files

SCHEMA = "hrvit-bench-record"
VERSION = 2  # 2: count rows are MacCount.to_dict() (flops and report alike), their shape under "input" ("1x3x224x224")
COMMANDS = ("params", "flops", "latency", "report")
SUFFIX = ".record.json"  # a folder given to --out gets <command>.record.json (<command>.shard-K-of-N.record.json)


@dataclass
class Record:
    command: str
    settings: dict  # the command's options that shape the rows (never the model list or the shard)
    rows: list[dict]
    environment: dict  # environment.Environment.to_dict() of the machine that measured
    shard: dict | None = None  # shards.Shard.to_dict(): index, count, items, work_items, work_fingerprint
    wall_time_s: float | None = None
    machine: str = field(default_factory=platform.node)
    hrvit_bench_version: str = __version__
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc)
                         .isoformat(timespec="seconds"))
    source: str = ""  # where it was read from (not written)

    @property
    def shard_label(self) -> str:
        return f"{self.shard['index']}/{self.shard['count']}" if self.shard else "whole"

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "schema_version": VERSION, "command": self.command, "settings": self.settings,
                "shard": self.shard, "machine": self.machine, "hrvit_bench_version": self.hrvit_bench_version,
                "created": self.created, "wall_time_s": self.wall_time_s, "environment": self.environment,
                "rows": self.rows}

    def write(self, target: str | Path) -> Path:
        """Atomically, to ``target`` (a .json file) or into ``target`` (a folder) as <command>.record.json."""
        path = target_path(target, self.command, self.shard)
        return write_files(path.parent, {path.name: json.dumps(self.to_dict(), indent=1, default=str) + "\n"})[0]

    @classmethod
    def from_dict(cls, data: dict, source: str) -> "Record":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise UsageError(f"{source} is not an hrvit-bench record (no \"schema\": \"{SCHEMA}\")")
        version = data.get("schema_version")
        if version != VERSION:
            if isinstance(version, int) and version < VERSION:
                raise UsageError(f"{source}: record schema version {version} is older than this hrvit-bench "
                                 f"{__version__} reads ({VERSION}); re-run the command that wrote it")
            if isinstance(version, int):
                raise UsageError(f"{source}: record schema version {version} is newer than this hrvit-bench "
                                 f"{__version__} reads ({VERSION}); upgrade hrvit-bench to read it")
            raise UsageError(f"{source}: record has no integer schema_version (this hrvit-bench reads {VERSION})")
        missing = [k for k in ("command", "settings", "rows", "environment") if k not in data]
        if missing or data["command"] not in COMMANDS or not isinstance(data["rows"], list):
            what = f"missing {', '.join(missing)}" if missing else f"unknown command {data['command']!r}" \
                if data["command"] not in COMMANDS else "rows is not a list"
            raise UsageError(f"{source}: malformed record ({what})")
        shard = data.get("shard")
        if shard is not None and not {"index", "count", "items", "work_fingerprint"} <= set(shard):
            raise UsageError(f"{source}: malformed record (shard lacks index, count, items or work_fingerprint)")
        check_rows(data["command"], data["rows"], source)
        return cls(command=data["command"], settings=data["settings"], rows=data["rows"],
                   environment=data["environment"], shard=shard, wall_time_s=data.get("wall_time_s"),
                   machine=data.get("machine", ""), hrvit_bench_version=data.get("hrvit_bench_version", ""),
                   created=data.get("created", ""), source=source)


# What a reader takes from each row, by command: a field and the kind of value it must hold. A row of junk would
# otherwise merge into empty files, and a wrong value fail deep inside the merge with a bare ValueError.
_INT, _NUMBER, _TEXT, _LIST, _OBJECT = "an integer", "a number", "a string", "a list", "an object"
_COUNTS = {"model": _TEXT, "input": _TEXT, "engine": _TEXT, "params": _INT, "unused_params": _INT,
           "macs_by_operator": _OBJECT}
ROW_FIELDS = {
    "params": {"model": _TEXT, "params": _INT, "trainable_params": _INT, "unused_params": _INT},
    "flops": _COUNTS,
    "report": {**_COUNTS, "trainable_params": _INT, "uncounted_ops": _OBJECT},
    "latency": {"model": _TEXT, "points": _LIST},
}
POINT_FIELDS = {"input_size": _LIST, "batch_size": _INT, "status": _TEXT}
OPTIONAL_POINT_FIELDS = {"flops": _INT, "achieved_tflops": _NUMBER}
OPTIONAL_STAT_FIELDS = {"n": _INT, "median_ms": _NUMBER, "p90_ms": _NUMBER, "iqr_ms": _NUMBER}


def _is(value, kind: str) -> bool:
    if isinstance(value, bool):
        return False
    return {_INT: isinstance(value, int), _NUMBER: isinstance(value, (int, float)), _TEXT: isinstance(value, str),
            _LIST: isinstance(value, list), _OBJECT: isinstance(value, dict)}[kind]


def _problem(values, fields: dict, optional: dict | None = None, what: str = "the row", prefix: str = "") -> str | None:
    """What is wrong with ``values`` (a row, a point, a point's statistics), or None."""
    if not isinstance(values, dict):
        return f"{what} is {type(values).__name__}, not an object"
    for field, kind in fields.items():
        if field not in values:
            return f"{prefix}{field} is missing"
        if not _is(values[field], kind):
            return f"{prefix}{field} is {values[field]!r}, not {kind}"
    for field, kind in (optional or {}).items():
        if values.get(field) is not None and not _is(values[field], kind):
            return f"{prefix}{field} is {values[field]!r}, not {kind}"
    return None


def _row_problem(command: str, row) -> str | None:
    problem = _problem(row, ROW_FIELDS[command])
    if problem or command != "latency":
        return problem
    for k, point in enumerate(row["points"], 1):
        problem = _problem(point, POINT_FIELDS, OPTIONAL_POINT_FIELDS, "the point")
        if problem is None and point.get("latency_ms") is not None:
            problem = _problem(point["latency_ms"], {}, OPTIONAL_STAT_FIELDS, "latency_ms", "latency_ms.")
        if problem:
            return f"point {k}: {problem}"
    return None


def check_rows(command: str, rows: list, source: str) -> None:
    """Every row holds what a reader takes from it, or a usage error names the file, the row and the field."""
    for i, row in enumerate(rows, 1):
        problem = _row_problem(command, row)
        if problem:
            model = row.get("model") if isinstance(row, dict) else None
            raise UsageError(f"{source}: malformed record: row {i}" + (f" ({model})" if isinstance(model, str)
                                                                       else "") + f": {problem}")


def from_results(command: str, settings: dict, results: list, shard: dict | None = None, device: str = "cpu",
                 dtype: str | None = None) -> Record:
    """The record of a command's result objects (cost.ParamReport, cost.FlopReport, latency.LatencyReport)."""
    from .environment import Environment

    if command == "latency":  # one environment per run: the record's, not each row's
        environment = results[0].environment.to_dict() if results else Environment.capture(device, dtype).to_dict()
        rows = [{k: v for k, v in r.to_dict().items() if k != "environment"} for r in results]
    else:
        environment = Environment.capture("cpu").to_dict()
        rows = [r.to_dict() for r in results]
    return Record(command, settings, rows, environment, shard)


def target_path(target: str | Path, command: str, shard: dict | None = None) -> Path:
    """A .json file as given; in a folder, one name per command and shard, so N shards can share a folder."""
    target = Path(target)
    if target.suffix == ".json":
        return target
    return target / (f"{command}.shard-{shard['index']}-of-{shard['count']}{SUFFIX}" if shard else f"{command}{SUFFIX}")


def check_target(target: str | Path, command: str) -> Path:
    """Fail before measuring, not after, when the record cannot be written: FILE.json or a folder, nothing else."""
    check_writable(target, "--out", file_suffix=".json")
    return target_path(target, command)


def load(path: str | Path) -> Record:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or first_line(exc)}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    return Record.from_dict(data, str(path))


def collect(paths: list[str]) -> tuple[list[Record], list[str]]:
    """Records from files and folders (searched recursively, as downloaded CI artifacts nest them): every
    *.record.json under a folder, each file given by name. Returns the records and the folders' other JSON files,
    which are listed (never silently dropped) but not read."""
    files, others = [], []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            visible = [p for p in sorted(path.rglob("*.json"))  # not staging folders or hidden files
                       if not any(part.startswith(".") for part in p.relative_to(path).parts)]
            found = [p for p in visible if p.name.endswith(SUFFIX)]
            if not found:
                raise UsageError(f"no hrvit-bench record (*{SUFFIX}) under {path}")
            files += found
            others += [str(p) for p in visible if not p.name.endswith(SUFFIX)]
        elif path.exists():
            files.append(path)
        else:
            raise UsageError(f"no such file or folder: {path}")
    unique = {p.resolve(): p for p in reversed(files)}  # a file named twice (a folder and its file) is read once
    return [load(p) for p in files if unique.get(p.resolve()) is p], others
