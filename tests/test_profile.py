"""`hrvit-bench profile`: the join of times with MACs, params and bytes, the row plan, the sum check and the
small-ops view under a fake clock, the operator view on fake profiler events, the CUDA stamps on stubbed events,
the roofs and the roofline figure.

No real time is asserted: the fake clock moves only when a toy module says so, plus a fixed cost per hook.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import hrvit_bench_models as models
from hrvit_bench import plots, profile, roofline
from hrvit_bench.cli import app
from hrvit_bench.conventions import Convention
from hrvit_bench.counting import MacCount
from hrvit_bench.environment import Environment
from hrvit_bench.latency import LatencySettings, timer
from hrvit_bench.profile import (HookedSample, ModuleCosts, OpEvent, ProfiledSample, RowPlan, SumCheck,
                                 operator_rows, profile_models)
from toy import TOY_PARAMS, toy_macs

runner = CliRunner()
FP32 = 4


def _roof(**changes) -> roofline.Roofline:
    base = dict(device_name="test CPU", dtype="fp32", threads=1, measured_gflops=100.0, measured_gbs=10.0,
                matmul_n=8, copy_bytes=64)
    return roofline.Roofline(**{**base, **changes})


@pytest.fixture
def fixed_roofs(monkeypatch):
    """The roofs are measured with large matmuls and copies: a constant stands in for them."""
    monkeypatch.setattr(roofline, "measure", lambda settings, env, **kw: _roof(threads=settings.threads))


# ---------------------------------------------------------------------------------------------------------------
# A model whose time is known: each module advances a fake clock; each hook stamp costs `hook_ms`.


class FakeClock:
    def __init__(self, hook_ms: float = 0.0):
        self.now, self.hook_ms = 0.0, hook_ms

    def advance(self, ms: float) -> None:
        self.now += ms

    def time(self, step) -> float:
        start = self.now
        step()
        return self.now - start

    def stamp(self) -> float:
        self.now += self.hook_ms  # the hook's own cost comes before its reading
        return self.now

    def times(self, stamps):
        return list(stamps)


class SlowConv(nn.Conv2d):
    def __init__(self, clock: FakeClock, ms: float, cin: int, cout: int):
        super().__init__(cin, cout, 1)
        self.clock, self.ms = clock, ms

    def forward(self, x):
        self.clock.advance(self.ms)
        return super().forward(x)


class Head(nn.Module):
    def __init__(self, clock: FakeClock):
        super().__init__()
        self.clock, self.proj = clock, SlowConv(clock, 1.0, 4, 2)

    def forward(self, x):
        self.clock.advance(0.5)  # its own code
        return self.proj(x)


class TimedNet(nn.Module):
    """stem 3 ms; a ModuleList (never called itself) of two 2 ms blocks; head 0.5 ms + proj 1 ms; 0.25 ms of
    its own code: 8.75 ms."""

    def __init__(self, clock: FakeClock):
        super().__init__()
        self.clock = clock
        self.stem = SlowConv(clock, 3.0, 3, 4)
        self.blocks = nn.ModuleList([SlowConv(clock, 2.0, 4, 4) for _ in range(2)])
        self.head = Head(clock)

    def forward(self, x):
        self.clock.advance(0.25)
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


PLAIN_MS = 8.75
TIMED = "toy_profile_timed"


@pytest.fixture
def timed(monkeypatch, fixed_roofs):
    clock = FakeClock()
    monkeypatch.setattr(profile.driver, "stamps_for", lambda device, name="wall": clock)
    models.register_model(family="toy", variant="t", task="backbone", input_size=(8, 8), reference="test",
                          official_code="none", input_multiple=1, name=TIMED)(lambda **kw: TimedNet(clock))
    yield clock
    models.unregister_model(TIMED)


def _settings(**changes) -> LatencySettings:
    return LatencySettings(**{"threads": 1, "warmup": 0, "iters": 3, **changes})


def _rows(report) -> dict:
    return {r.name: r for r in report.rows}


@pytest.mark.parametrize("h", [0.0, 0.01])
def test_module_rows_and_the_sum_check_under_a_fake_clock(timed, h):
    timed.hook_ms = h
    [report] = profile_models([TIMED], None, 1, _settings(), depth=1)
    rows = _rows(report)
    # Hand arithmetic: a hooked call's time holds its work and its exit stamp; the entry stamp is its caller's.
    assert rows["stem"].ms == pytest.approx(3 + h)
    assert rows["blocks"].ms == pytest.approx(2 * (2 + h))  # the ModuleList is never called: its blocks are
    assert (rows["blocks"].calls, rows["blocks"].ms_per_call) == (2, pytest.approx(2 + h))
    assert rows["head"].ms == pytest.approx(1.5 + h)  # head.proj is not hooked at depth 1: inside head
    assert rows["(model self)"].ms == pytest.approx(0.25 + 5 * h)  # its work and the entry stamps of 4 calls
    assert rows["(outside modules)"].ms == pytest.approx(h)  # the root's entry stamp
    check = report.check
    assert check.plain_ms == pytest.approx(PLAIN_MS)
    assert check.instrumented_ms == pytest.approx(PLAIN_MS + 10 * h)  # 5 hooked calls, 2 stamps each
    assert check.rows_ms == pytest.approx(PLAIN_MS + 10 * h)
    assert check.overhead == pytest.approx(10 * h / PLAIN_MS)
    assert check.ok
    assert sum(r.share for r in report.rows) == pytest.approx(1)
    assert [r.ms for r in report.rows] == sorted((r.ms for r in report.rows), reverse=True)


def test_the_sum_check_fails_when_hooks_cost_more_than_the_margin(timed):
    timed.hook_ms = 0.1  # 10 stamps x 0.1 ms on an 8.75 ms forward: 11.4%
    [report] = profile_models([TIMED], None, 1, _settings(iters=4), depth=1)  # 4 rounds: enough for a spread
    assert report.check.agreement == pytest.approx(1 + 1.0 / PLAIN_MS)
    assert not report.check.ok
    assert "OUTSIDE the margin" in report.check.describe(1)
    assert any("outside ±5%" in w and "spread by only 0.0%" in w for w in report.warnings)  # the fake clock is steady


def test_a_failed_check_says_whether_it_was_noise():
    noisy = SumCheck("hooked", 100.0, 100.0, {"module": 90.0}, plain_samples_ms=[80.0, 90.0, 100.0, 110.0, 120.0])
    assert noisy.spread == pytest.approx((115.0 - 85.0) / 100.0)  # statistics.quantiles' exclusive method, by hand
    assert "the machine is noisy" in noisy.why()
    steady = SumCheck("hooked", 100.0, 112.0, {"module": 112.0}, plain_samples_ms=[99.0, 100.0, 100.0, 101.0])
    assert "costs +12.0%" in steady.why()
    assert "too few rounds" in SumCheck("hooked", 100.0, 90.0, {"module": 90.0}, plain_samples_ms=[100.0]).why()


def test_sum_check_arithmetic_by_hand():
    check = SumCheck("hooked", plain_ms=100.0, instrumented_ms=103.0,
                     parts_ms={"module": 90.0, "self": 8.0, "outside": 4.0})
    assert check.rows_ms == 102.0
    assert check.agreement == pytest.approx(1.02)
    assert check.overhead == pytest.approx(0.03)
    assert check.ok
    text = check.describe(2)
    assert "102.0% of the plain median" in text and "1.030x the plain median" in text
    assert "hold 88.2%" in text and "own code 7.8%" in text  # 90 / 102, 8 / 102
    assert not SumCheck("hooked", 100.0, 100.0, {"module": 94.9}).ok
    assert SumCheck("hooked", 100.0, 100.0, {"module": 95.1}).ok
    gpu = SumCheck("profiled", 10.0, 10.5, {"operator": 8.0, "outside": 2.0}, on_gpu=True)
    assert "GPU idle" in gpu.describe()


def test_small_ops_view_under_a_fake_clock(timed):
    timed.hook_ms = 0.01
    h = timed.hook_ms
    # Own MACs per call at 8x8: stem 3*4*64 = 768, blocks 4*4*64 = 1024 each, head.proj 4*2*64 = 512, head and
    # the model's own code 0. At 1,200 FLOPs (2 x MACs) per call: head.proj, head and the root are small.
    [report] = profile_models([TIMED], None, 1, _settings(), depth=1, small_mflops=0.0012)
    small = report.small_ops
    assert (small.small_calls, small.calls) == (3, 6)
    # Every module hooked: own times stem 3+h, blocks 2+h each, head.proj 1+h, head 0.5+2h, root 0.25+5h.
    assert small.share == pytest.approx((1.75 + 8 * h) / (PLAIN_MS + 11 * h))
    assert small.overhead == pytest.approx(12 * h / PLAIN_MS)


def test_the_join_of_macs_params_and_bytes_on_the_timed_toy(timed):
    [report] = profile_models([TIMED], None, 1, _settings(), depth=1)
    rows = _rows(report)
    hw = 8 * 8
    assert {n: rows[n].macs for n in ("stem", "blocks", "head", "(model self)")} == {
        "stem": 3 * 4 * hw, "blocks": 2 * 4 * 4 * hw, "head": 4 * 2 * hw, "(model self)": 0}
    assert {n: rows[n].params for n in ("stem", "blocks", "head")} == {"stem": 16, "blocks": 40, "head": 10}
    # Bytes: input + output activations + parameters read, per call, fp32.
    assert rows["stem"].bytes == (3 * hw + 4 * hw + 16) * FP32
    assert rows["blocks"].bytes == 2 * (4 * hw + 4 * hw + 20) * FP32
    assert rows["head"].bytes == (4 * hw + 2 * hw + 10) * FP32
    assert rows["stem"].intensity == pytest.approx(2 * 3 * 4 * hw / ((3 * hw + 4 * hw + 16) * FP32))
    assert rows["(model self)"].bytes is None  # a parent's own code has no byte count
    # One aten operator per conv (aten::conv2d, called from Python); none in the toy's own code.
    assert {n: rows[n].ops for n in ("stem", "blocks", "head", "(model self)")} == {
        "stem": 1, "blocks": 2, "head": 1, "(model self)": 0}
    assert report.operator_calls.top_level == 4
    assert [r.name for r in report.roofline_rows()] == [r.name for r in report.rows if r.kind == "module"]


def test_depth_2_rows_of_the_timed_toy(timed):
    timed.hook_ms = 0.01
    [report] = profile_models([TIMED], None, 1, _settings(), depth=2)
    rows = _rows(report)
    assert set(rows) == {"stem", "blocks.0", "blocks.1", "head (self)", "head.proj", "(model self)",
                         "(outside modules)"}
    assert rows["head.proj"].ms == pytest.approx(1.01)
    assert rows["head (self)"].ms == pytest.approx(0.5 + 2 * 0.01)
    assert rows["head (self)"].macs == 0 and rows["head.proj"].macs == 4 * 2 * 64
    assert report.small_ops is not None  # every called module is hooked: the rows pass serves as the leaves pass


def test_the_join_on_the_known_toy(toy_model, fixed_roofs):
    [report] = profile_models([toy_model], (20, 30), 3, _settings(iters=2))
    rows = _rows(report)
    macs = toy_macs(3, 20, 30)
    assert {n: rows[n].macs for n in ("conv", "bn", "pool", "fc")} == {
        "conv": macs["conv"], "bn": macs["batch_norm"], "pool": macs["adaptive_avg_pool2d"], "fc": macs["linear"]}
    assert rows["(model self)"].macs == 0  # relu and flatten: no counting rule
    assert sum(r.macs or 0 for r in report.rows) == sum(macs.values())
    assert {n: rows[n].params for n in ("conv", "bn", "pool", "fc")} == {"conv": 224, "bn": 16, "pool": 0, "fc": 90}
    assert report.never_called == ["never_called"]
    assert sum(r.params or 0 for r in report.rows) == TOY_PARAMS - (4 * 4 + 4)
    assert all(r.calls == 1 for r in report.rows if r.kind == "module")
    assert report.check is not None and report.rounds == 2


def test_module_costs_count_bytes_at_the_runs_dtype(toy_model):
    shape = (2, 3, 8, 8)
    fp32 = ModuleCosts.measure(toy_model, shape, "fp32")
    bf16 = ModuleCosts.measure(toy_model, shape, "bf16")
    conv = (2 * 3 * 64 + 2 * 8 * 16 + 8 * 27 + 8) * FP32  # input, output (stride 2: 4x4), weight and bias
    assert fp32.bytes["conv"] == conv and bf16.bytes["conv"] == conv // 2
    assert fp32.calls == {"": 1, "conv": 1, "bn": 1, "pool": 1, "fc": 1}  # never_called is not there
    assert fp32.own_macs("", Convention()) == 0


def test_row_plan_by_hand():
    names = ["", "a", "a.x", "a.x.p", "b", "b.0", "b.0.q", "b.1", "c"]
    called = {"", "a", "a.x", "a.x.p", "b.0", "b.0.q", "b.1"}  # b is a container; c is never called
    plan = RowPlan.build(names, called, 1)
    assert plan.rows == {"": "self", "a": "module", "b": "module", "c": "module"}
    assert plan.hooked == {"", "a", "b.0", "b.1"}  # below uncalled b: its first called modules
    assert plan.row_of("a.x.p") == "a" and plan.row_of("b.0.q") == "b" and plan.row_of("") == ""
    plan2 = RowPlan.build(names, called, 2)
    assert plan2.rows == {"": "self", "a": "self", "a.x": "module", "b": "self", "b.0": "module", "b.1": "module",
                          "c": "module"}
    assert plan2.hooked == {"", "a", "a.x", "b.0", "b.1"}
    assert RowPlan.build(names, called, 0).rows == {"": "module"}


def test_own_times_from_a_trace_by_hand():
    trace = [("", True, 0.0), ("a", True, 1.0), ("a.x", True, 2.0), ("a.x", False, 5.0), ("a", False, 6.0),
             ("a", True, 7.0), ("a", False, 8.0), ("", False, 10.0)]
    sample = HookedSample.from_trace(11.0, trace)
    assert sample.own_ms == {"a.x": 3.0, "a": 3.0, "": 4.0}  # a: (5 - 3) + 1; root: 10 - 5 - 1
    assert sample.call_ms["a"] == [5.0, 1.0] and sample.call_own_ms["a"] == [2.0, 1.0]
    assert sample.outside_ms == 1.0


# ---------------------------------------------------------------------------------------------------------------
# The operator view: profiler events joined with the engine's operator names.


def _count(by_operator: dict) -> MacCount:
    return MacCount(model="m", input_shape=(1, 3, 8, 8), engine="meta", params=0, trainable_params=0,
                    unused_params=0, by_module={"": by_operator}, uncounted_ops={})


def _sample(total_ms: float, on_device: bool = False) -> ProfiledSample:
    e = [
        OpEvent("module: stem", 900.0, 0.0, None),  # 0: a module scope
        OpEvent("aten::conv2d", 500.0, 300.0, 0),  # 1: top level, in stem
        OpEvent("aten::convolution", 480.0, 300.0, 1),  # 2: nested: belongs to conv2d
        OpEvent("cudaLaunchKernel", 5.0, 0.0, 2),
        OpEvent("aten::gelu", 100.0, 40.0, 0),  # 4
        OpEvent("cudaLaunchKernel", 5.0, 0.0, 4),
        OpEvent("aten::linear", 200.0, 120.0, None),  # 6: outside every module
        OpEvent("aten::addmm", 150.0, 120.0, 6),
        OpEvent("cudaLaunchKernel", 5.0, 0.0, 7),
        OpEvent("aten::add_", 50.0, 10.0, None),
    ]
    return ProfiledSample(total_ms, e, on_device)


def test_operator_rows_join_engine_names_and_name_the_ones_without_macs():
    count = _count({"conv": 1000, "linear": 500, "einsum": 7, "layer_norm": 9})
    rows, no_macs, not_joined = operator_rows([_sample(1.0), _sample(1.2), _sample(0.9)], count, Convention())
    by_name = {r.name: r for r in rows}
    assert set(by_name) == {"conv", "gelu", "linear", "add_", "(outside operators)"}
    assert (by_name["conv"].macs, by_name["linear"].macs, by_name["gelu"].macs) == (1000, 500, None)
    assert by_name["conv"].ms == pytest.approx(0.5) and by_name["conv"].calls == 1
    assert by_name["(outside operators)"].ms == pytest.approx(1.0 - 0.85)  # the median total less the operators
    assert no_macs == ["add_", "gelu"]
    assert not_joined == {"einsum": 7, "layer_norm": 9}
    gemm_rows, _, gemm_missing = operator_rows([_sample(1.0)], count, Convention("macs", "gemm", "1e9"))
    assert gemm_missing == {"einsum": 7}  # layer_norm is not a GEMM: the convention leaves it out


def test_operator_rows_on_the_gpu_use_kernel_time():
    rows, _, _ = operator_rows([_sample(0.6, on_device=True)], _count({"conv": 1}), Convention())
    by_name = {r.name: r for r in rows}
    assert by_name["conv"].ms == pytest.approx(0.3) and by_name["linear"].ms == pytest.approx(0.12)
    assert by_name["(outside operators)"].ms == pytest.approx(0.6 - 0.47)


def test_operator_calls_scopes_and_launches_from_events():
    sample = _sample(1.0, on_device=True)
    calls = sample.operator_calls()
    assert (calls.top_level, calls.aten_events, calls.kernel_launches) == (4, 6, 3)
    assert sample.scopes() == ["stem", "stem", None, None]
    assert _sample(1.0).operator_calls().kernel_launches is None  # CPU: no launches to count
    assert calls.describe(2.0) == "4 aten operators from Python (2.0 per ms; 6 aten events in all), 3 kernel launches"


def test_the_operator_view_on_the_known_toy(toy_model, fixed_roofs):
    [report] = profile_models([toy_model], (20, 30), 3, _settings(iters=2), by="operator")
    rows = _rows(report)
    macs = toy_macs(3, 20, 30)
    assert rows["conv"].macs == macs["conv"] and rows["linear"].macs == macs["linear"]
    assert rows["batch_norm"].macs == macs["batch_norm"]
    assert rows["adaptive_avg_pool2d"].macs == macs["adaptive_avg_pool2d"]
    assert "relu" in report.no_macs and not report.macs_not_joined
    assert report.check.instrument == "profiled" and report.small_ops is None


def test_events_from_the_real_profiler_keep_their_tree(toy_model):
    from hrvit_bench import zoo

    model = zoo.build(toy_model)
    x = torch.randn(1, 3, 8, 8)
    clock = timer.CpuStamps()
    with torch.inference_mode():
        sample = profile.ProfiledPass(lambda: model(x), clock, torch.device("cpu"), {"conv": model.conv})()
    top = [e.name for e in sample.top_level_ops()]
    assert "aten::conv2d" in top and "aten::convolution" not in top  # nested calls belong to their caller
    assert sample.scopes()[top.index("aten::conv2d")] == "conv"
    assert sample.total_ms > 0


# ---------------------------------------------------------------------------------------------------------------
# CUDA: stamps are recorded events read after one synchronise.


class FakeEvent:
    gpu_ms = 0.0  # the stream's position when an event is recorded
    created = 0

    def __init__(self, enable_timing: bool = False):
        assert enable_timing
        FakeEvent.created += 1
        self.at = None

    def record(self, stream=None):
        self.at = FakeEvent.gpu_ms

    def synchronize(self):
        pass

    def elapsed_time(self, other) -> float:
        return other.at - self.at


def test_cuda_stamps_are_events_read_after_the_forward(monkeypatch):
    log = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("synchronize"))
    clock = timer.CudaStamps()
    stamps = []

    def step():
        for gap in (1.0, 2.0, 0.5):
            FakeEvent.gpu_ms += gap
            stamps.append(clock.stamp())

    FakeEvent.gpu_ms = 10.0
    total = clock.time(step)
    assert total == pytest.approx(3.5) and log == ["synchronize"]
    assert clock.times(stamps) == pytest.approx([1.0, 3.0, 3.5])  # from the forward's start event
    created = FakeEvent.created
    stamps.clear()
    clock.time(step)
    assert FakeEvent.created == created  # the pool is reused: no event is created while timing


# ---------------------------------------------------------------------------------------------------------------
# The roofs and the figure.


@pytest.mark.parametrize("name, gbs", [
    ("NVIDIA H100 80GB HBM3", 3350.0), ("NVIDIA H100 PCIe", 2000.0), ("NVIDIA H100 NVL", 3900.0),
    ("NVIDIA H200", 4800.0), ("NVIDIA A100-SXM4-80GB", 2039.0), ("NVIDIA A100 80GB PCIe", 1935.0),
    ("NVIDIA A100-SXM4-40GB", 1555.0), ("NVIDIA GeForce RTX 4090", 1008.0), ("Some GPU", None),
])
def test_datasheet_bandwidth(name, gbs):
    found = roofline.datasheet_bandwidth(name)
    assert (found[0] if found else None) == gbs


def test_roof_arithmetic_by_hand(monkeypatch):
    monkeypatch.setattr(roofline, "_best_ms", lambda step, device, repeats: 2.0)
    assert roofline.measure_matmul(torch.device("cpu"), torch.float32, 64) == pytest.approx(2 * 64**3 / 2e-3 / 1e9)
    assert roofline.measure_copy(torch.device("cpu"), 4096) == pytest.approx(2 * 4096 / 2e-3 / 1e9)
    roof = _roof(measured_gflops=100.0, measured_gbs=10.0)
    assert roof.ridge == 10.0 and roof.bound(2.0) == 20.0 and roof.bound(50.0) == 100.0


def test_cpu_roofs_are_measured_and_have_no_datasheet():
    settings = LatencySettings(threads=1)
    roof = roofline.measure(settings, Environment.capture("cpu", "fp32"), matmul_n=64, copy_bytes=2**16)
    assert roof.measured_gflops > 0 and roof.measured_gbs > 0
    assert roof.datasheet_gflops == {} and roof.datasheet_gbs is None


@pytest.mark.parametrize("name, sms, bandwidth", [("NVIDIA H100 80GB HBM3", 132, 3350.0),
                                                  ("NVIDIA H100 80GB HBM3", 60, None)])
def test_gpu_roofs_add_the_datasheet_beside_the_measured(monkeypatch, name, sms, bandwidth):
    import dataclasses

    monkeypatch.setattr(roofline, "measure_matmul", lambda device, dtype, n: 400_000.0)
    monkeypatch.setattr(roofline, "measure_copy", lambda device, nbytes: 3000.0)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    env = dataclasses.replace(Environment.capture("cpu", "fp32"), device="cuda", device_name=name,
                              gpu_sm_count=sms, cuda_matmul_allow_tf32=False, cudnn_allow_tf32=True)
    roof = roofline.measure(LatencySettings(device="cuda"), env)
    assert roof.measured_gflops == 400_000.0 and roof.matmul_n == roofline.GPU_MATMUL_N
    assert roof.datasheet_gbs == bandwidth
    if bandwidth:  # torch's defaults: fp32 for cuBLAS, TF32 for cuDNN: two peaks, each for its operators
        assert roof.datasheet_gflops == {"fp32": 67_000.0, "tf32": 494_700.0}
        assert set(roof.datasheet_applies_to) == {"fp32", "tf32"}
    else:  # a partition of the GPU gets no datasheet roof
        assert roof.datasheet_gflops == {}


def test_the_roofline_figure_renders(timed):
    [report] = profile_models([TIMED], None, 1, _settings(), depth=1)
    report.roofline = _roof(datasheet_gflops={"tf32": 500.0}, datasheet_gbs=30.0)
    files = plots.roofline([report])
    assert set(files) == {"roofline.png", "roofline.svg"}
    assert files["roofline.png"].startswith(b"\x89PNG") and b"<svg" in files["roofline.svg"]
    assert plots.roofline([]) == {}


def test_the_report_profiles_the_pair_at_depth_3(monkeypatch):
    seen = {}

    def fake(names, size, batch_size, settings, **kwargs):
        seen.update(names=names, size=size, iters=settings.iters, threads=settings.threads, **kwargs)
        return []

    monkeypatch.setattr(profile.driver, "profile_models", fake)
    profile.profile_for_report(LatencySettings(warmup=2, iters=10, threads=1))
    assert seen["names"] == ["hrvit_b1_seg_ade20k", "mit_b1_seg_ade20k"] and seen["size"] is None
    assert (seen["iters"], seen["threads"], seen["depth"]) == (5, 1, 3)


# ---------------------------------------------------------------------------------------------------------------
# The command.


def run(*args):
    return runner.invoke(app, list(args))


def test_profile_json_is_a_list_with_rows_and_the_check(toy_model, fixed_roofs):
    result = run("profile", "-m", toy_model, "--depth", "1", "--iters", "2", "--warmup", "0", "--threads", "1",
                 "--json")
    assert result.exit_code == 0, result.output
    [data] = json.loads(result.stdout)
    assert data["model"] == toy_model and data["depth"] == 1 and data["convention"] == "macs-all-1e9"
    rows = {r["name"]: r for r in data["rows"]}
    assert rows["conv"]["macs"] == toy_macs(1, 32, 48)["conv"]
    assert {"agreement", "overhead", "ok", "plain_ms"} <= set(data["check"])
    assert data["small_ops"]["threshold_mflops"] == 10.0 and data["roofline"]["measured_gflops"] == 100.0


def test_profile_csv_has_a_row_per_row(toy_model, fixed_roofs):
    result = run("profile", "-m", toy_model, "--by", "operator", "--iters", "2", "--warmup", "0", "--csv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("model,input,device,dtype,threads,by,depth,convention,name,kind,ms,")
    assert any(line.split(",")[8] == "conv" for line in lines[1:])


@pytest.mark.slow
def test_profile_tables_and_plot(toy_model, fixed_roofs, tmp_path):
    result = run("profile", "-m", toy_model, "--iters", "2", "--warmup", "0", "--plot", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "where the time goes, by module to depth 2" in result.stdout and "Check: the rows sum to" in result.stdout
    assert (tmp_path / "roofline.png").is_file() and (tmp_path / "roofline.svg").is_file()


def test_cpu_time_runs_on_the_threads_cpu_clock(toy_model, fixed_roofs):
    result = run("profile", "-m", toy_model, "--iters", "2", "--warmup", "0", "--threads", "1", "--cpu-time", "--json")
    assert result.exit_code == 0, result.output
    [data] = json.loads(result.stdout)
    assert data["clock"] == "the thread's CPU time"
    assert isinstance(timer.stamps_for(torch.device("cpu"), "thread"), timer.ThreadTimeStamps)
    assert type(timer.stamps_for(torch.device("cpu"))) is timer.CpuStamps


def test_thread_clock_counts_work_not_waiting():
    import time

    clock = timer.ThreadTimeStamps()
    assert clock.time(lambda: time.sleep(0.05)) < 25  # ms: a sleeping thread uses no CPU time
    assert clock.times([2_000_000, 5_000_000]) == [0.0, 3.0]  # ns stamps, ms since the first


@pytest.mark.parametrize("args, message", [
    (["--cpu-time", "--threads", "2"], "--cpu-time needs --device cpu and --threads 1"),
    (["--cpu-time", "--device", "cuda", "--threads", "1"], "--cpu-time needs --device cpu and --threads 1"),
    (["--json", "--csv"], "give --json or --csv, not both"),
    (["--by", "operator", "--plot", "x"], "--plot draws modules"),
    (["--convention", "bogus"], "unknown convention"),
    (["--dtype", "fp8"], "unknown dtype"),
    (["--input", "0x5"], "must be positive"),
])
def test_profile_usage_errors_are_one_line_exit_2(monkeypatch, toy_model, args, message):
    from hrvit_bench.latency import settings

    monkeypatch.setattr(settings, "available_cpus", lambda: 4)  # --threads 2 is allowed on any machine
    result = run("profile", "-m", toy_model, *args)
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert message in line


def test_profile_on_a_missing_gpu_stops_before_building(monkeypatch, toy_model):
    from hrvit_bench import zoo

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(zoo, "build", lambda *a, **k: pytest.fail("nothing may be built"))
    result = run("profile", "-m", toy_model, "--device", "cuda")
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: --device cuda:")
