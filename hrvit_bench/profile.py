"""`hrvit-bench profile`: where the time goes, beside where the FLOPs go, module by module or operator by operator.

Equal FLOPs are not equal time. This joins the meta engine's MACs per module (and per operator) with times
measured under the latency harness's rules: the same settings, warm-up, pinned threads, synchronised clocks,
inference mode and GC off.

**By module**, times come from forward hooks. Each hook writes a clock reading and nothing else: on CPU
``time.perf_counter_ns`` (or the thread's CPU clock, ``--cpu-time``), on CUDA a recorded CUDA event. The events are read once the forward has finished and the
device is synchronised, so no hook waits for the GPU. Only the modules that make up the rows are hooked: every
module to ``depth``, and below an uncalled container such as a ``ModuleList``, the first modules that are
called. A module's *own* time is its calls minus the hooked calls inside them. A row at ``depth`` sums the own
time of every hooked module in its subtree. A shallower module that has children gets a ``(self)`` row for its
own code, and ``(outside modules)`` is the forward less its root module. The rows therefore split the hooked
forward with no overlap. Three forwards run each round, in an order rotated every round: the plain one, the
rows-hooked one, and one with every called module hooked. The last gives the *small-ops view*: the share of
time in module code that does fewer than N MFLOPs per call. The **sum check** compares the rows' medians, added
up, with the plain forward's median from the same rounds, and prints how much of the gap is hook overhead.

**By operator**, torch.profiler times every aten operator called from Python (the outermost aten event; its
nested aten calls belong to it), on the CPU or, on CUDA, as its kernels' device time. Operator names join the
meta engine's (``aten::conv2d`` -> ``conv``, ``aten::linear`` -> ``linear``, ...); operators no counting rule
knows have no MACs, and the report names them. Profiled and plain forwards alternate, and the sum check covers
the profiler's overhead.

**Bytes moved** per module (the roofline's x axis) are counted on the meta engine with hooks: the parameters the
module reads, plus its input and output activations, each distinct tensor once per call, at the run's dtype.
It is a lower bound on the real traffic, the roofline's usual "compulsory traffic": re-reads, workspaces and
intermediate tensors inside the module are not counted.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from rich.table import Table
from torch import nn

from . import roofline, zoo
from .conventions import DEFAULT, Convention
from .cost import count_model
from .counting import MacCount, module_depth
from .environment import Environment
from .errors import UsageError, first_line
from .latency import LatencySettings, make_step, pinned, preflight, prepare
from .latency.settings import DTYPES
from .latency.sweep import out_of_memory_in, random_input
from .latency.timer import MIN_SAMPLES, CpuClock, CudaEventClock
from .output import fmt
from .roofline import Roofline

MARGIN = 0.05  # the rows' medians must add up to within 5% of the plain median
DEFAULT_SMALL_MFLOPS = 10.0
OUTSIDE_MODULES, OUTSIDE_OPERATORS = "(outside modules)", "(outside operators)"
SCOPE = "module: "  # record_function names that mark module calls in a profiled forward
KERNEL_LAUNCHES = ("cudaLaunch", "cuLaunch")  # CUDA runtime and driver launch calls, as the profiler names them

# The meta engine's operator names (fvcore's) for the aten operators Python calls: the outermost aten event of a
# call. Inner aten events (aten::convolution under aten::conv2d) map too, for a caller that starts deeper.
ATEN_TO_ENGINE = {
    **{f"aten::{name}": "conv" for name in (
        "conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d", "conv_transpose2d",
        "conv_transpose3d")},
    **{f"aten::{name}": "scaled_dot_product_attention" for name in (
        "scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention")},
    **{f"aten::{name}": name for name in (
        "linear", "matmul", "mm", "bmm", "addmm", "einsum", "batch_norm", "layer_norm", "group_norm",
        "instance_norm", "upsample_nearest2d", "upsample_bilinear2d", "adaptive_avg_pool2d", "grid_sampler")},
    "aten::grid_sampler_2d": "grid_sampler",
}

# What `report --latency` profiles: the pair whose equal FLOPs and unequal times this command was built for.
REPORT_MODELS = ("hrvit_b1_seg_ade20k", "mit_b1_seg_ade20k")
REPORT_DEPTH = 3
REPORT_ROUNDS = 5


# --------------------------------------------------------------------------------------------------------------
# Clocks: the latency harness's, plus stamps a hook can take without waiting for the device.


class CpuStamps(CpuClock):
    def stamp(self) -> int:
        return time.perf_counter_ns()

    def times(self, stamps: list) -> list[float]:
        """Milliseconds since the first stamp."""
        return [(s - stamps[0]) / 1e6 for s in stamps] if stamps else []


class CudaStamps(CudaEventClock):
    """Each stamp records a CUDA event (from a pool reused every forward) on the current stream; they are read
    after ``time`` has synchronised on the forward's end event, relative to its start event."""

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


