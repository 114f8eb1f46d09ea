"""Every GPU measurement hrvit-bench needs, in one call on one H100 or H200: resumable, within a time budget.

Sections, in order (benchmarks/GPU_SUITE.md says how to run it and read the results):

  agreement  the harness against torch.utils.benchmark on the same callable (latency_agreement.measure_pair)
  eager      HRViT-b1/b2/b3, MiT-B1/B2, CSWin-T/S segmenters at 512x512 and 1024x1024, fp32 and bf16, batch 1
  repeat     one point (hrvit_b1 at 512, fp32) measured afresh 5 times: the run-to-run CV of the median
  batch      hrvit_b1 at 512, fp32, batch 1, 2, 4, ... until the first out-of-memory point or the cap
  claims     `hrvit-bench claims --latency cuda --json` in a subprocess (the A/B comparisons behind the claims)
  profile    `hrvit-bench profile --device cuda --json` in a subprocess: by module (HRViT-b1, MiT-B1, with the
             roofline drawn into the output folder) and by operator (HRViT-b1)
  compile    mit_b1 and hrvit_b1 at 512, fp32: CUDA graphs (manual capture), and torch.compile with CUDA graphs
             (mode="reduce-overhead"); plain torch.compile on CPU (the smoke)

The output folder holds three files (the device tool returns at most 8, none deeper than 2 folders):
results.json, every point of every device, rewritten whole (write-then-rename) after each point; SUMMARY.md, its
tables; suite_log.txt, what the calls printed. A point already in results.json is skipped, so a second call
finishes what the first could not (copy the first call's results.json into the folder before it). Before each
section the suite prints its time estimate; a point that the rest of ``--budget-s`` cannot fit is left for the
next call. Points are kept per device: a rerun on another GPU adds a device, never mixes two.

    python benchmarks/gpu_suite.py --out DIR                # on the GPU machine
    python benchmarks/gpu_suite.py --smoke --out /tmp/smoke  # every section on CPU, tiny inputs (~2 min)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def _import_fallback() -> None:
    """Without ``pip install -e .`` (offline, or no ``wheel`` package): hrvit_bench from this checkout and
    models/ under the name it is installed as, hrvit_bench_models."""
    try:
        import hrvit_bench  # noqa: F401
        import hrvit_bench_models  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT))
        spec = importlib.util.spec_from_file_location(
            "hrvit_bench_models", ROOT / "models" / "__init__.py", submodule_search_locations=[str(ROOT / "models")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["hrvit_bench_models"] = module
        spec.loader.exec_module(module)


_import_fallback()
sys.path.insert(0, str(Path(__file__).resolve().parent))  # latency_agreement, also when imported by a test

import pandas as pd  # noqa: E402 - after the import fallback
import torch  # noqa: E402

import latency_agreement  # noqa: E402
from hrvit_bench import latency, zoo  # noqa: E402
from hrvit_bench.environment import Environment  # noqa: E402
from hrvit_bench.errors import UsageError, first_line  # noqa: E402
from hrvit_bench.output import write_files  # noqa: E402

SEGMENTERS = ("hrvit_b1_seg_ade20k", "hrvit_b2_seg_ade20k", "hrvit_b3_seg_ade20k", "mit_b1_seg_ade20k",
              "mit_b2_seg_ade20k", "cswin_t_seg_ade20k", "cswin_s_seg_ade20k")
SECTIONS = ("agreement", "eager", "repeat", "batch", "claims", "profile", "compile")
MODES = {"graphs": {"cuda_graphs": True}, "compile": {"compile": True},
         "compile-graphs": {"compile": True, "cuda_graphs": True}}
OUT_OF_MEMORY, ERROR = "oom", "error"
RESULTS, SUMMARY, LOG = "results.json", "SUMMARY.md", "suite_log.txt"


@dataclass(frozen=True)
class Config:
    """What each section measures: the GPU suite, or its CPU smoke version."""

    device: str
    slug_suffix: str
    threads: int | None  # pinned CPU threads; None: torch's count
    sizes: tuple[str, ...]  # eager
    dtypes: tuple[str, ...]  # eager
    warmup: int
    iters: int | None
    min_time: float | None
    agreement: tuple[tuple[str, str, str], ...]  # (model, size, dtype)
    agreement_min_time: float
    agreement_rounds: int
    compile_models: tuple[str, ...]
    compile_modes: tuple[str, ...]
    compile_warmup: int
    small_size: str  # compile, repeat and batch sections
    small_model: str  # repeat and batch sections
    batch_cap: int  # a power of two
    repeats: int
    claims_args: tuple[str, ...]
    cli_timeout_s: float  # each CLI subprocess (claims, profile), at most
    profile_args: tuple[tuple[str, ...], ...]  # one `hrvit-bench profile` call per point; --plot OUT is added
    # Seconds per point, before any point of the kind has run: GPU guesses (compilation scaled from cold CPU
    # compiles, where hrvit_b1 used 3.3x mit_b1's CPU time); once a kind has run, its measured mean replaces them.
    priors: dict[str, float] = field(default_factory=dict)
    models: tuple[str, ...] = SEGMENTERS


GPU = Config(
    device="cuda", slug_suffix="", threads=None,
    sizes=("512x512", "1024x1024"), dtypes=("fp32", "bf16"), warmup=5, iters=None, min_time=0.5,
    agreement=(("hrvit_b1_seg_ade20k", "512x512", "fp32"), ("mit_b1_seg_ade20k", "512x512", "bf16")),
    agreement_min_time=2.0, agreement_rounds=4,
    # plain "compile" (no graphs) is left out by default: one more inductor build per model would not fit 8 min
    compile_models=("mit_b1_seg_ade20k", "hrvit_b1_seg_ade20k"), compile_modes=("graphs", "compile-graphs"),
    compile_warmup=5, small_size="512x512", small_model="hrvit_b1_seg_ade20k", batch_cap=256, repeats=5,
    claims_args=("claims", "--latency", "cuda", "--json"), cli_timeout_s=240,
    profile_args=(("profile", "-m", "hrvit_b1_seg_ade20k", "-m", "mit_b1_seg_ade20k", "--device", "cuda",
                   "--depth", "2", "--json"),
                  ("profile", "-m", "hrvit_b1_seg_ade20k", "--device", "cuda", "--by", "operator", "--json")),
    priors={"agreement": 8, "eager": 3, "repeat": 3, "batch": 5, "claims": 150, "profile": 40, "graphs": 5,
            "compile mit_b1_seg_ade20k": 60, "compile hrvit_b1_seg_ade20k": 180,
            "compile-graphs mit_b1_seg_ade20k": 60, "compile-graphs hrvit_b1_seg_ade20k": 180},
)
# On CPU: no CUDA graphs, and only mit_b1 compiles (hrvit_b1's inductor build took 12 min on this 2-core machine);
# one thread, since compiled CPU kernels spin their OpenMP threads and crawl on a busy shared machine.
SMOKE = Config(
    device="cpu", slug_suffix="-smoke", threads=1,
    sizes=("64x64",), dtypes=("fp32",), warmup=1, iters=2, min_time=None,
    agreement=(("hrvit_b1_seg_ade20k", "64x64", "fp32"),), agreement_min_time=0.2, agreement_rounds=2,
    compile_models=("mit_b1_seg_ade20k",), compile_modes=("compile",),
    compile_warmup=1, small_size="64x64", small_model="hrvit_b1_seg_ade20k", batch_cap=4, repeats=5,
    claims_args=("claims", "--latency", "cpu", "--claim", "ade-b1-vs-mitb1", "--rounds", "2", "--threads", "1",
                 "--json"),
    cli_timeout_s=180,
    profile_args=(("profile", "-m", "mit_b1_seg_ade20k", "--input", "64x64", "--depth", "1", "--iters", "2",
                   "--threads", "1", "--json"),),
    priors={"agreement": 3, "eager": 2, "repeat": 2, "batch": 2, "claims": 60, "profile": 30,
            "compile mit_b1_seg_ade20k": 60},
)


@dataclass
class Point:
    section: str
    id: str
    kind: str  # points of one kind cost alike: the estimate of one comes from the others
    measure: Callable[[], dict]  # the record to store: {"status": ..., ...}


class Suite:
    def __init__(self, config: Config, out: Path, budget_s: float, retry_errors: bool = False,
                 started: float | None = None):
        self.config, self.out, self.retry_errors = config, out, retry_errors
        self.started = time.monotonic() if started is None else started
        self.deadline = self.started + budget_s
        self.environment = Environment.capture(config.device)
        self.slug = _slug(self.environment.device_name) + config.slug_suffix
        self.results = _read_results(out)
        device = self.results["devices"].setdefault(self.slug, {"points": {}, "runs": []})
        device["environment"] = self.environment.to_dict()  # the latest call's
        self.points: dict[str, dict] = device["points"]
        self.runs: list[dict] = device["runs"]
        log = out / LOG
        self.log_lines = log.read_text().splitlines() if log.exists() else []
        self.observed: dict[str, list[float]] = {}
        self.sections_done: list[dict] = []

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.log_lines.append(line)

    # -- bookkeeping ----------------------------------------------------------------------------------------

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def estimate(self, kind: str) -> float:
        seen = self.observed.get(kind)
        return statistics.mean(seen) if seen else self.config.priors.get(kind, 10.0)

    def done(self, point: Point) -> dict | None:
        """The stored record of a point measured before (an error counts, unless --retry-errors)."""
        record = self.points.get(point.section, {}).get(point.id)
        return None if record is None or (self.retry_errors and record["status"] == ERROR) else record

    def save(self) -> None:
        """All three files, each replaced whole: an interrupted call leaves the previous versions intact."""
        write_files(self.out, {RESULTS: json.dumps(self.results, indent=1, default=str),
                               SUMMARY: summary_markdown(self.results), LOG: "\n".join(self.log_lines) + "\n"})

    # -- running --------------------------------------------------------------------------------------------

    def run(self, sections: list[str]) -> None:
        """The plan with an estimate per section first, then every section in order."""
        self.say(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} {self.environment.device_name} "
                 f"({self.slug}) -> {self.out}; budget {self.left_s():.0f} s")
        plan = []
        for section in sections:
            try:
                plan.append((section, getattr(self, f"points_{section}")()))
            except UsageError as exc:  # e.g. no compiler for torch.compile here
                self.say(f"[{section}] skipped: {exc}")
                self.sections_done.append({"section": section, "skipped": str(exc)})
        for section, points in plan:
            todo = [p for p in points if self.done(p) is None]
            self.say(f"[plan] {section}: {len(points)} points, {len(points) - len(todo)} done before; estimate "
                     f"{sum(self.estimate(p.kind) for p in todo):.0f} s{' at most' if section == 'batch' else ''}")
        for section, points in plan:
            self.run_points(section, points, _stop_at_failure if section == "batch" else None)
        self.runs.append({"finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "wall_s": round(time.monotonic() - self.started, 1), "sections": self.sections_done})
        self.save()

    def run_points(self, section: str, points: list[Point], stop: Callable[[dict], bool] | None = None) -> None:
        """Measure each point not done yet while the budget lasts; ``stop(record)`` ends the section early."""
        self.say(f"[{section}] starting, {self.left_s():.0f} s left")
        entry = {"section": section, "measured": 0, "skipped_done": 0, "left_for_rerun": [], "errors": 0}
        start = time.monotonic()
        for point in points:
            record = self.done(point)
            if record is not None:
                entry["skipped_done"] += 1
            elif self.estimate(point.kind) > self.left_s():
                entry["left_for_rerun"].append(point.id)
                continue
            else:
                record = self.measure(point)
                entry["measured"] += 1
                entry["errors"] += record["status"] == ERROR
            if stop and stop(record):
                break
        entry["wall_s"] = round(time.monotonic() - start, 1)
        if entry["left_for_rerun"]:
            self.say(f"[{section}] {len(entry['left_for_rerun'])} point(s) left for a rerun: the budget cannot fit "
                     "them")
        self.sections_done.append(entry)

    def measure(self, point: Point) -> dict:
        start = time.monotonic()
        try:
            record = point.measure()
        except Exception as exc:  # one point's failure (a missing compiler, a bug) must not end the suite
            record = {"status": ERROR, "error": first_line(exc), "traceback": traceback.format_exc()[-3000:]}
        wall = time.monotonic() - start
        self.observed.setdefault(point.kind, []).append(wall)
        record.update(id=point.id, wall_s=round(wall, 2),
                      finished_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self.points.setdefault(point.section, {})[point.id] = record
        self.say(f"[{point.section}] {point.id}: {_brief(record)} ({wall:.1f} s, {self.left_s():.0f} s left)")
        self.save()
        if self.config.device == "cuda":
            torch.cuda.empty_cache()
        return record

    def latency_point(self, section: str, model: str, size: str, dtype: str, kind: str, mode: str = "eager",
                      batch: int = 1, tag: str = "", **extra) -> Point:
        """One ``latency.run`` call: the model built afresh, one (size, batch), the CLI's own path."""
        warmup = self.config.compile_warmup if mode in MODES else self.config.warmup
        settings = latency.LatencySettings(device=self.config.device, dtype=dtype, warmup=warmup,
                                           iters=self.config.iters, min_time=self.config.min_time,
                                           threads=self.config.threads, **MODES.get(mode, {}))

        def measure() -> dict:
            [report] = latency.run([model], [zoo.parse_size(size)], [batch], settings)
            return {"status": report.points[0].status, "mode": mode, "report": report.to_dict(), **extra}

        return Point(section, f"{model}-{size}-b{batch}-{dtype}-{mode}{tag}", kind, measure)

    # -- sections -------------------------------------------------------------------------------------------

    def points_agreement(self) -> list[Point]:
        def point(model: str, size: str, dtype: str) -> Point:
            def measure() -> dict:
                settings = latency.LatencySettings(device=self.config.device, dtype=dtype, warmup=self.config.warmup,
                                                   min_time=self.config.agreement_min_time, threads=self.config.threads)
                latency.preflight(settings)
                with latency.pinned(settings):
                    net = latency.prepare(zoo.build(model, device=self.config.device), settings)
                    shape = zoo.input_shape(zoo.info(model), zoo.parse_size(size), 1)
                    row = latency_agreement.measure_pair(net, shape, settings, self.config.agreement_rounds)
                return {**row, "rounds": self.config.agreement_rounds, "min_time_s": self.config.agreement_min_time,
                        "model": model, "input": size, "dtype": dtype}

            return Point("agreement", f"{model}-{size}-{dtype}", "agreement", measure)

        return [point(*spec) for spec in self.config.agreement]

    def points_eager(self) -> list[Point]:
        c = self.config
        return [self.latency_point("eager", m, s, d, "eager") for m in c.models for s in c.sizes for d in c.dtypes]

    def points_repeat(self) -> list[Point]:
        c = self.config
        return [self.latency_point("repeat", c.small_model, c.small_size, "fp32", "repeat", tag=f"-{i}")
                for i in range(1, c.repeats + 1)]

    def points_batch(self) -> list[Point]:
        """Batch 1, 2, 4, ... up to the cap; the run stops at the first out-of-memory point."""
        c = self.config
        return [self.latency_point("batch", c.small_model, c.small_size, "fp32", "batch", batch=2**i,
                                   batch_cap=c.batch_cap) for i in range(c.batch_cap.bit_length())]

    def cli_point(self, section: str, point_id: str, args: tuple[str, ...], key: str) -> Point:
        """One CLI call in a subprocess, its ``--json`` output stored under ``key``; a failure is recorded."""
        command = [sys.executable, str(Path(__file__).resolve()), "hrvit-bench", *args]

        def measure() -> dict:
            timeout = max(10.0, min(self.config.cli_timeout_s, self.left_s() - 5))
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
            except subprocess.TimeoutExpired as exc:  # its captured output is bytes, whatever text= says
                return {"status": ERROR, "error": f"timed out after {timeout:.0f} s", "command": command,
                        "stderr_tail": (exc.stderr or b"")[-3000:].decode(errors="replace")}
            record = {"status": "ok" if done.returncode == 0 else ERROR, "returncode": done.returncode,
                      "command": command, "stderr_tail": done.stderr[-3000:]}
            try:
                record[key] = json.loads(done.stdout)
            except json.JSONDecodeError:
                record["stdout_tail"] = done.stdout[-3000:]
                if done.returncode == 0:
                    record.update(status=ERROR, error="stdout is not JSON")
            if done.returncode != 0:
                record["error"] = first_line(done.stderr.strip() or f"exit status {done.returncode}")
            return record

        return Point(section, point_id, section, measure)

    def points_claims(self) -> list[Point]:
        return [self.cli_point("claims", "claims", self.config.claims_args, "claims")]

    def points_profile(self) -> list[Point]:
        """Where the time goes on this device; the first call also draws the roofline into the output folder."""
        return [self.cli_point("profile", f"profile-{i}", (*args, "--plot", str(self.out)) if i == 0 else args,
                               "profile") for i, args in enumerate(self.config.profile_args)]

    def points_compile(self) -> list[Point]:
        c = self.config
        if c.device == "cpu":  # raises UsageError without a C++ compiler (on CUDA each point checks Triton)
            latency.preflight(latency.LatencySettings(compile=True, warmup=1))
        points = []
        for model in c.compile_models:
            for mode in c.compile_modes:
                kind = mode if mode == "graphs" else f"{mode} {model}"
                points.append(self.latency_point("compile", model, c.small_size, "fp32", kind, mode))
        return points



