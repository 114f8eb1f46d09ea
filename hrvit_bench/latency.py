"""Latency of one forward pass, timed the way careful harnesses time it.

- Untimed warm-up calls first: lazy initialisation, cuDNN autotuning (``cudnn.benchmark`` is on while timing on
  CUDA), ``torch.compile``'s compilation and CUDA-graph capture all happen there.
- Every timed call is one sample. CUDA: a pair of CUDA events around the call, the device synchronised before
  the call (each sample is one request's latency, launch overhead included) and before the events are read
  (``elapsed_time`` is in milliseconds). CPU: ``time.perf_counter_ns`` around the call.
- The thread count is pinned with ``torch.set_num_threads`` and reported: torch.utils.benchmark's ``Timer``
  defaults to one thread, which is not what a model sees in production.
- Garbage collection is off while timing, as in ``timeit``; inference runs under ``torch.inference_mode``.
- ``cross_check`` runs ``torch.utils.benchmark.Timer.blocked_autorange`` on the same callable, so every number
  can be set beside the reference harness's.
"""
from __future__ import annotations

import contextlib
import gc
import os
import re
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from rich.table import Table
from torch import nn

from . import zoo
from .conventions import Convention
from .counting import count_macs
from .environment import Environment
from .errors import UsageError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_MIN_TIME_S = 1.0
MIN_SAMPLES = 5  # with a time budget, never fewer samples than this
FLOPS = Convention("flops", "all", "1e9")  # achieved TFLOP/s counts 2 x MACs of every operator fvcore counts
MIB = 2**20


# ----------------------------------------------------------------------------------------------------------------
# Peak dense throughput of known GPUs (no structured sparsity: datasheets' sparse figures are halved).


@dataclass(frozen=True)
class GpuPeak:
    label: str
    pattern: str  # regex over torch.cuda.get_device_name()
    tflops: dict  # dtype key ("fp32" on CUDA cores, "tf32", "fp16", "bf16") -> peak dense TFLOP/s
    source: str