# --------------------------------------------------------------------------------------------------------------
# Which modules make up the rows, and what each costs on the meta engine.


def _ancestors(name: str) -> list[str]:
    """'a.b.c' -> ['', 'a', 'a.b']."""
    parts = name.split(".") if name else []
    return [".".join(parts[:i]) for i in range(len(parts))]


@dataclass(frozen=True)
class RowPlan:
    """The rows of a module table at ``depth``: each module at that depth ("module", its whole subtree), each
    shallower leaf ("module") and each shallower module with children ("self", its own code only). Every module
    name falls into exactly one row. ``hooked``: the modules the rows pass times."""

    depth: int
    rows: dict[str, str]  # row name -> "module" or "self", in the model's module order
    hooked: frozenset[str]

    @classmethod
    def build(cls, names: list[str], called: set[str], depth: int) -> "RowPlan":
        parents = {_ancestors(n)[-1] for n in names if n}
        rows = {}
        for n in names:
            d = module_depth(n)
            if d == depth or (d < depth and n not in parents):
                rows[n] = "module"
            elif d < depth:
                rows[n] = "self"
        hooked = frozenset(n for n in called if module_depth(n) <= depth or not any(
            a in called for a in _ancestors(n)[depth:]))
        return cls(depth, rows, hooked)

    def row_of(self, module: str) -> str:
        return ".".join(module.split(".")[: self.depth]) if module_depth(module) > self.depth else module

    def members(self) -> dict[str, list[str]]:
        """Row -> the hooked modules whose own time it sums."""
        out = defaultdict(list)
        for m in self.hooked:
            out[self.row_of(m)].append(m)
        return dict(out)


def _tensor_bytes(value, itemsize: int, seen: set[int]) -> int:
    """Bytes of every distinct tensor in a nested structure; floating tensors at the run's ``itemsize``."""
    if isinstance(value, torch.Tensor):
        if id(value) in seen:
            return 0
        seen.add(id(value))
        return value.numel() * (itemsize if value.is_floating_point() else value.element_size())
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v, itemsize, seen) for v in value)
    return 0


@dataclass
class ModuleCosts:
    """Per module, from one forward on the meta engine: calls, MACs (rolled up, fvcore-style) and bytes moved."""

    count: MacCount
    names: list[str]  # every module, in the model's order
    calls: dict[str, int]  # module -> calls per forward
    bytes: dict[str, int]  # module -> parameters read + input and output activations, per forward
    children: dict[str, list[str]] = field(init=False)

    def __post_init__(self):
        self.children = defaultdict(list)
        for n in self.names:
            if n:
                self.children[_ancestors(n)[-1]].append(n)

    @property
    def called(self) -> set[str]:
        return set(self.calls)

    def macs(self, module: str, convention: Convention) -> int:
        """MACs of the module's subtree, of the operators the convention counts."""
        return _macs(self.count.by_module.get(module, {}), convention)

    def own_macs(self, module: str, convention: Convention) -> int:
        """MACs of the module's own code: its subtree less its direct children's."""
        return self.macs(module, convention) - sum(self.macs(c, convention) for c in self.children.get(module, ()))

    @classmethod
    def measure(cls, meta_model: nn.Module, shape: tuple[int, ...], name: str, dtype: str) -> "ModuleCosts":
        itemsize = DTYPES[dtype].itemsize
        names = {id(m): n for n, m in meta_model.named_modules()}
        calls, activations = Counter(), Counter()

        def record(module, args, kwargs, output):
            calls[names[id(module)]] += 1
            activations[names[id(module)]] += _tensor_bytes((args, kwargs, output), itemsize, set())

        handles = [m.register_forward_hook(record, with_kwargs=True) for m in meta_model.modules()]
        try:
            count = count_model(meta_model, shape, "meta", name)
        finally:
            for h in handles:
                h.remove()
        unread = set(count.unused_parameter_names)
        modules = dict(meta_model.named_modules())
        moved = {}
        for n, n_calls in calls.items():
            weights = sum(p.numel() for pn, p in modules[n].named_parameters(prefix=n) if pn not in unread)
            moved[n] = activations[n] + n_calls * weights * itemsize
        return cls(count, list(modules), dict(calls), moved)


