"""Latency results that render themselves: rich tables, dicts for JSON, rows for CSV."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rich.table import Table

from ..environment import Environment
from ..output import MIB, fmt
from ..zoo import format_size
from .peaks import PeakChoice
from .settings import LatencySettings
from .stats import LatencyStats


# The percentiles a point shows, and the rule for showing one: the q-th percentile needs at least
# ceil(1 / (1 - q/100)) samples, or it is only the largest sample (p99 needs 100 samples, p90 needs 10).
PERCENTILES = {"p90_ms": 90, "p99_ms": 99}


def min_samples(percent: int) -> int:
    return -(-100 // (100 - percent))  # integer ceil: 1 / (1 - 0.9) is 10.000000000000002 in floats


@dataclass
class LatencyPoint:
    """One (input size, batch size) of a model: its latencies, or "oom"."""

    input_size: tuple[int, int]
    batch_size: int
    status: str  # "ok" or "oom"
    stats: LatencyStats | None = None
    flops: int | None = None  # 2 x MACs of the whole batch, all operators
    peak_tflops: dict[str, float] = field(default_factory=dict)  # peak key (fp32, tf32, ...) -> dense TFLOP/s
    # bytes. CUDA: cuda_warmup_max_allocated/_reserved (compilation, capture, autotune workspaces) and
    # cuda_max_allocated/_reserved (the timed calls alone). CPU: process_peak_rss.
    memory: dict = field(default_factory=dict)
    clocks_mhz: dict = field(default_factory=dict)  # GPU clocks sampled during the timed calls (min, median)
    cuda_graphs_engaged: bool | None = None  # with CUDA graphs: did the timed calls replay graphs (None: unknown)
    graph_launches_per_call: int | None = None  # what the profiler saw in one extra untimed call
    reference_median_ms: float | None = None  # torch.utils.benchmark Timer.blocked_autorange
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float | None:
        """Images per second at the median latency."""
        return self.batch_size * 1e3 / self.stats.median_ms if self.stats else None

    @property
    def achieved_tflops(self) -> float | None:
        if not self.stats or self.flops is None:
            return None
        return self.flops / (self.stats.median_ms * 1e-3) / 1e12

    @property
    def peak_fractions(self) -> dict[str, float]:
        """Achieved over each peak; with two (TF32 for some operators only) each bounds only its own operators."""
        achieved = self.achieved_tflops
        if achieved is None:
            return {}
        return {key: achieved / peak for key, peak in self.peak_tflops.items() if peak}

    @property
    def reference_ratio(self) -> float | None:
        """Our median over torch.utils.benchmark's."""
        if not self.stats or not self.reference_median_ms:
            return None
        return self.stats.median_ms / self.reference_median_ms

    @property
    def unsupported_percentiles(self) -> list[str]:
        """The PERCENTILES keys too few samples cannot support."""
        n = self.stats.n if self.stats else 0
        return [key for key, percent in PERCENTILES.items() if self.stats and n < min_samples(percent)]

    @property
    def all_warnings(self) -> list[str]:
        return self.warnings + [
            f"p{PERCENTILES[key]} needs at least {min_samples(PERCENTILES[key])} samples; this point has "
            f"{self.stats.n}, so its p{PERCENTILES[key]} is only an order statistic near the maximum"
            for key in self.unsupported_percentiles
        ]

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "batch_size": self.batch_size,
            "status": self.status,
            "latency_ms": self.stats.to_dict() if self.stats else None,
            "throughput_images_per_s": self.throughput,
            "flops": self.flops,
            "achieved_tflops": self.achieved_tflops,
            "peak_tflops": dict(self.peak_tflops),
            "peak_fraction": self.peak_fractions,
            "memory_bytes": dict(self.memory),
            "clocks_mhz": dict(self.clocks_mhz),
            "cuda_graphs_engaged": self.cuda_graphs_engaged,
            "graph_launches_per_call": self.graph_launches_per_call,
            "reference_median_ms": self.reference_median_ms,
            "reference_ratio": self.reference_ratio,
            "error": self.error,
            "warnings": self.all_warnings,
        }


