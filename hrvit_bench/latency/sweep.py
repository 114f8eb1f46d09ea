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

from .. import counting, zoo
from ..conventions import Convention
from ..environment import ClockSampler, ClockSource, gpu_clock_source
from ..errors import first_line
from .results import LatencyPoint, LatencyReport
from .session import timed_session
from .settings import DTYPES, LatencySettings
from .stats import LatencyStats
from .timer import cudagraph_skips, graph_launches, make_step, reference_timing, time_calls

FLOPS = Convention("flops", "all", "1e9")  # achieved TFLOP/s counts 2 x MACs of every operator fvcore counts

# What allocators say when memory runs out (CPU: "can't allocate memory"; cuDNN: CUDNN_STATUS_ALLOC_FAILED), and
# not what other errors about memory *formats* say.
_OOM_MESSAGE = re.compile(r"out of memory|allocate memory|not enough memory|alloc_failed", re.IGNORECASE)


def out_of_memory_in(exc: BaseException) -> BaseException | None:
    """The out-of-memory error ``exc`` is, or was raised while handling (a CUDA graph capture that ran out of
    memory fails again at its end, and that second error is the one that propagates); None when there is none."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or (
                isinstance(exc, RuntimeError) and _OOM_MESSAGE.search(str(exc))):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or a RuntimeError an allocator raised, or an error raised
    while handling one of these."""
    return out_of_memory_in(exc) is not None


def _process_peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _recover_from_oom(settings: LatencySettings, stream) -> None:
    """After an out-of-memory, possibly inside a CUDA graph capture: the point's stream current again (a capture
    whose end failed leaves its capture stream current), no compiled graphs (cudagraph trees hold memory pools),
    the device settled (a synchronise may report the broken capture: it is that error, already handled) and the
    cache emptied, so the next point starts clean."""
    if settings.torch_device.type == "cuda":
        torch.cuda.set_stream(stream)
        if settings.compile:
            torch._dynamo.reset()
        with contextlib.suppress(RuntimeError):
            torch.cuda.synchronize()
    _free_memory(settings.torch_device)


def random_input(shape: tuple[int, int, int, int], settings: LatencySettings) -> torch.Tensor:
    """One point's input, on the device, in the dtype and memory format being timed."""
    x = torch.randn(shape, device=settings.torch_device, dtype=DTYPES[settings.dtype])
    return x.contiguous(memory_format=torch.channels_last) if settings.channels_last else x


def _check_graphs(point: LatencyPoint, step: Callable[[], object], skips: int) -> None:
    """Did the timed calls replay CUDA graphs? ``skips``: inductor's cudagraph skips during this point."""
    launches = point.graph_launches_per_call = graph_launches(step)
    if skips:
        point.cuda_graphs_engaged = False
        point.warnings.append(
            f"CUDA graphs did not engage everywhere: inductor skipped them {skips} time(s) (TORCH_LOGS=perf_hints "
            f"says why); {launches or 0} graph launch(es) per call: these timings include eager launches")
    elif launches == 0:
        point.cuda_graphs_engaged = False
        point.warnings.append("CUDA graphs did not engage: no graph launch in a profiled call; these are eager "
                              "timings")
    elif launches is None:
        point.warnings.append("CUDA graphs unverified: the profiler saw no CUDA activity in a call")
    else:
        point.cuda_graphs_engaged = True


def prepare(model: nn.Module, settings: LatencySettings) -> nn.Module:
    model = model.to(device=settings.torch_device, dtype=DTYPES[settings.dtype]).eval()
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def point_flops(name: str, shape) -> int:
    """2 x MACs of every operator fvcore counts, of one forward at ``shape``: counted through the one door, before
    anything is timed, so a model that refuses the input says so as `flops` and `params` do."""
    return counting.count(name, shape).total(FLOPS)