def _macs(ops: dict[str, int], convention: Convention) -> int:
    """MACs (never 2 x MACs) of the operators the convention includes: rates are computed from MACs."""
    return sum(v for op, v in ops.items() if convention.includes(op))


# --------------------------------------------------------------------------------------------------------------
# Timed passes: plain, hooked, profiled; each returns one forward's sample.


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


def run_rounds(passes: dict[str, Callable[[], object]], settings: LatencySettings) -> dict[str, list]:
    """Every pass once per round, in an order rotated every round, so a change of load falls on all of them alike.

    ``passes["plain"]`` returns milliseconds; the warm-up is ``settings.warmup`` plain calls and one call of each
    other pass. Rounds: ``settings.iters``, or until the plain calls add up to ``settings.min_time`` (at least
    MIN_SAMPLES rounds). GC is off while timing.
    """
    for _ in range(settings.warmup):
        passes["plain"]()
    for name, run in passes.items():
        if name != "plain":
            run()
    order = list(passes)
    results: dict[str, list] = {name: [] for name in order}

    def more() -> bool:
        done = len(results["plain"])
        if settings.iters is not None:
            return done < settings.iters
        return done < MIN_SAMPLES or sum(results["plain"]) < settings.min_time * 1e3

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while more():
            shift = len(results["plain"]) % len(order)
            for name in order[shift:] + order[:shift]:
                results[name].append(passes[name]())
    finally:
        if gc_was_enabled:
            gc.enable()
    return results


# --------------------------------------------------------------------------------------------------------------
# The results.


@dataclass
class ProfileRow:
    name: str  # a module, "module (self)", an operator, or one of the OUTSIDE rows
    kind: str  # "module", "self", "operator" or "outside"
    ms: float  # median time per forward
    # Median per call: a module's whole call, a "self" row's own code, a container's (ModuleList's) members' calls.
    ms_per_call: float | None = None
    calls: float | None = None  # per forward
    macs: int | None = None  # per forward, of the operators the convention counts; None: no counting rule
    params: int | None = None
    bytes: int | None = None  # parameters read + input and output activations, per forward
    ops: int | None = None  # aten operators called from Python, per forward (one profiled forward)
    share: float = 0.0  # of the rows' summed medians

    @property
    def gflops(self) -> float | None:
        """Achieved GFLOP/s: 2 x MACs over the median time."""
        return 2 * self.macs / (self.ms * 1e-3) / 1e9 if self.macs and self.ms > 0 else None

    @property
    def intensity(self) -> float | None:
        """FLOPs per byte moved (2 x MACs / bytes)."""
        return 2 * self.macs / self.bytes if self.macs and self.bytes else None

    def to_dict(self) -> dict:
        return {**self.__dict__, "gflops_per_s": self.gflops, "flop_per_byte": self.intensity}


