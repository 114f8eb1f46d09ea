"""The timing loop: warm-up, then one sample per call, on a clock that sees the device finish.

One rounds loop (``timed_rounds``) times everything: the sweep's calls, the interleaved A/B's rounds, profile's
passes and the roofs. Each round runs every pass once, in an order that changes every round. Profile's hooks take
stamps (``CpuStamps``, ``CudaStamps``, ``ThreadTimeStamps``) that never wait for the device.

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


def clock_for(device: torch.device) -> CpuClock | CudaEventClock:
    return CudaEventClock() if device.type == "cuda" else CpuClock()


# Stamps a hook can take inside a timed call without waiting for the device (profile's per-module times).


class CpuStamps(CpuClock):
    def stamp(self) -> int:
        return time.perf_counter_ns()

    def times(self, stamps: list) -> list[float]:
        """Milliseconds since the first stamp."""
        return [(s - stamps[0]) / 1e6 for s in stamps] if stamps else []


class CudaStamps(CudaEventClock):
    """Each stamp records a CUDA event (from a pool reused every call) on the current stream; they are read after
    ``time`` has synchronised on the call's end event, relative to its start event."""

    def __init__(self):
        super().__init__()
        self.pool: list = []
        self.used = 0

    def time(self, step: Callable[[], object]) -> float:
        self.used = 0
        return super().time(step)

    def stamp(self):
        if self.used == len(self.pool):
            self.pool.append(torch.cuda.Event(enable_timing=True))
        event = self.pool[self.used]
        self.used += 1
        event.record()
        return event

    def times(self, stamps: list) -> list[float]:
        return [self.start.elapsed_time(event) for event in stamps]


class ThreadTimeStamps(CpuStamps):
    """The calling thread's CPU clock (``time.thread_time_ns``), for one thread on a shared machine: it leaves out
    the time the OS gives to other processes, and so also any wait; it is not a latency."""

    def time(self, step: Callable[[], object]) -> float:
        start = time.thread_time_ns()
        step()
        return (time.thread_time_ns() - start) / 1e6

    def stamp(self) -> int:
        return time.thread_time_ns()


CLOCKS = {"wall": "wall clock (CUDA events on a GPU)", "thread": "the thread's CPU time"}


def stamps_for(device: torch.device, clock: str = "wall") -> CpuStamps | CudaStamps:
    if device.type == "cuda":
        return CudaStamps()
    return ThreadTimeStamps() if clock == "thread" else CpuStamps()


# The one rounds loop: the sweep's calls, the interleaved A/B, profile's passes and the roofs all time through it.


def timed_rounds(
    passes: dict[str, Callable[[], object]], *, iters: int | None = None, min_time: float | None = None,
    min_rounds: int = MIN_SAMPLES, budget_on: Iterable[str] | None = None, order: str = "rotate",
    within: ContextManager | None = None, after_round: Callable[[int], None] | None = None,
) -> dict[str, list]:
    """Every pass once per round, in an order that changes every round, so a change of load falls on all alike:
    "rotate" (A B C, B C A, ...) or "flip" (A B, B A, ...). Rounds: ``iters``, or until every pass named in
    ``budget_on`` (default: all; each returns milliseconds) has taken ``min_time`` seconds in all, after at least
    ``min_rounds``. Garbage collection is off, and ``within`` (a clock sampler) entered, for the whole loop.
    """
    names = list(passes)
    results: dict[str, list] = {name: [] for name in names}
    budgeted = names if budget_on is None else list(budget_on)

    def more() -> bool:
        done = len(results[names[0]])
        if iters is not None:
            return done < iters
        return done < min_rounds or min(sum(results[n]) for n in budgeted) < min_time * 1e3

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with within or contextlib.nullcontext():
            while more():
                done = len(results[names[0]])
                if order == "flip":
                    turn = names if done % 2 == 0 else names[::-1]
                else:
                    turn = names[done % len(names):] + names[:done % len(names)]
                for name in turn:
                    results[name].append(passes[name]())
                if after_round is not None:
                    after_round(done + 1)
    finally:
        if gc_was_enabled:
            gc.enable()
    return results


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
    clock = clock_for(device)
    return timed_rounds({"call": lambda: clock.time(step)}, iters=iters, min_time=min_time,
                        within=while_timing)["call"]


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