def measure_point(
    model: nn.Module, shape: tuple[int, int, int, int], settings: LatencySettings,
    peak_tflops: dict[str, float] | None = None, flops: int | None = None,
    clock_source: ClockSource | None = None,
) -> LatencyPoint:
    """Time ``model`` (already prepared) on one input shape; an out-of-memory makes an "oom" point, not an error.

    Memory peaks are reset after the warm-up: compilation, graph capture and cuDNN's autotune workspaces are
    reported as the warm-up's peak, apart from the timed calls'. ``clock_source`` is sampled while they run.
    ``flops``: the point's 2 x MACs, counted beforehand (``point_flops``).
    """
    device = settings.torch_device
    cuda = device.type == "cuda"
    point = LatencyPoint(input_size=tuple(shape[2:]), batch_size=shape[0], status="ok",
                         peak_tflops=dict(peak_tflops or {}))
    stream = torch.cuda.current_stream(device) if cuda else None
    compiled_graphs = settings.compile and settings.cuda_graphs

    def after_warmup() -> None:
        if cuda:
            point.memory["cuda_warmup_max_allocated"] = torch.cuda.max_memory_allocated(device)
            point.memory["cuda_warmup_max_reserved"] = torch.cuda.max_memory_reserved(device)
            torch.cuda.reset_peak_memory_stats(device)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    sampler = ClockSampler(clock_source) if clock_source is not None else None
    x = step = oom = None
    try:
        with torch.inference_mode():
            x = random_input(shape, settings)
            skips_before = cudagraph_skips() if compiled_graphs else 0
            step = make_step(model, x, settings)
            samples = time_calls(step, device, settings.warmup, settings.iters, settings.min_time,
                                 after_warmup=after_warmup, while_timing=sampler)
            if cuda:
                point.memory["cuda_max_allocated"] = torch.cuda.max_memory_allocated(device)
                point.memory["cuda_max_reserved"] = torch.cuda.max_memory_reserved(device)
            if settings.cuda_graphs:
                _check_graphs(point, step, cudagraph_skips() - skips_before if compiled_graphs else 0)
            if settings.cross_check:
                budget = max(0.2, sum(samples) / 1e3)
                point.reference_median_ms = reference_timing(step, settings.threads, budget).median * 1e3
    except Exception as exc:
        cause = out_of_memory_in(exc)
        if cause is None:
            raise
        oom = first_line(cause)
    if oom is not None:  # freed only here, once the exception's traceback (holding activations) is gone
        del x, step
        _recover_from_oom(settings, stream)
        return LatencyPoint(input_size=point.input_size, batch_size=point.batch_size, status="oom", error=oom)
    point.stats = LatencyStats.from_samples(samples)
    if sampler is not None:
        point.clocks_mhz = sampler.summary()
    if not cuda:
        point.memory = {"process_peak_rss": _process_peak_rss_bytes()}
    point.flops = flops
    del x, step
    if cuda:
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
    plans = []
    for name in names:  # every shape is checked before the first model is built
        info = zoo.info(name)
        plans.append((info, [zoo.input_shape(info, size, b) for size in sizes for b in batch_sizes]))
    total, done = sum(len(shapes) for _, shapes in plans), 0
    reports = []
    with timed_session(settings, warn) as run_on:
        env, peak, warnings = run_on.environment, run_on.peak, run_on.warnings
        if peak.warning:
            warnings.append(peak.warning)
            if warn:
                warn(peak.warning)
        clocks = gpu_clock_source(settings.torch_device) if settings.torch_device.type == "cuda" else None
        for info, shapes in plans:
            flops = [point_flops(info.name, shape) for shape in shapes]  # a refused input stops here, in one line
            model = prepare(zoo.build(info.name, device=str(settings.torch_device)), settings)
            points = []
            for shape, point_work in zip(shapes, flops):
                if progress:
                    progress(done, total, f"{info.name} {zoo.format_size(shape)}")
                points.append(measure_point(model, shape, settings, peak.tflops, point_work, clocks))
                done += 1
            reports.append(LatencyReport(info.name, settings, env, points, peak, list(warnings), info.attention))
            del model
            _free_memory(settings.torch_device)
    if progress:
        progress(done, total, "done")
    return reports