GPU_PEAKS = (
    GpuPeak("H200 SXM", r"\bH200\b(?!.*NVL)", {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
            "NVIDIA H200 Tensor Core GPU datasheet, SXM column (sparse TF32 989, FP16/BF16 1979, halved)"),
    GpuPeak("H100 PCIe", r"\bH100\b.*\bPCIe\b", {"fp32": 51.0, "tf32": 378.0, "fp16": 756.5, "bf16": 756.5},
            "NVIDIA H100 Tensor Core GPU datasheet, PCIe column (sparse TF32 756, FP16/BF16 1513, halved)"),
    GpuPeak("H100 SXM", r"\bH100\b.*\b(SXM|HBM3)", {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
            "NVIDIA H100 Tensor Core GPU datasheet, SXM column (sparse TF32 989, FP16/BF16 1979, halved)"),
    GpuPeak("A100", r"\bA100\b", {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
            "NVIDIA A100 Tensor Core GPU datasheet (same peaks for SXM4 and PCIe, 40 and 80 GB)"),
    GpuPeak("L4", r"\bL4\b", {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0},
            "NVIDIA L4 Tensor Core GPU datasheet (sparse TF32 120, FP16/BF16 242, halved)"),
    GpuPeak("A10", r"\bA10\b", {"fp32": 31.2, "tf32": 62.5, "fp16": 125.0, "bf16": 125.0},
            "NVIDIA A10 Tensor Core GPU datasheet (dense column)"),
    GpuPeak("V100 PCIe", r"\bV100\b.*\bPCIE\b", {"fp32": 14.0, "fp16": 112.0},
            "NVIDIA Tesla V100 datasheet, PCIe column (no TF32 or BF16 on Volta)"),
    GpuPeak("V100 SXM2", r"\bV100\b", {"fp32": 15.7, "fp16": 125.0},
            "NVIDIA Tesla V100 datasheet, SXM2 column (no TF32 or BF16 on Volta)"),
    GpuPeak("RTX 4090", r"\bRTX 4090$", {"fp32": 82.6, "tf32": 82.6, "fp16": 165.2, "bf16": 165.2},
            "NVIDIA Ada Lovelace GPU architecture whitepaper, appendix A (FP16/BF16 with FP32 accumulate, dense)"),
)


def gpu_peak(device_name: str) -> GpuPeak | None:
    for peak in GPU_PEAKS:
        if re.search(peak.pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None


def peak_key(dtype: str, matmul_allow_tf32: bool) -> str:
    """fp32 matmuls run on tensor cores only when TF32 is allowed; their peak is then TF32's."""
    return "tf32" if dtype == "fp32" and matmul_allow_tf32 else dtype


# ----------------------------------------------------------------------------------------------------------------
# Statistics.


@dataclass(frozen=True)
class LatencyStats:
    """Order statistics of per-call latencies, in milliseconds. Percentiles interpolate linearly (numpy's)."""

    n: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float  # sample standard deviation (ddof=1); 0 for one sample
    iqr_ms: float  # p75 - p25
    cv: float  # std / mean
    min_ms: float
    max_ms: float
    samples_ms: tuple[float, ...] = field(repr=False)

    @classmethod
    def from_samples(cls, samples_ms) -> "LatencyStats":
        a = np.asarray(samples_ms, dtype=np.float64)
        if a.size == 0:
            raise ValueError("no samples")
        p25, median, p75, p90, p99 = np.percentile(a, [25, 50, 75, 90, 99])
        mean = float(a.mean())
        std = float(a.std(ddof=1)) if a.size > 1 else 0.0
        return cls(
            n=int(a.size), median_ms=float(median), p90_ms=float(p90), p99_ms=float(p99), mean_ms=mean,
            std_ms=std, iqr_ms=float(p75 - p25), cv=std / mean if mean > 0 else 0.0,
            min_ms=float(a.min()), max_ms=float(a.max()), samples_ms=tuple(float(v) for v in a),
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["samples_ms"] = list(self.samples_ms)
        return out


# ----------------------------------------------------------------------------------------------------------------
# What to measure, and the checks that must pass before any model is built.


@dataclass
class LatencySettings:
    device: str = "cpu"
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    warmup: int = 5
    iters: int | None = None  # a fixed number of timed calls, or ...
    min_time: float | None = None  # ... timed calls until this many seconds (default 1 s, at least 5 calls)
    threads: int | None = None  # None: torch's current count
    cross_check: bool = False

    def __post_init__(self):
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise UsageError(f"unknown device {self.device!r}; use cpu or cuda") from None
        if device.type not in ("cpu", "cuda"):
            raise UsageError(f"unknown device {self.device!r}; use cpu or cuda")
        if self.dtype not in DTYPES:
            raise UsageError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more, not {self.warmup}")
        if self.iters is not None and self.min_time is not None:
            raise UsageError("give --iters or --min-time, not both")
        if self.iters is not None and self.iters < 1:
            raise UsageError(f"--iters must be at least 1, not {self.iters}")
        if self.min_time is not None and not self.min_time > 0:
            raise UsageError(f"--min-time must be a positive number of seconds, not {self.min_time}")
        if self.iters is None and self.min_time is None:
            self.min_time = DEFAULT_MIN_TIME_S
        if self.threads is None:
            self.threads = torch.get_num_threads()
        elif self.threads < 1:
            raise UsageError(f"--threads must be at least 1, not {self.threads}")
        if self.cuda_graphs and device.type != "cuda":
            raise UsageError("--cuda-graphs needs --device cuda")
        if (self.compile or self.cuda_graphs) and self.warmup < 1:
            raise UsageError("--compile and --cuda-graphs need --warmup 1 or more: compiling must not be timed")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def to_dict(self) -> dict:
        return asdict(self)


def preflight(settings: LatencySettings) -> list[str]:
    """Fail fast, before any model is built, on a device, dtype or compiler this machine lacks; return warnings."""
    device = settings.torch_device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            reason = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UsageError(f"--device cuda: {reason} (torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {settings.device}: only {torch.cuda.device_count()} GPU(s) visible")
        if settings.dtype == "bf16" and not torch.cuda.is_bf16_supported():
            raise UsageError(f"bf16 is not supported on {torch.cuda.get_device_name(device)}; use fp16 or fp32")
    warnings = []
    if device.type == "cpu" and settings.dtype == "fp16":
        warnings.append(_probe_cpu_fp16())
    if settings.compile:
        _check_compiler(device)
    return warnings


def _probe_cpu_fp16() -> str:
    """fp16 convolutions and linear layers on CPU: an error on old torch builds, emulated and slow on new ones."""
    probe = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).half().eval()
    try:
        with torch.inference_mode():
            probe(torch.zeros(1, 3, 8, 8, dtype=torch.float16))
    except (RuntimeError, NotImplementedError) as exc:
        raise UsageError(
            f"fp16 does not run on CPU in torch {torch.__version__} ({_first_line(exc)}); use --dtype bf16 or fp32"
        ) from None
    return (
        f"fp16 runs on CPU in torch {torch.__version__}, but most CPUs lack fp16 arithmetic: kernels convert "
        "to fp32 and back, so these numbers say little about fp16 on a GPU"
    )


def _check_compiler(device: torch.device) -> None:
    """torch.compile needs Dynamo support, a C++ compiler on CPU, and Triton plus a C compiler on CUDA."""
    try:
        from torch._dynamo.eval_frame import check_if_dynamo_supported

        check_if_dynamo_supported()
        if device.type == "cpu":
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        else:
            from torch.utils._triton import has_triton

            if not has_triton():
                raise RuntimeError("Triton is missing or does not support this GPU")
            if not any(shutil.which(c) for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c):
                raise RuntimeError("no C compiler found (Triton builds its launcher with one; set CC)")
    except Exception as exc:  # each check has its own exception type
        raise UsageError(f"--compile cannot work here: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# What allocators say when memory runs out (CPU: "can't allocate memory"; cuDNN: CUDNN_STATUS_ALLOC_FAILED), and
# not what other errors about memory *formats* say.
_OOM_MESSAGE = re.compile(r"out of memory|allocate memory|not enough memory|alloc_failed", re.IGNORECASE)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or a RuntimeError an allocator raised."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and bool(_OOM_MESSAGE.search(str(exc)))


# ----------------------------------------------------------------------------------------------------------------
# The timing loop.


class _CpuClock:
    def time(self, step: Callable[[], object]) -> float:
        start = time.perf_counter_ns()
        step()
        return (time.perf_counter_ns() - start) / 1e6


class _CudaClock:
    def __init__(self):
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def time(self, step: Callable[[], object]) -> float:
        torch.cuda.synchronize()  # the previous call is done: each sample is one call's latency
        self.start.record()
        step()
        self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end)  # already milliseconds


def time_calls(
    step: Callable[[], object], device: torch.device, warmup: int, iters: int | None = None,
    min_time: float | None = None,
) -> list[float]:
    """Milliseconds per call of ``step``: ``warmup`` untimed calls, then ``iters`` timed ones, or timed ones until
    their sum reaches ``min_time`` seconds (at least MIN_SAMPLES)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    clock = _CudaClock() if device.type == "cuda" else _CpuClock()
    budget_ms = None if min_time is None else min_time * 1e3

    def more(samples: list[float]) -> bool:
        if iters is not None:
            return len(samples) < iters
        return len(samples) < MIN_SAMPLES or sum(samples) < budget_ms

    samples: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while more(samples):
            samples.append(clock.time(step))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def reference_timing(step: Callable[[], object], threads: int, min_run_time: float):
    """torch.utils.benchmark's ``Measurement`` (seconds) of the same callable and thread count; it synchronises
    CUDA itself."""
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="step()", globals={"step": step}, num_threads=threads, label="hrvit-bench cross-check")
    return timer.blocked_autorange(min_run_time=min_run_time)


def _cuda_graph_step(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """Capture one forward into a CUDA graph (after warm-up calls on a side stream, as capture requires)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(x)
    return graph.replay


def make_step(model: nn.Module, x: torch.Tensor, settings: LatencySettings) -> Callable[[], object]:
    """The callable that is timed: eager, compiled (CUDA graphs through mode="reduce-overhead"), or a graph replay.

    Call inside ``torch.inference_mode``. Compilation is per shape (``dynamic=False``), from a clean Dynamo cache,
    so a sweep never falls back to dynamic-shape kernels or hits the recompile limit.
    """
    if settings.compile:
        torch._dynamo.reset()
        compiled = torch.compile(model, mode="reduce-overhead" if settings.cuda_graphs else None, dynamic=False)
        return lambda: compiled(x)
    if settings.cuda_graphs:
        return _cuda_graph_step(model, x)
    return lambda: model(x)


def _process_peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# Results.


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

    flops_convention = "2 x MACs, every operator fvcore counts (convs, linears, matmuls, norms, resizes, ...)"

    def to_dict(self) -> dict:
        return {
            "model": self.model,
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
                "device": self.settings.device,
                "dtype": self.settings.dtype,
                "channels_last": self.settings.channels_last,
                "compile": self.settings.compile,
                "cuda_graphs": self.settings.cuda_graphs,
                "threads": self.settings.threads,
                "warmup": self.settings.warmup,
                "input": "x".join(map(str, p.input_size)),
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
            cells = ["x".join(map(str, p.input_size)), str(p.batch_size)]
            if p.stats is None:
                cells += ["", "OOM"] + [""] * (len(columns) - 4)
                table.add_row(*cells, style="red")
                continue
            st = p.stats
            cells += [str(st.n)] + [f"{v:.3f}" for v in (st.median_ms, st.p90_ms, st.p99_ms, st.mean_ms, st.iqr_ms)]
            cells += [f"{100 * st.cv:.1f}%", f"{p.throughput:.1f}", _fmt(p.achieved_tflops, ".3f")]
            if self.gpu_peak:
                cells.append(_fmt(p.peak_fraction and 100 * p.peak_fraction, ".1f"))
            if cuda:
                cells.append(f"{p.memory['cuda_max_allocated'] / MIB:.0f}/{p.memory['cuda_max_reserved'] / MIB:.0f}")
            else:
                cells.append(f"{p.memory['process_peak_rss'] / MIB:.0f}")
            if s.cross_check:
                cells += [_fmt(p.reference_median_ms, ".3f"), _fmt(p.reference_ratio, ".3f")]
            table.add_row(*cells)
        return [table]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# ----------------------------------------------------------------------------------------------------------------
# Driving a run.


@contextlib.contextmanager
def pinned(settings: LatencySettings):
    """The thread count, and on CUDA the current device and cuDNN autotuning, for a run; restored afterwards."""
    threads, autotune = torch.get_num_threads(), torch.backends.cudnn.benchmark
    cuda = settings.torch_device.type == "cuda"
    torch.set_num_threads(settings.threads)
    if cuda:
        torch.backends.cudnn.benchmark = True
    try:
        with torch.cuda.device(settings.torch_device) if cuda else contextlib.nullcontext():
            yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = autotune


def prepare(model: nn.Module, settings: LatencySettings) -> nn.Module:
    model = model.to(device=settings.torch_device, dtype=DTYPES[settings.dtype]).eval()
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def measure_point(
    model: nn.Module, shape: tuple[int, int, int, int], settings: LatencySettings, peak_tflops: float | None = None,
    meta_model: nn.Module | None = None,
) -> LatencyPoint:
    """Time ``model`` (already prepared) on one input shape; an out-of-memory makes an "oom" point, not an error."""
    device = settings.torch_device
    point = LatencyPoint(input_size=tuple(shape[2:]), batch_size=shape[0], status="ok", peak_tflops=peak_tflops)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    x = step = oom = None
    try:
        with torch.inference_mode():
            x = torch.randn(shape, device=device, dtype=DTYPES[settings.dtype])
            if settings.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            step = make_step(model, x, settings)
            samples = time_calls(step, device, settings.warmup, settings.iters, settings.min_time)
            if settings.cross_check:
                budget = max(0.2, sum(samples) / 1e3)
                point.reference_median_ms = reference_timing(step, settings.threads, budget).median * 1e3
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        oom = _first_line(exc)
    if oom is not None:  # freed only here, once the exception's traceback (holding activations) is gone
        del x, step
        _free_memory(device)
        point.status, point.error, point.peak_tflops = "oom", oom, None
        return point
    point.stats = LatencyStats.from_samples(samples)
    if device.type == "cuda":
        point.memory = {
            "cuda_max_allocated": torch.cuda.max_memory_allocated(device),
            "cuda_max_reserved": torch.cuda.max_memory_reserved(device),
        }
    else:
        point.memory = {"process_peak_rss": _process_peak_rss_bytes()}
    if meta_model is not None:
        point.flops = count_macs(meta_model, shape, engine="meta").total(FLOPS)
    del x, step
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the next point's reserved-memory peak starts from its own weights
    return point


def parse_batch_sizes(text: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]."""
    sizes = []
    for item in text.split(","):
        try:
            value = int(item)
        except ValueError:
            raise UsageError(f"batch size {item.strip()!r} is not an integer (give e.g. 1 or 1,2,4,8)") from None
        if value < 1:
            raise UsageError(f"batch size must be a positive integer, not {value}")
        sizes.append(value)
    return sizes


def parse_sizes(text: str | None) -> list[tuple[int, int] | None]:
    """'512x512,1024x1024' -> [(512, 512), (1024, 1024)]; None -> [None], the model's own size."""
    return [None] if text is None else [zoo.parse_size(item) for item in text.split(",")]


def run(
    names: list[str],
    sizes: list[tuple[int, int] | None],
    batch_sizes: list[int],
    settings: LatencySettings,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[LatencyReport]:
    """Time every model at every (size, batch size); ``None`` as a size means the model's own input size.

    ``progress(done, total, label)`` is called before each point and once at the end.
    """
    warnings = preflight(settings)
    for message in warnings:
        if warn:
            warn(message)
    plans = []
    for name in names:  # every shape is checked before the first model is built
        info = zoo.info(name)
        plans.append((name, [zoo.input_shape(info, size, b) for size in sizes for b in batch_sizes]))
    total, done = sum(len(shapes) for _, shapes in plans), 0
    reports = []
    with pinned(settings):
        env = Environment.capture(settings.torch_device, settings.dtype)
        peak = gpu_peak(env.device_name) if settings.torch_device.type == "cuda" else None
        peak_tflops = peak.tflops.get(peak_key(settings.dtype, env.cuda_matmul_allow_tf32)) if peak else None
        for name, shapes in plans:
            model = prepare(zoo.build(name, device=str(settings.torch_device)), settings)
            meta_model = zoo.build(name, device="meta")
            points = []
            for shape in shapes:
                if progress:
                    progress(done, total, f"{name} {shape[0]}x{shape[2]}x{shape[3]}")
                points.append(measure_point(model, shape, settings, peak_tflops, meta_model))
                done += 1
            reports.append(LatencyReport(name, settings, env, points, peak, list(warnings)))
            del model
            _free_memory(settings.torch_device)
    if progress:
        progress(done, total, "done")
    return reports