@dataclass
class SumCheck:
    """Do the rows account for the plain forward? Their medians, added up, against the plain median of the same
    rounds; and the part of any gap that is the instrument's own cost."""

    instrument: str  # "hooked" or "profiled"
    plain_ms: float
    instrumented_ms: float  # median of the instrumented forwards
    parts_ms: dict[str, float]  # row kind -> the sum of those rows' medians
    on_gpu: bool = False
    margin: float = MARGIN
    plain_samples_ms: list[float] = field(default_factory=list)  # per round, for a check that fails
    instrumented_samples_ms: list[float] = field(default_factory=list)

    @property
    def rows_ms(self) -> float:
        return sum(self.parts_ms.values())

    @property
    def agreement(self) -> float:
        return self.rows_ms / self.plain_ms

    @property
    def overhead(self) -> float:
        return self.instrumented_ms / self.plain_ms - 1

    @property
    def ok(self) -> bool:
        return abs(self.agreement - 1) <= self.margin

    @property
    def spread(self) -> float | None:
        """The plain forwards' own spread, IQR / median: noise the check cannot tell from the instrument's cost."""
        if len(self.plain_samples_ms) < 4:
            return None
        q1, _, q3 = statistics.quantiles(self.plain_samples_ms, n=4)
        return (q3 - q1) / self.plain_ms

    def why(self) -> str:
        """For a check outside the margin: noise, or the instrument's cost."""
        head = f"the rows sum to {100 * self.agreement:.1f}% of the plain median, outside ±{100 * self.margin:g}%"
        if self.spread is None:
            return f"{head}, and too few rounds to tell noise from the instrument's cost: time more rounds (--iters)"
        if self.spread >= self.margin:
            return (f"{head}; the plain forwards alone spread by {100 * self.spread:.1f}% (IQR / median): the machine "
                    "is noisy; time more rounds (--iters) or on a quieter machine")
        return (f"{head}; the plain forwards spread by only {100 * self.spread:.1f}%: the {self.instrument} forward "
                f"costs {100 * self.overhead:+.1f}%, more than the margin allows")

    def describe(self, depth: int | None = None) -> str:
        verdict = "ok" if self.ok else "OUTSIDE the margin"
        head = (f"Check: the rows sum to {100 * self.agreement:.1f}% of the plain median ({self.plain_ms:.2f} ms; "
                f"margin ±{100 * self.margin:g}%: {verdict}). They are {100 * self.rows_ms / self.instrumented_ms:.1f}"
                f"% of the {self.instrument} forward, which is {self.instrumented_ms / self.plain_ms:.3f}x the plain "
                f"median ({'hook' if self.instrument == 'hooked' else 'profiler'} overhead "
                f"{100 * self.overhead:+.1f}%).")
        share = {kind: 100 * ms / self.rows_ms for kind, ms in self.parts_ms.items()}
        if self.instrument == "hooked":
            return head + (f" Modules at depth {depth} (and shallower leaves) hold {share.get('module', 0):.1f}%, "
                           f"their parents' own code {share.get('self', 0):.1f}%, code outside every module "
                           f"{share.get('outside', 0):.1f}%.")
        return head + (f" Operators hold {share.get('operator', 0):.1f}%, the time between them (Python, "
                       f"dispatch{', GPU idle' if self.on_gpu else ''}) "
                       f"{share.get('outside', 0):.1f}%.")

    def to_dict(self) -> dict:
        return {**self.__dict__, "rows_ms": self.rows_ms, "agreement": self.agreement, "overhead": self.overhead,
                "ok": self.ok, "plain_spread": self.spread}


@dataclass
class SmallOps:
    """Time in module code that does fewer than ``threshold_mflops`` MFLOPs (2 x MACs) per call, with every
    called module hooked: each module's own code is one piece."""

    threshold_mflops: float
    share: float  # median over forwards: own time of the small pieces / own time of all
    small_calls: int  # per forward
    calls: int
    overhead: float  # every-module-hooked forward over the plain median, less 1

    def describe(self) -> str:
        return (f"Small ops: {100 * self.share:.1f}% of the time is module code doing under "
                f"{self.threshold_mflops:g} MFLOPs per call ({self.small_calls:,} of {self.calls:,} module calls "
                f"per forward; every module hooked: overhead {100 * self.overhead:+.1f}%).")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class OperatorCalls:
    top_level: int  # aten operators called from Python, per forward: each pays the dispatcher once
    aten_events: int  # every aten event, nested calls included
    kernel_launches: int | None  # CUDA runtime/driver launch calls, per forward (GPU only)

    def describe(self, plain_ms: float) -> str:
        text = (f"{self.top_level:,} aten operators from Python ({self.top_level / plain_ms:.1f} per ms; "
                f"{self.aten_events:,} aten events in all)")
        return text + (f", {self.kernel_launches:,} kernel launches" if self.kernel_launches is not None else "")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


