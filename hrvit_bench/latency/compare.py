"""A/B latency: several models timed in alternating rounds, each median with a bootstrap interval, and each
model's ratio to the first with its own interval.

On a shared machine the load changes from one second to the next, so two models timed one after the other are
timed on two different machines. Here each round times every model once, back to back, and the order flips
every round (A B, B A, A B, ...), so slow drifts and order effects fall on both sides alike; the ratio's
interval resamples whole rounds, keeping each round's pairing. A ratio whose interval contains 1 is called
indistinguishable: the difference is inside the noise of this machine at this sample size.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import torch
from rich.table import Table

from .. import zoo
from ..environment import Environment
from ..errors import UsageError, first_line
from ..output import fmt
from .session import timed_session
from .settings import LatencySettings
from .stats import Interval, LatencyStats, median_interval, ratio_interval
from .sweep import is_out_of_memory, point_flops, prepare, random_input
from .timer import clock_for, make_step, timed_rounds

FASTER, SLOWER, INDISTINGUISHABLE = "faster", "slower", "indistinguishable"
MIN_ROUNDS = 10  # with a time budget, never fewer rounds: a bootstrap interval needs samples to resample


def direction(ratio: Interval) -> str:
    """faster / slower than the reference, or indistinguishable when the interval contains 1."""
    if ratio.contains(1.0):
        return INDISTINGUISHABLE
    return FASTER if ratio.high < 1.0 else SLOWER


@dataclass
class Side:
    """One model of a comparison: its per-round samples (round i of every side ran in the same round)."""

    model: str
    attention: str
    samples_ms: list[float]
    flops: int | None = None  # 2 x MACs, all operators, of the whole batch

    @property
    def stats(self) -> LatencyStats:
        return LatencyStats.from_samples(self.samples_ms)

    @property
    def median(self) -> Interval:
        return median_interval(self.samples_ms)


@dataclass
class Comparison:
    """Models timed in interleaved rounds on one input; ratios are to the first model."""

    input_size: tuple[int, int]
    batch_size: int
    settings: LatencySettings
    environment: Environment
    sides: list[Side]
    warnings: list[str] = field(default_factory=list)

    @property
    def rounds(self) -> int:
        return len(self.sides[0].samples_ms)

    def ratio(self, i: int) -> Interval:
        """Model i's median over the first model's, with its interval."""
        return ratio_interval(list(zip(self.sides[0].samples_ms, self.sides[i].samples_ms)))

    def flop_change(self, i: int) -> float | None:
        first, other = self.sides[0].flops, self.sides[i].flops
        return None if not first or other is None else other / first - 1.0

    def to_dict(self) -> dict:
        rows = []
        for i, side in enumerate(self.sides):
            row = {"model": side.model, "attention": side.attention, "flops": side.flops,
                   "latency_ms": side.stats.to_dict(), "median_ms": side.median.to_dict()}
            if i:
                row |= {"ratio_to_first": self.ratio(i).to_dict(), "verdict": direction(self.ratio(i)),
                        "flop_change": self.flop_change(i)}
            rows.append(row)
        return {
            "kind": "interleaved",
            "input_size": list(self.input_size),
            "batch_size": self.batch_size,
            "rounds": self.rounds,
            "settings": self.settings.to_dict(),
            "environment": self.environment.to_dict(),
            "method": __doc__.split("\n\n")[1].replace("\n", " "),
            "warnings": list(self.warnings),
            "models": rows,
        }

    def csv_rows(self) -> list[dict]:
        rows = []
        for i, side in enumerate(self.sides):
            median, ratio = side.median, self.ratio(i) if i else None
            rows.append({
                "model": side.model, "attention": side.attention, "device": self.settings.device,
                "dtype": self.settings.dtype, "threads": self.settings.threads,
                "input": zoo.format_size(self.input_size), "batch_size": self.batch_size, "rounds": self.rounds,
                "median_ms": median.value, "median_low_ms": median.low, "median_high_ms": median.high,
                "ratio_to_first": ratio.value if ratio else None, "ratio_low": ratio.low if ratio else None,
                "ratio_high": ratio.high if ratio else None, "verdict": direction(ratio) if ratio else None,
                "flop_change": self.flop_change(i), "reference": self.sides[0].model,
            })
        return rows

    def tables(self) -> list[Table]:
        s = self.settings
        table = Table(
            title=f"interleaved A/B on {s.device}: {zoo.format_size(self.input_size)}, batch {self.batch_size}, "
                  f"{s.dtype}, {self.rounds} rounds (order flipped every round)",
            caption=f"{self.environment.summary()}. Intervals: 95% bootstrap (ratios resample whole rounds). "
                    "Indistinguishable: the ratio's interval contains 1.",
        )
        for col in ("model", "attention", "median ms", "95% CI", f"vs {self.sides[0].model}", "95% CI ",
                    "verdict", "FLOPs vs first"):
            table.add_column(col, justify="left" if col in ("model", "attention", "verdict") else "right")
        for i, side in enumerate(self.sides):
            median = side.median
            cells = [side.model, side.attention, f"{median.value:.3f}", f"{median.low:.3f}-{median.high:.3f}"]
            if i:
                ratio, change = self.ratio(i), self.flop_change(i)
                cells += [f"{ratio.value:.3f}x", f"{ratio.low:.3f}-{ratio.high:.3f}", direction(ratio),
                          fmt(None if change is None else 100 * change, "+.1f") + ("%" if change is not None else "")]
            else:
                cells += ["1", "", "(reference)", ""]
            table.add_row(*cells)
        return [table]


def interleaved(
    names: list[str],
    size: tuple[int, int] | None,
    batch_size: int,
    settings: LatencySettings,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Comparison:
    """Time ``names`` in alternating rounds on one input (``None``: the models' own, which must agree)."""
    if len(names) < 2:
        raise UsageError("--interleave compares two or more models; give another --model")
    infos = [zoo.info(n) for n in names]
    if size is None:
        own = {i.input_size for i in infos}
        if len(own) > 1:
            raise UsageError(f"the models' own inputs differ ({', '.join(zoo.format_size(s) for s in sorted(own))}); "
                             "give --input to compare them on one")
        size = own.pop()
    shapes = [zoo.input_shape(i, size, batch_size) for i in infos]
    device = settings.torch_device
    sides = [Side(i.name, i.attention, []) for i in infos]
    with timed_session(settings, warn) as run_on, torch.inference_mode():
        env, warnings = run_on.environment, run_on.warnings
        steps = {}
        for info, side, shape in zip(infos, sides, shapes):
            side.flops = point_flops(info.name, shape)
            model = prepare(zoo.build(info.name, device=str(device)), settings)
            steps[info.name] = _guarded(info.name, shape, make_step(model, random_input(shape, settings), settings))
        for _ in range(settings.warmup):  # warm-up interleaved too: caches and clocks settle for every model
            for step in steps.values():
                step()
        clock = clock_for(device)

        def tick(done: int) -> None:
            if progress:
                progress(done, settings.iters or 0, f"round {done}")

        samples = timed_rounds({name: functools.partial(clock.time, step) for name, step in steps.items()},
                               iters=settings.iters, min_time=settings.min_time, min_rounds=MIN_ROUNDS, order="flip",
                               after_round=tick)
    for side in sides:
        side.samples_ms = samples[side.model]
    comparison = Comparison(tuple(size), batch_size, settings, env, sides, list(warnings))
    if comparison.rounds < MIN_ROUNDS:
        comparison.warnings.append(f"{comparison.rounds} rounds: too few for a trustworthy interval "
                                   f"(use --iters {MIN_ROUNDS} or more)")
    return comparison


def _guarded(name: str, shape, step: Callable[[], object]) -> Callable[[], object]:
    """An out-of-memory in a comparison ends it with one line naming the model: a ratio needs both sides."""

    def call():
        try:
            return step()
        except Exception as exc:
            if is_out_of_memory(exc):
                raise UsageError(f"{name} ran out of memory at {zoo.format_size(shape)}: {first_line(exc)}") from None
            raise

    return call