def _stop_at_failure(record: dict) -> bool:
    """Out of memory, or any other failure (e.g. an operator's INT_MAX limit): a larger batch fails too."""
    return record["status"] in (OUT_OF_MEMORY, ERROR)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def _brief(record: dict) -> str:
    if record["status"] == ERROR:
        return f"error: {record.get('error')}"
    if "report" in record:
        point = record["report"]["points"][0]
        if point["latency_ms"]:
            return f"{point['status']}, median {point['latency_ms']['median_ms']:.3f} ms, n={point['latency_ms']['n']}"
    if "ratio" in record and record["ratio"]:
        return f"ours/Timer {record['ratio']:.4f}"
    return record["status"]


# ---------------------------------------------------------------------------------------------------------------
# results.json and SUMMARY.md.


def _read_results(out: Path) -> dict:
    """The results of earlier calls, or a fresh store; a results.json that does not parse stops the suite rather
    than being overwritten."""
    path = out / RESULTS
    if not path.exists():
        return {"format": "hrvit-bench gpu suite 1", "devices": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not JSON ({exc}); move it away to start afresh") from None


def _latency_row(record: dict) -> dict:
    """One latency point as a flat row of what a reader compares."""
    report = record.get("report")
    if not report:
        return {"status": record["status"], "error": record.get("error")}
    point, settings = report["points"][0], report["settings"]
    stats, memory, clocks = point["latency_ms"] or {}, point["memory_bytes"], point["clocks_mhz"]
    percentiles = {w.split(" ")[0] for w in point["warnings"] if w.startswith("p")}
    mib = {k: round(v / 2**20) for k, v in memory.items()}
    return {
        "model": report["model"], "input": "x".join(map(str, point["input_size"])), "batch": point["batch_size"],
        "dtype": settings["dtype"], "status": point["status"], "n": stats.get("n"),
        "median_ms": _round(stats.get("median_ms")),
        "p90_ms": None if "p90" in percentiles else _round(stats.get("p90_ms")),
        "cv": _round(stats.get("cv")), "img_per_s": _round(point["throughput_images_per_s"]),
        "tflops": _round(point["achieved_tflops"]),
        "% of peak": ", ".join(f"{k} {100 * v:.1f}%" for k, v in point["peak_fraction"].items()) or None,
        "warm-up MiB": mib.get("cuda_warmup_max_allocated"), "timed MiB": mib.get("cuda_max_allocated"),
        "SM MHz min/med": (f"{clocks['sm_min_mhz']:.0f}/{clocks['sm_median_mhz']:.0f}"
                           if clocks.get("sm_median_mhz") else None),
        "graphs": point["cuda_graphs_engaged"] if settings["cuda_graphs"] else None,
        "warnings": "; ".join(w for w in point["warnings"] + report["warnings"]
                              if not w.startswith(("p90", "p99"))) or None,
        "wall s": record.get("wall_s"),
    }


def _round(value, digits: int = 3):
    return None if value is None else round(value, digits)


def _table(rows: list[dict]) -> str:
    """A Markdown table without the columns no row fills (GPU columns on a CPU run, graphs on eager points)."""
    return pd.DataFrame(rows).dropna(axis=1, how="all").to_markdown(index=False) if rows else "(no points yet)"


def _environment_rows(env: dict) -> list[dict]:
    clocks = env.get("gpu_idle_clocks_mhz") or {}
    items = {
        "device": env["device_name"], "SMs": env.get("gpu_sm_count"), "MIG mode": env.get("gpu_mig_mode"),
        "driver": env.get("driver_version"), "CUDA (torch built with)": env.get("cuda_version"),
        "cuDNN": env.get("cudnn_version"), "torch": env["torch_version"], "Python": env["python_version"],
        "idle clocks MHz (SM/mem, max SM/mem)": " / ".join(
            f"{clocks[k]:.0f}" for k in ("clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem") if k in clocks)
        or None,
        "power limit W": env.get("gpu_power_limit_w"),
        "TF32 matmul (cuBLAS) / cuDNN": f"{env['cuda_matmul_allow_tf32']} / {env['cudnn_allow_tf32']}",
        "float32 matmul precision": env["float32_matmul_precision"], "CPU": env["cpu_model"],
        "CPU threads (torch)": env["threads"],
    }
    return [{"what": k, "value": v} for k, v in items.items()]


def _compile_rows(records: list[dict], eager: list[dict]) -> list[dict]:
    """Compiled and graph points beside the eager point of the same model, input and dtype."""
    key = ("model", "input", "dtype", "batch")
    eager_ms = {tuple(row[k] for k in key): row["median_ms"] for row in map(_latency_row, eager) if "model" in row}
    rows = []
    for record in records:
        row = {"mode": record.get("mode"), **_latency_row(record)}
        base = eager_ms.get(tuple(row.get(k) for k in key))
        if base and row.get("median_ms"):
            row["eager median_ms"], row["speedup"] = base, _round(base / row["median_ms"], 2)
        rows.append(row)
    return rows


def _repeat_line(records: list[dict]) -> str:
    medians = [r["report"]["points"][0]["latency_ms"]["median_ms"] for r in records
               if r.get("report") and r["report"]["points"][0]["latency_ms"]]
    if len(medians) < 2:
        return f"{len(medians)} of the repeats measured: no CV yet."
    mean, std = statistics.mean(medians), statistics.stdev(medians)
    return (f"Medians of {len(medians)} fresh measurements: {', '.join(f'{m:.3f}' for m in medians)} ms; "
            f"mean {mean:.3f} ms, sample std {std:.3f} ms, run-to-run CV {100 * std / mean:.2f}%.")


def _batch_line(records: list[dict]) -> str:
    statuses = {r["report"]["points"][0]["batch_size"]: r["status"] for r in records if r.get("report")}
    oom = sorted(b for b, s in statuses.items() if s == OUT_OF_MEMORY)
    cap = max((r.get("batch_cap", 0) for r in records), default=None)
    if oom:
        return f"First out-of-memory at batch {oom[0]}."
    if cap in statuses:
        return f"No out-of-memory up to the cap, batch {cap}: the card holds more; the sweep stops there by design."
    return "No out-of-memory yet; the sweep has not reached its cap (rerun to continue)."


def _run_row(run: dict) -> dict:
    """One call of the suite: what each section did."""
    done = []
    for s in run["sections"]:
        text = s.get("skipped") or f"{s['measured']} measured, {s['skipped_done']} done before"
        if s.get("left_for_rerun"):
            text += f", {len(s['left_for_rerun'])} left for a rerun"
        done.append(f"{s['section']}: {text}")
    return {"finished (UTC)": run["finished_utc"], "wall s": run["wall_s"], "sections": "; ".join(done)}


def _claims_text(records: list[dict]) -> str:
    if not records:
        return "(not run yet)"
    record = records[0]
    if record["status"] == ERROR:
        return (f"Failed: {record.get('error')} (exit status {record.get('returncode')}); command "
                f"`{' '.join(record['command'][2:])}`. Its stderr tail is in results.json.")
    claims = record["claims"] if isinstance(record.get("claims"), dict) else {}
    text = f"Ran `{' '.join(record['command'][2:])}`: {claims.get('summary') or 'its output is in results.json'}."
    rows = [{"claim": c.get("id"), "input": c.get("input"), "dtype": c.get("dtype"),
             "time ratio (95% CI)": _interval(c.get("ratio")), "verdict": c.get("verdict"), "why": c.get("why")}
            for c in claims.get("latency") or [] if isinstance(c, dict)]
    return text + ("\n\n" + _table(rows) if rows else "")


def _profile_text(records: list[dict]) -> str:
    if not records:
        return "(not run yet)"
    lines = []
    for record in sorted(records, key=lambda r: r["id"]):
        command = f"`{' '.join(record['command'][2:])}`"
        if record["status"] == ERROR:
            lines.append(f"- {command}: failed: {record.get('error')}")
            continue
        for report in record.get("profile") or []:
            check = report.get("check") or {}
            lines.append(
                f"- {command}: {report.get('model')} by {report.get('by')}: plain median "
                f"{_round(check.get('plain_ms'))} ms, {_round(report.get('gflops_per_s'), 1)} GFLOP/s; rows sum to "
                f"{_round(check.get('agreement'))} of the plain median (instrument overhead "
                f"{_round(check.get('overhead'))}, {'ok' if check.get('ok') else 'NOT within the margin'})")
    return "\n".join(lines) + "\n\nRows, roofline and warnings per model are in results.json; roofline.png beside it."


def _interval(ratio) -> str | None:
    if not isinstance(ratio, dict) or ratio.get("value") is None:
        return None
    return f"{ratio['value']:.3f} [{ratio.get('low', float('nan')):.3f}, {ratio.get('high', float('nan')):.3f}]"


def summary_markdown(results: dict) -> str:
    """The tables a reader compares, one block per device."""
    lines = ["# hrvit-bench GPU suite", "",
             "Written by benchmarks/gpu_suite.py from results.json (every point, its samples and environment). "
             "Latencies: median of per-call CUDA-event samples after warm-up, batch 1 unless stated; p90 blank "
             "where the sample count cannot support it. `% of peak`: one fraction per peak in use (with TF32 on "
             "for cuDNN only, fp32 bounds matmuls and tf32 convolutions). Memory: the warm-up's peak (autotune, "
             "compilation, capture) apart from the timed calls' peak.", ""]
    for slug, device in results["devices"].items():
        env = device["environment"]
        sections = {name: list(records.values()) for name, records in device["points"].items()}
        lines += [f"## {env['device_name']} (`{slug}`)", "", _table(_environment_rows(env)), "",
                  "### Harness vs torch.utils.benchmark", "",
                  _table([{k: r.get(k) for k in ("model", "input", "dtype", "status", "ours_median_ms", "ours_samples",
                                                 "timer_median_ms", "timer_blocks", "ratio", "rounds", "error")}
                          for r in sections.get("agreement", [])]), "",
                  "### Eager", "", _table([_latency_row(r) for r in sections.get("eager", [])]), "",
                  "### CUDA graphs and torch.compile", "",
                  _table(_compile_rows(sections.get("compile", []), sections.get("eager", []))), "",
                  "### Batch sweep to out-of-memory", "",
                  _table(sorted((_latency_row(r) for r in sections.get("batch", [])), key=lambda r: r.get("batch", 0))),
                  "", _batch_line(sections.get("batch", [])), "",
                  "### Run-to-run (one point measured afresh)", "",
                  _table([_latency_row(r) for r in sections.get("repeat", [])]), "",
                  _repeat_line(sections.get("repeat", [])), "",
                  "### Claims (A/B, `hrvit-bench claims --latency`)", "", _claims_text(sections.get("claims", [])), "",
                  "### Profile (`hrvit-bench profile`)", "", _profile_text(sections.get("profile", [])), "",
                  "### Calls", "", _table([_run_row(run) for run in device["runs"]]), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT"), help="output folder (default: $OUT)")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="wall seconds from start; a point that would not fit is left for the next call")
    parser.add_argument("--smoke", action="store_true", help="every section on CPU with tiny inputs")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--retry-errors", action="store_true", help="measure again the points that failed")
    args = parser.parse_args(argv)
    if not args.out:
        parser.error("give --out DIR (or set $OUT)")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv=None, config: Config | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    config = config or (SMOKE if args.smoke else GPU)
    if config.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU visible; use --smoke on a CPU", file=sys.stderr)
        return 2
    try:
        suite = Suite(config, Path(args.out), args.budget_s, args.retry_errors, started)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    suite.run(args.sections)
    print(f"done in {time.monotonic() - started:.0f} s: {Path(args.out) / SUMMARY}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["hrvit-bench"]:  # the CLI with this script's import fallback (claims, profile)
        from hrvit_bench.cli import main as cli_main

        sys.argv = sys.argv[1:]
        cli_main()
    sys.exit(main())