BYTES_RULE = ("parameters read + input and output activations, each distinct tensor once per call, at the run's "
              "dtype (meta engine): a lower bound on traffic")


@dataclass
class ProfileReport:
    """One model's time and FLOPs side by side, by module to ``depth`` or by operator, with the sum check."""

    model: str
    input_shape: tuple[int, ...]
    by: str
    depth: int
    convention: Convention
    settings: LatencySettings
    environment: Environment
    clock: str = "wall"  # a CLOCKS key
    total_macs: int = 0  # the whole forward, of the operators the convention counts
    rows: list[ProfileRow] = field(default_factory=list)
    check: SumCheck | None = None
    small_ops: SmallOps | None = None
    operator_calls: OperatorCalls | None = None
    roofline: Roofline | None = None
    rounds: int = 0
    never_called: list[str] = field(default_factory=list)  # module rows whose forward never ran
    no_macs: list[str] = field(default_factory=list)  # operator view: operators no counting rule covers
    macs_not_joined: dict[str, int] = field(default_factory=dict)  # engine operator -> MACs no timed operator took
    error: str | None = None  # out of memory
    warnings: list[str] = field(default_factory=list)

    def roofline_rows(self) -> list[ProfileRow]:
        """The module rows that are points on a roofline: FLOPs, bytes and time all known."""
        return [r for r in self.rows if r.kind == "module" and r.intensity and r.gflops]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "by": self.by,
            "depth": self.depth if self.by == "module" else None,
            "convention": self.convention.name,
            "settings": self.settings.to_dict(),
            "environment": self.environment.to_dict(),
            "rounds": self.rounds,
            "clock": CLOCKS[self.clock],
            "total_macs": self.total_macs,
            "gflops_per_s": self.gflops,
            "rows": [r.to_dict() for r in self.rows],
            "check": self.check.to_dict() if self.check else None,
            "small_ops": self.small_ops.to_dict() if self.small_ops else None,
            "operator_calls": self.operator_calls.to_dict() if self.operator_calls else None,
            "roofline": self.roofline.to_dict() if self.roofline else None,
            "bytes_rule": BYTES_RULE,
            "never_called": self.never_called,
            "operators_without_macs": self.no_macs,
            "macs_not_joined": self.macs_not_joined,
            "error": self.error,
            "warnings": self.warnings,
        }

    def csv_rows(self) -> list[dict]:
        base = {"model": self.model, "input": zoo.format_size(self.input_shape), "device": self.settings.device,
                "dtype": self.settings.dtype, "threads": self.settings.threads, "by": self.by,
                "depth": self.depth if self.by == "module" else None, "convention": self.convention.name}
        if self.error:
            return [{**base, "error": self.error}]
        return [{**base, **r.to_dict()} for r in self.rows]

    def _count_header(self) -> str:
        return "GMACs" if self.convention.unit == "macs" else "GFLOPs"

    def _count_cell(self, macs: int | None) -> str:
        if macs is None:
            return "-"
        raw = macs * (2 if self.convention.unit == "flops" else 1)
        return f"{self.convention.giga_value(raw):.3f}"

    @property
    def gflops(self) -> float | None:
        """The whole forward's achieved GFLOP/s, at the plain median."""
        return 2 * self.total_macs / (self.check.plain_ms * 1e-3) / 1e9 if self.check else None

    def headline(self) -> str:
        """The numbers to set beside another model's: time, work, rate, operators, small ops."""
        text = (f"Forward: {self.check.plain_ms:.1f} ms (plain median), {self._count_cell(self.total_macs)} "
                f"{self._count_header()}, {self.gflops:.1f} GFLOP/s")
        if self.operator_calls:
            text += f"; {self.operator_calls.describe(self.check.plain_ms)}"
        if self.small_ops:
            text += f"; {100 * self.small_ops.share:.1f}% of the time in small ops"
        return text + "."

    def _caption(self) -> str:
        lines = [self.headline(), self.check.describe(self.depth)] if self.check else []
        lines += [self.small_ops.describe()] if self.small_ops else []
        lines.append(f"{self.environment.summary()}; {self.rounds} rounds, medians, {CLOCKS[self.clock]}."
                     + (f" {self.roofline.describe()}." if self.roofline else ""))
        lines.append(f"{self._count_header()}: {self.convention.label}. GFLOP/s: 2 x MACs / median time.")
        if self.by == "module":
            lines.append(f"FLOP/B: 2 x MACs / bytes moved, {BYTES_RULE}. (self): a module's own code, outside its "
                         "submodules. ops: aten operators called from Python, per forward.")
        if self.no_macs:
            lines.append(f"No MACs (no counting rule): {', '.join(self.no_macs)}.")
        if self.macs_not_joined:
            lines.append("Warning: MACs no timed operator took: "
                         + ", ".join(f"{op} {n:,}" for op, n in self.macs_not_joined.items()) + ".")
        if self.never_called:
            lines.append(f"Never called: {', '.join(self.never_called)}.")
        lines += [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def tables(self) -> list[Table]:
        where = f"{self.model} @ {zoo.format_size(self.input_shape)}"
        if self.error:
            table = Table(title=f"{where}: out of memory on {self.settings.device}")
            table.add_column("error")
            table.add_row(self.error)
            return [table]
        module_view = self.by == "module"
        rows_are = f"module to depth {self.depth}" if module_view else "operator"
        title = f"{where}: where the time goes, by {rows_are}"
        table = Table(title=title, caption=self._caption(), caption_justify="left")
        columns = [self.by, "share", "ms", "ms/call" if module_view else "µs/call", "calls", self._count_header(),
                   "GFLOP/s"] + (["params", "FLOP/B", "ops"] if module_view else [])
        for col in columns:
            table.add_column(col, justify="left" if col == self.by else "right", no_wrap=True)
        for r in self.rows:
            per_call = None if r.ms_per_call is None else r.ms_per_call * (1 if module_view else 1e3)
            cells = [r.name, f"{100 * r.share:.1f}%", _ms(r.ms), fmt(per_call, ".3f" if module_view else ".1f"),
                     _calls(r.calls), self._count_cell(r.macs), fmt(r.gflops, ".1f")]
            if module_view:
                cells += [_compact(r.params), fmt(r.intensity, ".1f"), fmt(r.ops, ",")]
            table.add_row(*cells, style="dim" if r.kind == "outside" else None)
        return [table]


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _calls(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _compact(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _median(values) -> float:
    return statistics.median(values) if values else 0.0


def _finish(rows: list[ProfileRow]) -> list[ProfileRow]:
    """Shares of the rows' summed medians, largest time first."""
    total = sum(r.ms for r in rows) or 1.0
    for r in rows:
        r.share = r.ms / total
    return sorted(rows, key=lambda r: -r.ms)


# --------------------------------------------------------------------------------------------------------------
# Joining times with counts.


def module_rows(plan: RowPlan, samples: list[HookedSample], costs: ModuleCosts, convention: Convention,
                params: dict[str, int], ops: dict[str, int] | None = None) -> tuple[list[ProfileRow], list[str]]:
    """The rows of the module view, and the module rows whose forward never ran."""
    members = plan.members()
    rows, never_called = [], []
    for name, kind in plan.rows.items():
        timed = members.get(name)
        if not timed:
            if kind == "module":
                never_called.append(name)
            continue
        per_forward = _median([sum(s.own_ms.get(m, 0.0) for m in timed) for s in samples])
        # A container that is never called itself (a ModuleList): the calls of the modules it holds.
        calls = [c for s in samples for m in timed
                 for c in (s.call_own_ms if kind == "self" else s.call_ms).get(m, ())]
        rows.append(ProfileRow(
            name=(f"{name} (self)" if name else "(model self)") if kind == "self" else (name or "(model)"),
            kind=kind, ms=per_forward, ms_per_call=_median(calls), calls=len(calls) / len(samples),
            macs=costs.own_macs(name, convention) if kind == "self" else costs.macs(name, convention),
            params=params.get(name, 0),
            bytes=sum(costs.bytes[m] for m in timed) if kind == "module" else None,
            ops=ops.get(name, 0) if ops is not None else None,
        ))
    rows.append(ProfileRow(OUTSIDE_MODULES, "outside", _median([s.outside_ms for s in samples]),
                           ops=ops.get(OUTSIDE_MODULES, 0) if ops is not None else None))
    return _finish(rows), never_called


def params_by_row(model: nn.Module, plan: RowPlan) -> dict[str, int]:
    """Each parameter under the row of the module that owns it (a shared one once, under its first owner)."""
    out: Counter = Counter()
    for pname, p in model.named_parameters():
        out[plan.row_of(pname.rpartition(".")[0])] += p.numel()
    return dict(out)


def ops_by_row(plan: RowPlan, sample: ProfiledSample) -> dict[str, int]:
    """Top-level aten operators per row, from a forward whose hooked modules were record_function scopes."""
    return dict(Counter(OUTSIDE_MODULES if scope is None else plan.row_of(scope) for scope in sample.scopes()))


def small_ops(samples: list[HookedSample], plain_ms: float, costs: ModuleCosts, convention: Convention,
              threshold_mflops: float) -> SmallOps:
    per_call = {m: costs.own_macs(m, convention) / n for m, n in costs.calls.items()}
    small = {m for m, macs in per_call.items() if 2 * macs < threshold_mflops * 1e6}
    shares = [sum(ms for m, ms in s.own_ms.items() if m in small) / (sum(s.own_ms.values()) or 1.0)
              for s in samples]
    return SmallOps(threshold_mflops, _median(shares), sum(costs.calls[m] for m in small),
                    sum(costs.calls.values()), _median([s.total_ms for s in samples]) / plain_ms - 1)


def operator_rows(samples: list[ProfiledSample], count: MacCount, convention: Convention
                  ) -> tuple[list[ProfileRow], list[str], dict[str, int]]:
    """Rows by operator (the engine's name where a counting rule joins, else the aten name), the operators
    without MACs, and the engine's operators whose MACs no timed operator took."""
    def key(event: OpEvent) -> str:
        return ATEN_TO_ENGINE.get(event.name, event.name.removeprefix("aten::"))

    per_forward: list[Counter] = []
    per_call: dict[str, list[float]] = defaultdict(list)
    outside = []
    for s in samples:
        times: Counter = Counter()
        for e in s.top_level_ops():
            times[key(e)] += s.op_ms(e)
            per_call[key(e)].append(s.op_ms(e))
        per_forward.append(times)
        outside.append(s.total_ms - sum(times.values()))
    engine = {op: macs for op, macs in count.by_operator.items() if convention.includes(op) and macs}
    rows = [ProfileRow(op, "operator", _median([t.get(op, 0.0) for t in per_forward]),
                       ms_per_call=_median(times), calls=len(times) / len(samples), macs=engine.get(op))
            for op, times in per_call.items()]
    rows.append(ProfileRow(OUTSIDE_OPERATORS, "outside", _median(outside)))
    no_macs = sorted(op for op in per_call if op not in engine)
    return _finish(rows), no_macs, {op: macs for op, macs in engine.items() if op not in per_call}


# --------------------------------------------------------------------------------------------------------------
# The driver.


def _profile(info, shape, settings: LatencySettings, env: Environment, roof: Roofline, by: str, depth: int,
             convention: Convention, small_mflops: float, clock_name: str, warnings: list[str]) -> ProfileReport:
    report = ProfileReport(info.name, shape, by, depth, convention, settings, env, roofline=roof,
                           clock=clock_name, warnings=list(warnings))
    costs = ModuleCosts.measure(zoo.build(info.name, device="meta"), shape, info.name, settings.dtype)
    report.total_macs = costs.macs("", convention)
    device = settings.torch_device
    model = prepare(zoo.build(info.name, device=str(device)), settings)
    clock = stamps_for(device, clock_name)
    x = step = None
    try:
        with torch.inference_mode():
            x = random_input(shape, settings)
            step = make_step(model, x, settings)
            plain = functools.partial(clock.time, step)
            if by == "module":
                _profile_modules(report, model, costs, clock, step, plain, small_mflops)
            else:
                profiled = ProfiledPass(step, clock, device)
                results = run_rounds({"plain": plain, "profiled": profiled}, settings)
                report.rows, report.no_macs, report.macs_not_joined = operator_rows(
                    results["profiled"], costs.count, convention)
                report.check = _check("profiled", results["plain"], [s.total_ms for s in results["profiled"]],
                                      report.rows, device.type == "cuda")
                report.operator_calls = results["profiled"][-1].operator_calls()
                report.rounds = len(results["plain"])
    except Exception as exc:
        cause = out_of_memory_in(exc)
        if cause is None:
            raise
        report.error = first_line(cause)
    del x, step, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if report.check is not None and not report.check.ok:
        report.warnings.append(report.check.why())
    return report


def _profile_modules(report: ProfileReport, model: nn.Module, costs: ModuleCosts, clock, step, plain,
                     small_mflops: float) -> None:
    plan = RowPlan.build(costs.names, costs.called, report.depth)
    rows_pass = HookedPass(model, set(plan.hooked), clock, step)
    passes = {"plain": plain, "rows": rows_pass}
    if plan.hooked != costs.called:
        passes["leaves"] = HookedPass(model, costs.called, clock, step)
    results = run_rounds(passes, report.settings)
    modules = dict(model.named_modules())
    profiled = ProfiledPass(step, clock, report.settings.torch_device, {m: modules[m] for m in plan.hooked})()
    report.rows, report.never_called = module_rows(plan, results["rows"], costs, report.convention,
                                                   params_by_row(model, plan), ops_by_row(plan, profiled))
    plain_ms = _median(results["plain"])
    report.check = _check("hooked", results["plain"], [s.total_ms for s in results["rows"]], report.rows,
                          report.settings.torch_device.type == "cuda")
    report.small_ops = small_ops(results.get("leaves", results["rows"]), plain_ms, costs, report.convention,
                                 small_mflops)
    report.operator_calls = profiled.operator_calls()
    report.rounds = len(results["plain"])


def _check(instrument: str, plain: list[float], instrumented: list[float], rows: list[ProfileRow],
           on_gpu: bool) -> SumCheck:
    parts: Counter = Counter()
    for r in rows:
        parts[r.kind] += r.ms
    return SumCheck(instrument, _median(plain), _median(instrumented), dict(parts), on_gpu,
                    plain_samples_ms=list(plain), instrumented_samples_ms=list(instrumented))


def profile_models(
    names: list[str], size: tuple[int, int] | None, batch_size: int, settings: LatencySettings, *,
    by: str = "module", depth: int = 2, convention: Convention = DEFAULT,
    small_mflops: float | None = None, clock: str = "wall", progress: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[ProfileReport]:
    """Profile each model on one input; the roofs are measured once, first, on the same pinned threads.
    ``small_mflops``: the small-ops view's threshold (None: DEFAULT_SMALL_MFLOPS). ``clock="thread"``: the
    thread's CPU time, on a CPU at one thread only."""
    small_mflops = DEFAULT_SMALL_MFLOPS if small_mflops is None else small_mflops
    if clock == "thread" and (settings.torch_device.type != "cpu" or settings.threads != 1):
        raise UsageError("--cpu-time needs --device cpu and --threads 1: a thread's CPU clock sees only its own "
                         "work")
    warnings = preflight(settings)
    plans = [(info, zoo.input_shape(info, size, batch_size)) for info in map(zoo.info, names)]
    progress = progress or (lambda label: None)
    reports = []
    with pinned(settings):
        env = Environment.capture(settings.torch_device, settings.dtype)
        for message in warnings:
            if warn:
                warn(message)
        progress("measuring the roofs (matmul, copy)")
        roof = roofline.measure(settings, env)
        for info, shape in plans:
            progress(f"profiling {info.name} {zoo.format_size(shape)}")
            reports.append(_profile(info, shape, settings, env, roof, by, depth, convention, small_mflops, clock,
                                    warnings))
    return reports


def profile_for_report(settings: LatencySettings, progress: Callable[[str], None] | None = None
                       ) -> list[ProfileReport]:
    """What `report --latency` adds: REPORT_MODELS by module at REPORT_DEPTH, at their own input, in at most
    REPORT_ROUNDS rounds on the latency rows' device and threads (the roofline plot's points)."""
    rounds = min(settings.iters, REPORT_ROUNDS) if settings.iters else REPORT_ROUNDS
    return profile_models(list(REPORT_MODELS), None, 1, replace(settings, iters=rounds, min_time=None),
                          depth=REPORT_DEPTH, progress=progress)
