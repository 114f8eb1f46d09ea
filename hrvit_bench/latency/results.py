"""Latency results that render themselves: rich tables, dicts for JSON, rows for CSV."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rich.table import Table

from ..environment import Environment
from ..output import MIB, fmt
from ..zoo import format_size
from .peaks import GpuPeak
from .settings import LatencySettings
from .stats import LatencyStats


@dataclass
class LatencyPoint:
    """One (input size, batch size) of a model: its latencies, or "oom"."""

    input_size: tuple[int, int]
    batch_size: int
    status: str  # "ok" or "oom"
    stats: LatencyStats | None = None
    flops: int | None = None  # 2 x MACs of the whole batch, all operators
    peak_tflops: float | None = None  # the device's dense peak for this dtype, when known
    memory: dict = field(default_factory=dict)  # bytes: cuda_max_allocated/cuda_max_reserved, or process_peak_rss
    reference_median_ms: float | None = None  # torch.utils.benchmark Timer.blocked_autorange
    error: str | None = None

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
    def peak_fraction(self) -> float | None:
        achieved = self.achieved_tflops
        return achieved / self.peak_tflops if achieved is not None and self.peak_tflops else None

    @property
    def reference_ratio(self) -> float | None:
        """Our median over torch.utils.benchmark's."""
        if not self.stats or not self.reference_median_ms:
            return None
        return self.stats.median_ms / self.reference_median_ms

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "batch_size": self.batch_size,
            "status": self.status,
            "latency_ms": self.stats.to_dict() if self.stats else None,
            "throughput_images_per_s": self.throughput,
            "flops": self.flops,
            "achieved_tflops": self.achieved_tflops,
            "peak_tflops": self.peak_tflops,
            "peak_fraction": self.peak_fraction,
            "memory_bytes": dict(self.memory),
            "reference_median_ms": self.reference_median_ms,
            "reference_ratio": self.reference_ratio,
            "error": self.error,
        }


_STAT_COLUMNS = ("median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "iqr_ms", "cv", "min_ms", "max_ms")


@dataclass
class LatencyReport:
    """One model's latencies over a sweep of input and batch sizes, with the settings and machine they came from."""

    model: str
    settings: LatencySettings
    environment: Environment
    points: list[LatencyPoint]
    gpu_peak: GpuPeak | None = None
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
            "gpu_peak": asdict(self.gpu_peak) if self.gpu_peak else None,
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
            rows.append({
                "model": self.model,
                "attention": self.attention,
                "device": self.settings.device,
                "dtype": self.settings.dtype,
                "channels_last": self.settings.channels_last,
                "compile": self.settings.compile,
                "cuda_graphs": self.settings.cuda_graphs,
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
                "peak_tflops": p.peak_tflops,
                "peak_fraction": p.peak_fraction,
                "cuda_max_allocated_bytes": p.memory.get("cuda_max_allocated"),
                "cuda_max_reserved_bytes": p.memory.get("cuda_max_reserved"),
                "process_peak_rss_bytes": p.memory.get("process_peak_rss"),
                "reference_median_ms": p.reference_median_ms,
                "reference_ratio": p.reference_ratio,
                **env,
            })
        return rows

    def _memory_note(self) -> str:
        if self.settings.torch_device.type == "cuda":
            return "torch.cuda.max_memory_allocated / max_memory_reserved during the point, weights included"
        return "peak RSS of the whole process so far (getrusage ru_maxrss), never lower than an earlier point's"

    def tables(self) -> list[Table]:
        s = self.settings
        how = [s.dtype] + [flag for flag, on in (
            ("channels-last", s.channels_last), ("compiled", s.compile), ("CUDA graphs", s.cuda_graphs)) if on]
        if self.attention and self.attention != "none":
            how.append(f"{self.attention} attention")
        timing = f"{s.iters} timed calls" if s.iters else f">= {s.min_time:g} s of timed calls"
        cuda = s.torch_device.type == "cuda"
        table = Table(
            title=f"{self.model}: latency on {s.device} ({', '.join(how)}; {s.warmup} warm-up, {timing})",
            caption=f"{self.environment.summary()}. TFLOP/s: 2 x MACs (all ops) / median. "
                    f"{'Memory' if cuda else 'RSS'}: {self._memory_note()}."
                    + (" Timer: torch.utils.benchmark blocked_autorange median." if s.cross_check else ""),
        )
        columns = ["input", "batch", "n", "median ms", "p90", "p99", "mean", "IQR", "CV", "img/s", "TFLOP/s"]
        if self.gpu_peak:
            columns.append(f"% of {self.gpu_peak.label} peak")
        columns.append("alloc/resv MiB" if cuda else "RSS MiB")
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
            cells += [str(st.n)] + [f"{v:.3f}" for v in (st.median_ms, st.p90_ms, st.p99_ms, st.mean_ms, st.iqr_ms)]
            cells += [f"{100 * st.cv:.1f}%", f"{p.throughput:.1f}", fmt(p.achieved_tflops, ".3f")]
            if self.gpu_peak:
                cells.append(fmt(p.peak_fraction and 100 * p.peak_fraction, ".1f"))
            if cuda:
                cells.append(f"{p.memory['cuda_max_allocated'] / MIB:.0f}/{p.memory['cuda_max_reserved'] / MIB:.0f}")
            else:
                cells.append(f"{p.memory['process_peak_rss'] / MIB:.0f}")
            if s.cross_check:
                cells += [fmt(p.reference_median_ms, ".3f"), fmt(p.reference_ratio, ".3f")]
            table.add_row(*cells)
        return [table]
