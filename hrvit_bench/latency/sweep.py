"""The sweep driver: every model at every (input size, batch size), on pinned threads, out-of-memory points kept."""
from __future__ import annotations

import contextlib
import gc
import re
import resource
import sys
from typing import Callable

import torch
from torch import nn

from .. import zoo
from ..conventions import Convention
from ..counting import count_macs
from ..environment import Environment
from ..errors import first_line
from .peaks import gpu_peak, peak_key
from .results import LatencyPoint, LatencyReport
from .settings import DTYPES, LatencySettings, preflight
from .stats import LatencyStats
from .timer import make_step, reference_timing, time_calls

FLOPS = Convention("flops", "all", "1e9")  # achieved TFLOP/s counts 2 x MACs of every operator fvcore counts

# What allocators say when memory runs out (CPU: "can't allocate memory"; cuDNN: CUDNN_STATUS_ALLOC_FAILED), and
# not what other errors about memory *formats* say.
_OOM_MESSAGE = re.compile(r"out of memory|allocate memory|not enough memory|alloc_failed", re.IGNORECASE)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or a RuntimeError an allocator raised."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and bool(_OOM_MESSAGE.search(str(exc)))


def _process_peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


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
        oom = first_line(exc)
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
        plans.append((info, [zoo.input_shape(info, size, b) for size in sizes for b in batch_sizes]))
    total, done = sum(len(shapes) for _, shapes in plans), 0
    reports = []
    with pinned(settings):
        env = Environment.capture(settings.torch_device, settings.dtype)
        peak = gpu_peak(env.device_name) if settings.torch_device.type == "cuda" else None
        peak_tflops = peak.tflops.get(peak_key(settings.dtype, env.cuda_matmul_allow_tf32)) if peak else None
        for info, shapes in plans:
            model = prepare(zoo.build(info.name, device=str(settings.torch_device)), settings)
            meta_model = zoo.build(info.name, device="meta")
            points = []
            for shape in shapes:
                if progress:
                    progress(done, total, f"{info.name} {zoo.format_size(shape)}")
                points.append(measure_point(model, shape, settings, peak_tflops, meta_model))
                done += 1
            reports.append(LatencyReport(info.name, settings, env, points, peak, list(warnings), info.attention))
            del model
            _free_memory(settings.torch_device)
    if progress:
        progress(done, total, "done")
    return reports
