"""The timing loop: warm-up, then one sample per call, on a clock that sees the device finish.

CUDA: a pair of CUDA events around the call, the device synchronised before the call (each sample is one
request's latency, launch overhead included) and before the events are read (``elapsed_time`` is in
milliseconds). CPU: ``time.perf_counter_ns`` around the call. Garbage collection is off while timing, as in
``timeit``.

CUDA graphs are checked, not assumed: a capture that raises drops its half-built graph (the sweep restores the
stream and frees memory, so an out-of-memory there is one "oom" point), and ``graph_launches`` counts the graph
launches the profiler sees in one call.
"""
from __future__ import annotations

import contextlib
import gc
import time
from typing import TYPE_CHECKING, Callable, ContextManager, Iterable

import torch
from torch import nn

if TYPE_CHECKING:
    from .settings import LatencySettings

MIN_SAMPLES = 5  # with a time budget, never fewer samples than this
# torch.compile's CUDA graphs (cudagraph trees): the 1st call warms up, the 2nd records, replays start at the 3rd.
COMPILED_GRAPHS_MIN_WARMUP = 3


class CpuClock:
    def time(self, step: Callable[[], object]) -> float:
        start = time.perf_counter_ns()
        step()
        return (time.perf_counter_ns() - start) / 1e6


class CudaEventClock:
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
    min_time: float | None = None, *, after_warmup: Callable[[], None] | None = None,
    while_timing: ContextManager | None = None,
) -> list[float]:
    """Milliseconds per call of ``step``: ``warmup`` untimed calls, then ``iters`` timed ones, or timed ones until
    their sum reaches ``min_time`` seconds (at least MIN_SAMPLES).

    ``after_warmup`` runs between the two (memory peaks are reset there); the timed calls run inside
    ``while_timing`` (a clock sampler).
    """
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if after_warmup is not None:
        after_warmup()
    clock = CudaEventClock() if device.type == "cuda" else CpuClock()
    budget_ms = None if min_time is None else min_time * 1e3

    def more(samples: list[float]) -> bool:
        if iters is not None:
            return len(samples) < iters
        return len(samples) < MIN_SAMPLES or sum(samples) < budget_ms

    samples: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with while_timing or contextlib.nullcontext():
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


def cuda_graph_step(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """Capture one forward into a CUDA graph (after warm-up calls on a side stream, as capture requires)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            model(x)
    except BaseException:
        with contextlib.suppress(RuntimeError):  # must not hide the error being raised
            graph.reset()  # the half-built graph and its memory pool go now, not whenever the traceback does
        raise
    return graph.replay


def graph_launches(step: Callable[[], object]) -> int | None:
    """CUDA graph launches the profiler sees in one untimed call of ``step``; None when it sees no CUDA runtime
    call at all (no CUPTI), so nothing can be said."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
    except RuntimeError:
        return None
    return count_graph_launches(event.name for event in prof.events())


def count_graph_launches(event_names: Iterable[str]) -> int | None:
    """Graph launches (runtime ``cudaGraphLaunch`` or driver ``cuGraphLaunch``) among profiler event names; None
    when no name is CUDA's at all (runtime and driver calls, cuDNN and CUTLASS kernels all start with "cu")."""
    cuda = [name for name in event_names if name.startswith("cu")]
    if not cuda:
        return None
    return sum(name.startswith(("cudaGraphLaunch", "cuGraphLaunch")) for name in cuda)


def cudagraph_skips() -> int:
    """How many times inductor has declined to use CUDA graphs in this process (it logs why; the count is global)."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["cudagraph_skips"]


def make_step(model: nn.Module, x: torch.Tensor, settings: "LatencySettings") -> Callable[[], object]:
    """The callable that is timed: eager, compiled (CUDA graphs through mode="reduce-overhead"), or a graph replay.

    Call inside ``torch.inference_mode``. Compilation is per shape (``dynamic=False``), from a clean Dynamo cache,
    so a sweep never falls back to dynamic-shape kernels or hits the recompile limit.
    """
    if settings.compile:
        torch._dynamo.reset()
        compiled = torch.compile(model, mode="reduce-overhead" if settings.cuda_graphs else None, dynamic=False)
        return lambda: compiled(x)
    if settings.cuda_graphs:
        return cuda_graph_step(model, x)
    return lambda: model(x)
