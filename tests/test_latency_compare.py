"""Interleaved A/B timing: bootstrap intervals checked against known distributions, the round order, verdicts and
the command line. No timing number is asserted."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import hrvit_bench_models as models
from hrvit_bench import cli
from hrvit_bench.latency import compare
from hrvit_bench.latency.compare import FASTER, INDISTINGUISHABLE, SLOWER, direction, interleaved
from hrvit_bench.latency.settings import LatencySettings
from hrvit_bench.latency.stats import Interval, mean_ratio_interval, median_interval, ratio_interval

runner = CliRunner()


def test_median_interval_covers_the_true_median_about_95_percent_of_the_time():
    # Exponential(1) has median ln 2; 300 independent samples of 41 each.
    rng = np.random.default_rng(1)
    hits = sum(median_interval(rng.exponential(size=41), resamples=400, seed=i).contains(math.log(2))
               for i in range(300))
    assert 0.90 <= hits / 300 <= 0.99


def test_intervals_by_hand():
    constant = median_interval([5.0] * 12)
    assert (constant.value, constant.low, constant.high) == (5.0, 5.0, 5.0)
    rounds = [(10.0, 5.0)] * 10  # B always half of A
    assert ratio_interval(rounds) == Interval(0.5, 0.5, 0.5)
    assert mean_ratio_interval([rounds, [(4.0, 6.0)] * 10]).value == pytest.approx((0.5 + 1.5) / 2)
    with pytest.raises(ValueError):
        mean_ratio_interval([[]])


def test_ratio_interval_resamples_whole_rounds():
    # Shared load moves both sides of a round together; the ratio of each round is exactly 0.8.
    load = np.random.default_rng(2).uniform(1.0, 3.0, size=30)
    rounds = [(100.0 * f, 80.0 * f) for f in load]
    ratio = ratio_interval(rounds)
    assert ratio.value == pytest.approx(0.8) and ratio.low == pytest.approx(0.8) and ratio.high == pytest.approx(0.8)
    assert direction(ratio) == FASTER
    unpaired = median_interval([a for a, _ in rounds])  # each side alone spreads with the load
    assert unpaired.high - unpaired.low > 10


def test_direction_needs_the_whole_interval_on_one_side_of_1():
    assert direction(Interval(0.9, 0.85, 0.95)) == FASTER
    assert direction(Interval(1.1, 1.05, 1.2)) == SLOWER
    assert direction(Interval(0.98, 0.9, 1.01)) == INDISTINGUISHABLE


class Recorder(nn.Module):
    """Writes its name into a shared log on every real (non-meta) call."""

    log: list[str] = []

    def __init__(self, tag: str):
        super().__init__()
        self.tag = tag
        self.proj = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        if not x.is_meta:
            Recorder.log.append(self.tag)
        return self.proj(x)


@pytest.fixture
def recorders():
    names = ["toy_ab_first", "toy_ab_second"]
    for name in names:
        models.register_model(family="toy", variant="t", task="backbone", input_size=(8, 8), reference="test",
                              official_code="none", input_multiple=1, name=name)(
            lambda tag=name, **kw: Recorder(tag))
    Recorder.log = []
    yield names
    for name in names:
        models.unregister_model(name)


def test_rounds_alternate_the_order(recorders):
    first, second = recorders
    result = interleaved([first, second], None, 1, LatencySettings(warmup=1, iters=4, threads=1))
    warmup, timed = Recorder.log[:2], Recorder.log[2:]
    assert warmup == [first, second]
    assert timed == [first, second, second, first, first, second, second, first]
    assert result.rounds == 4 and [s.model for s in result.sides] == [first, second]
    assert all(len(s.samples_ms) == 4 for s in result.sides)
    assert result.flop_change(1) == pytest.approx(0.0)  # the same 1x1 conv
    assert any("too few" in w for w in result.warnings)


def test_a_time_budget_takes_at_least_the_minimum_rounds(recorders):
    result = interleaved(recorders, None, 1, LatencySettings(warmup=0, min_time=1e-6, threads=1))
    assert result.rounds == compare.MIN_ROUNDS and not result.warnings


def test_interleave_on_the_command_line(recorders):
    result = runner.invoke(cli.app, ["latency", "-m", recorders[0], "-m", recorders[1], "--interleave", "--iters",
                                     "10", "--warmup", "1", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    [data] = json.loads(result.stdout)
    first, second = data["models"]
    assert data["rounds"] == 10 and data["kind"] == "interleaved"
    assert {"value", "low", "high"} <= set(first["median_ms"]) and "ratio_to_first" not in first
    assert second["verdict"] in (FASTER, SLOWER, INDISTINGUISHABLE)
    assert second["ratio_to_first"]["low"] <= second["ratio_to_first"]["value"] <= second["ratio_to_first"]["high"]
    table = runner.invoke(cli.app, ["latency", "-m", recorders[0], "-m", recorders[1], "--interleave", "--iters",
                                    "10", "--warmup", "0", "--threads", "1"])
    assert table.exit_code == 0 and "95% CI" in table.output and "order flipped every round" in table.output


@pytest.mark.parametrize("args, message", [
    (["-m", "hrvit_b1", "--interleave"], "two or more models"),
    (["-m", "hrvit_b1", "-m", "mit_b1_seg_ade20k", "--interleave"], "give --input"),
    (["-m", "hrvit_b1", "-m", "mit_b1", "--interleave", "--device", "tpu"], "unknown device"),
    (["-m", "hrvit_b1", "-m", "mit_b1", "--interleave", "--cross-check"], "--cross-check"),
])
def test_bad_interleave_input_is_one_line_exit_2(monkeypatch, args, message):
    def refuse(*a, **k):
        raise AssertionError("no model may be built")

    monkeypatch.setattr(compare.zoo, "build", refuse)
    result = runner.invoke(cli.app, ["latency", *args])
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert message in line


def test_interleave_on_cuda_without_a_gpu_exits_2(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = runner.invoke(cli.app, ["latency", "-m", "hrvit_b1", "-m", "mit_b1", "--interleave", "--device", "cuda"])
    assert result.exit_code == 2 and "cuda" in result.output.lower()
