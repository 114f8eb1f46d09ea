"""The driver: profile each model on one input, after the roofs, in one timed session."""
from __future__ import annotations

import functools
import gc
from collections import Counter
from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from .. import roofline, zoo
from ..conventions import DEFAULT, Convention
from ..environment import Environment
from ..errors import UsageError, first_line
from ..latency import LatencySettings, make_step, prepare, timed_session
from ..latency.sweep import out_of_memory_in, random_input
from ..latency.timer import MIN_SAMPLES, stamps_for, timed_rounds
from ..roofline import Roofline
from .costs import ModuleCosts, RowPlan
from .joins import median, module_rows, operator_rows, ops_by_row, params_by_row, small_ops
from .passes import HookedPass, ProfiledPass
from .results import ProfileReport, ProfileRow, SumCheck

DEFAULT_SMALL_MFLOPS = 10.0
# What `report --latency` profiles: the pair whose equal FLOPs and unequal times this command was built for.
REPORT_MODELS = ("hrvit_b1_seg_ade20k", "mit_b1_seg_ade20k")
REPORT_DEPTH = 3
REPORT_ROUNDS = 5


def _profile(info, shape, costs: ModuleCosts, settings: LatencySettings, env: Environment, roof: Roofline, by: str,
             depth: int, convention: Convention, small_mflops: float, clock_name: str,
             warnings: list[str]) -> ProfileReport:
    report = ProfileReport(info.name, shape, by, depth, convention, settings, env, roofline=roof,
                           clock=clock_name, warnings=list(warnings))
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
                results = _rounds({"plain": plain, "profiled": profiled}, settings)
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
    results = _rounds(passes, report.settings)
    modules = dict(model.named_modules())
    profiled = ProfiledPass(step, clock, report.settings.torch_device, {m: modules[m] for m in plan.hooked})()
    report.rows, report.never_called = module_rows(plan, results["rows"], costs, report.convention,
                                                   params_by_row(model, plan), ops_by_row(plan, profiled))
    plain_ms = median(results["plain"])
    report.check = _check("hooked", results["plain"], [s.total_ms for s in results["rows"]], report.rows,
                          report.settings.torch_device.type == "cuda")
    report.small_ops = small_ops(results.get("leaves", results["rows"]), plain_ms, costs, report.convention,
                                 small_mflops)
    report.operator_calls = profiled.operator_calls()
    report.rounds = len(results["plain"])


def _rounds(passes: dict[str, Callable[[], object]], settings: LatencySettings) -> dict[str, list]:
    """Profile's warm-up (``settings.warmup`` plain calls, one call of each instrumented pass), then the timed
    rounds in an order rotated every round; ``passes["plain"]`` returns milliseconds, and the time budget is its."""
    for _ in range(settings.warmup):
        passes["plain"]()
    for name, run in passes.items():
        if name != "plain":
            run()
    return timed_rounds(passes, iters=settings.iters, min_time=settings.min_time, min_rounds=MIN_SAMPLES,
                        budget_on=["plain"])


def _check(instrument: str, plain: list[float], instrumented: list[float], rows: list[ProfileRow],
           on_gpu: bool) -> SumCheck:
    parts: Counter = Counter()
    for r in rows:
        parts[r.kind] += r.ms
    return SumCheck(instrument, median(plain), median(instrumented), dict(parts), on_gpu,
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
    plans = [(info, zoo.input_shape(info, size, batch_size)) for info in map(zoo.info, names)]
    progress = progress or (lambda label: None)
    reports = []
    with timed_session(settings, warn) as run_on:
        costs = []
        for info, shape in plans:  # counted first: a model that refuses its input stops here, before any timing
            progress(f"counting {info.name} {zoo.format_size(shape)}")
            costs.append(ModuleCosts.measure(info.name, shape, settings.dtype))
        progress("measuring the roofs (matmul, copy)")
        roof = roofline.measure(settings, run_on.environment, peak=run_on.peak)
        for (info, shape), cost in zip(plans, costs):
            progress(f"profiling {info.name} {zoo.format_size(shape)}")
            reports.append(_profile(info, shape, cost, settings, run_on.environment, roof, by, depth, convention,
                                    small_mflops, clock, run_on.warnings))
    return reports


def profile_for_report(settings: LatencySettings, progress: Callable[[str], None] | None = None
                       ) -> list[ProfileReport]:
    """What `report --latency` adds: REPORT_MODELS by module at REPORT_DEPTH, at their own input, in at most
    REPORT_ROUNDS rounds on the latency rows' device and threads (the roofline plot's points)."""
    rounds = min(settings.iters, REPORT_ROUNDS) if settings.iters else REPORT_ROUNDS
    return profile_models(list(REPORT_MODELS), None, 1, replace(settings, iters=rounds, min_time=None),
                          depth=REPORT_DEPTH, progress=progress)