_STAT_COLUMNS = ("median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "iqr_ms", "cv", "min_ms", "max_ms")
_MEMORY_KEYS = ("cuda_warmup_max_allocated", "cuda_warmup_max_reserved", "cuda_max_allocated", "cuda_max_reserved",
                "process_peak_rss")
_CLOCK_KEYS = ("sm_min_mhz", "sm_median_mhz", "mem_min_mhz", "mem_median_mhz")
_GRAPHS_CELL = {True: "replayed", False: "[red]NOT USED[/red]", None: "unverified"}


@dataclass
class LatencyReport:
    """One model's latencies over a sweep of input and batch sizes, with the settings and machine they came from."""

    model: str
    settings: LatencySettings
    environment: Environment
    points: list[LatencyPoint]
    peak: PeakChoice = field(default_factory=PeakChoice)
    warnings: list[str] = field(default_factory=list)
    attention: str | None = None  # the model's attention path (registry metadata): sdpa, explicit or none

    flops_convention = "2 x MACs, every operator fvcore counts (convs, linears, matmuls, norms, resizes, ...)"

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "attention": self.attention,
            "settings": self.settings.to_dict(),
            "environment": self.environment.to_dict(),
            "flops_convention": self.flops_convention,
            "memory_note": self._memory_note(),
            "gpu_peak": asdict(self.peak.gpu) if self.peak.gpu else None,
            "peak_applies_to": dict(self.peak.applies_to),
            "warnings": list(self.warnings),
            "points": [p.to_dict() for p in self.points],
        }

    def csv_rows(self) -> list[dict]:
        env = {
            f"env_{k}": (v if not isinstance(v, (dict, list, tuple)) else repr(v))
            for k, v in self.environment.to_dict().items()
        }
        rows = []
        for p in self.points:
            stats = p.stats.to_dict() if p.stats else {}
            fractions = p.peak_fractions
            rows.append({
                "model": self.model,
                "attention": self.attention,
                "device": self.settings.device,
                "dtype": self.settings.dtype,
                "channels_last": self.settings.channels_last,
                "compile": self.settings.compile,
                "cuda_graphs": self.settings.cuda_graphs,
                "cuda_graphs_engaged": p.cuda_graphs_engaged,
                "threads": self.settings.threads,
                "warmup": self.settings.warmup,
                "input": format_size(p.input_size),
                "batch_size": p.batch_size,
                "status": p.status,
                "samples": stats.get("n"),
                **{k: stats.get(k) for k in _STAT_COLUMNS},
                "throughput_images_per_s": p.throughput,
                "flops": p.flops,
                "achieved_tflops": p.achieved_tflops,
                **{f"peak_tflops_{key}": p.peak_tflops.get(key) for key in self.peak.applies_to},
                **{f"peak_fraction_{key}": fractions.get(key) for key in self.peak.applies_to},
                "peak_applies_to": "; ".join(f"{k}: {ops}" for k, ops in self.peak.applies_to.items()) or None,
                **{f"{key}_bytes": p.memory.get(key) for key in _MEMORY_KEYS},
                **{f"clock_{key}": p.clocks_mhz.get(key) for key in _CLOCK_KEYS},
                "reference_median_ms": p.reference_median_ms,
                "reference_ratio": p.reference_ratio,
                "warnings": "; ".join(p.all_warnings) or None,
                **env,
            })
        return rows

    def _memory_note(self) -> str:
        if self.settings.torch_device.type == "cuda":
            return ("torch.cuda.max_memory_allocated / max_memory_reserved, weights included: warm-up (compilation, "
                    "graph capture, cuDNN autotune workspaces) and the timed calls apart, peaks reset in between")
        return "peak RSS of the whole process so far (getrusage ru_maxrss), never lower than an earlier point's"

    def _caption(self) -> str:
        s = self.settings
        lines = [f"{self.environment.summary()}. TFLOP/s: 2 x MACs (all ops) / median. "
                 f"{'Memory' if s.torch_device.type == 'cuda' else 'RSS'}: {self._memory_note()}."
                 + (" Timer: torch.utils.benchmark blocked_autorange median." if s.cross_check else "")]
        if len(self.peak.applies_to) > 1:
            lines.append("TF32 is on for some operators only: each % of peak bounds only "
                         + "; ".join(f"{key}: {ops}" for key, ops in self.peak.applies_to.items()) + ".")
        for key, percent in PERCENTILES.items():
            counts = sorted({p.stats.n for p in self.points if key in p.unsupported_percentiles})
            if counts:
                lines.append(f"Warning: p{percent} needs at least {min_samples(percent)} samples; shown as - where "
                             f"a point has fewer (n = {', '.join(map(str, counts))}).")
        lines += [f"Warning: {w}" for w in self.warnings]
        lines += [f"Warning: {format_size(p.input_size)} batch {p.batch_size}: {w}" for p in self.points
                  for w in p.warnings]
        return "\n".join(lines)

    def tables(self) -> list[Table]:
        s = self.settings
        how = [s.dtype] + [flag for flag, on in (
            ("channels-last", s.channels_last), ("compiled", s.compile), ("CUDA graphs", s.cuda_graphs)) if on]
        if self.attention and self.attention != "none":
            how.append(f"{self.attention} attention")
        timing = f"{s.iters} timed calls" if s.iters else f">= {s.min_time:g} s of timed calls"
        cuda = s.torch_device.type == "cuda"
        clocks = any(p.clocks_mhz.get("sm_median_mhz") for p in self.points)
        table = Table(
            title=f"{self.model}: latency on {s.device} ({', '.join(how)}; {s.warmup} warm-up, {timing})",
            caption=self._caption(),
        )
        columns = ["input", "batch", "n", "median ms", "p90", "p99", "mean", "IQR", "CV", "img/s", "TFLOP/s"]
        peak_keys = list(self.peak.tflops)
        for key in peak_keys:
            columns.append(f"% of {self.peak.gpu.label} {key} peak")
        columns += ["warm-up MiB", "alloc/resv MiB"] if cuda else ["RSS MiB"]
        if clocks:
            columns.append("SM MHz min/med")
        if s.cuda_graphs:
            columns.append("graphs")
        if s.cross_check:
            columns += ["Timer ms", "ours/Timer"]
        for col in columns:
            table.add_column(col, justify="left" if col == "input" else "right", no_wrap=True)
        for p in self.points:
            cells = [format_size(p.input_size), str(p.batch_size)]
            if p.stats is None:
                cells += ["", "OOM"] + [""] * (len(columns) - 4)
                table.add_row(*cells, style="red")
                continue
            st = p.stats
            shown = {key: (None if key in p.unsupported_percentiles else getattr(st, key)) for key in PERCENTILES}
            cells += [str(st.n)] + [fmt(v, ".3f") for v in (
                st.median_ms, shown["p90_ms"], shown["p99_ms"], st.mean_ms, st.iqr_ms)]
            cells += [f"{100 * st.cv:.1f}%", f"{p.throughput:.1f}", fmt(p.achieved_tflops, ".3f")]
            fractions = p.peak_fractions
            cells += [fmt(fractions.get(key) and 100 * fractions[key], ".1f") for key in peak_keys]
            mib = {key: f"{value / MIB:.0f}" for key, value in p.memory.items()}
            if cuda:
                cells += [mib["cuda_warmup_max_allocated"], f"{mib['cuda_max_allocated']}/{mib['cuda_max_reserved']}"]
            else:
                cells.append(mib["process_peak_rss"])
            if clocks:
                cells.append("/".join(fmt(p.clocks_mhz.get(k), ".0f") for k in ("sm_min_mhz", "sm_median_mhz")))
            if s.cuda_graphs:
                cells.append(_GRAPHS_CELL[p.cuda_graphs_engaged])
            if s.cross_check:
                cells += [fmt(p.reference_median_ms, ".3f"), fmt(p.reference_ratio, ".3f")]
            table.add_row(*cells)
        return [table]
