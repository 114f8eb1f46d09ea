"""Timed passes of one forward: hooked (a clock stamp at each module's entry and exit) and profiled
(torch.profiler), each returning one forward's sample."""
from __future__ import annotations

import contextlib
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .results import OperatorCalls

SCOPE = "module: "  # record_function names that mark module calls in a profiled forward
KERNEL_LAUNCHES = ("cudaLaunch", "cuLaunch")  # CUDA runtime and driver launch calls, as the profiler names them


@dataclass
class HookedSample:
    """One hooked forward: its time, and per hooked module the time of each call and of its own code."""

    total_ms: float
    own_ms: dict[str, float]  # per forward: calls less the hooked calls inside them
    call_ms: dict[str, list[float]]
    call_own_ms: dict[str, list[float]]

    @classmethod
    def from_trace(cls, total_ms: float, trace: list[tuple[str, bool, float]]) -> "HookedSample":
        """``trace``: (module, entering, ms) in call order, as the hooks wrote it."""
        own, calls, calls_own = defaultdict(float), defaultdict(list), defaultdict(list)
        stack: list[list] = []  # [module, start, time of hooked calls inside]
        for module, entering, t in trace:
            if entering:
                stack.append([module, t, 0.0])
                continue
            module, start, inside = stack.pop()
            duration = t - start
            own[module] += duration - inside
            calls[module].append(duration)
            calls_own[module].append(duration - inside)
            if stack:
                stack[-1][2] += duration
        return cls(total_ms, dict(own), dict(calls), dict(calls_own))

    @property
    def outside_ms(self) -> float:
        return self.total_ms - sum(self.own_ms.values())


class HookedPass:
    """A forward with a clock stamp at the entry and exit of each given module; hooks live only for the call, so
    the other passes run without them."""

    def __init__(self, model: nn.Module, modules: set[str], clock, step: Callable[[], object]):
        self.targets = [(n, m) for n, m in model.named_modules() if n in modules]
        self.clock, self.step = clock, step

    def __call__(self) -> HookedSample:
        trace, stamp = [], self.clock.stamp
        handles = []
        for name, module in self.targets:
            handles.append(module.register_forward_pre_hook(
                lambda m, a, n=name: trace.append((n, True, stamp()))))
            handles.append(module.register_forward_hook(
                lambda m, a, o, n=name: trace.append((n, False, stamp())), always_call=True))
        try:
            total = self.clock.time(self.step)
        finally:
            for h in handles:
                h.remove()
        times = self.clock.times([s for _, _, s in trace])
        return HookedSample.from_trace(total, [(n, e, t) for (n, e, _), t in zip(trace, times)])


@dataclass
class OpEvent:
    """One CPU-side profiler event, with its parent's index."""

    name: str
    cpu_us: float
    device_us: float  # its kernels' device time, nested calls included; 0 without a GPU
    parent: int | None

    @classmethod
    def from_profiler(cls, function_events) -> list["OpEvent"]:
        from torch.autograd import DeviceType

        cpu = [e for e in function_events if e.device_type == DeviceType.CPU]
        index = {id(e): i for i, e in enumerate(cpu)}
        return [cls(e.name, e.cpu_time_total, e.device_time_total,
                    index.get(id(e.cpu_parent)) if e.cpu_parent is not None else None) for e in cpu]


@dataclass
class ProfiledSample:
    total_ms: float
    events: list[OpEvent]
    on_device: bool  # operator times are kernel time on the GPU

    def lineage(self, i: int):
        parent = self.events[i].parent
        while parent is not None:
            yield self.events[parent]
            parent = self.events[parent].parent

    def _top_level(self) -> list[int]:
        """The aten operators Python called: aten events with no aten event above them."""
        return [i for i, e in enumerate(self.events) if e.name.startswith("aten::") and not any(
            a.name.startswith("aten::") for a in self.lineage(i))]

    def top_level_ops(self) -> list[OpEvent]:
        return [self.events[i] for i in self._top_level()]

    def op_ms(self, event: OpEvent) -> float:
        return (event.device_us if self.on_device else event.cpu_us) / 1e3

    def scopes(self) -> list[str | None]:
        """For each top-level operator, the innermost module whose scope holds it (None: outside every module)."""
        return [next((a.name[len(SCOPE):] for a in self.lineage(i) if a.name.startswith(SCOPE)), None)
                for i in self._top_level()]

    def operator_calls(self) -> "OperatorCalls":
        return OperatorCalls(
            top_level=len(self.top_level_ops()),
            aten_events=sum(e.name.startswith("aten::") for e in self.events),
            kernel_launches=sum(e.name.startswith(KERNEL_LAUNCHES) for e in self.events) if self.on_device else None,
        )


@contextlib.contextmanager
def _native_stderr_silenced():
    """Kineto prints a line to file descriptor 2 at every profiler start and stop; a profile per round would
    bury the progress bar and any warning under them."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class ProfiledPass:
    """A forward under torch.profiler (CPU, and CUDA on a GPU); with ``scopes``, each of those modules' calls is
    a ``record_function`` range named SCOPE + module, so operators can be traced to modules."""

    def __init__(self, step: Callable[[], object], clock, device: torch.device,
                 scopes: dict[str, nn.Module] | None = None):
        self.step, self.clock, self.device, self.scopes = step, clock, device, scopes or {}

    def __call__(self) -> ProfiledSample:
        from torch.autograd.profiler import record_function
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        open_ranges, handles = [], []

        def enter(name):
            def hook(module, args):
                open_ranges.append(record_function(SCOPE + name))
                open_ranges[-1].__enter__()
            return hook

        def leave(module, args, output):
            open_ranges.pop().__exit__(None, None, None)

        for name, module in self.scopes.items():
            handles += [module.register_forward_pre_hook(enter(name)),
                        module.register_forward_hook(leave, always_call=True)]
        profiler = profile(activities=activities)
        try:
            with _native_stderr_silenced():
                profiler.start()
            try:
                total = self.clock.time(self.step)
            finally:
                with _native_stderr_silenced():
                    profiler.stop()
        finally:
            for h in handles:
                h.remove()
        return ProfiledSample(total, OpEvent.from_profiler(profiler.events()), self.device.type == "cuda")
