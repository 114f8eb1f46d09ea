"""The CUDA path of the latency harness, on a machine without a GPU: torch.cuda stubbed, fake clocks and devices.

What is checked is the harness's logic (which peak, which memory peak, graph checks, recovery from an
out-of-memory inside a capture, clock sampling), never a timing.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import stat
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import hrvit_bench_models as models
from hrvit_bench import cli, zoo
from hrvit_bench.environment import ClockSampler, Environment, NvmlClocks, SmiClocks, gpu_clock_source
from hrvit_bench.errors import UsageError
from hrvit_bench.latency import LatencySettings, session, sweep, timer
from hrvit_bench.latency.peaks import ALL_OPS, CONV_OPS, MATMUL_OPS, PeakChoice, choose_peak, gpu_peak

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------------------
# A stand-in for torch.cuda: streams, memory peaks, graph capture; everything runs on the CPU.


class FakeStream:
    def __init__(self, name: str):
        self.name = name

    def wait_stream(self, other) -> None:
        pass


class FakeGraph:
    def __init__(self, cuda: "FakeCuda"):
        self.cuda, self.captured, self.was_reset, self.replays = cuda, False, False, 0
        cuda.graphs.append(self)

    def replay(self) -> None:
        assert self.captured and not self.was_reset
        self.replays += 1

    def reset(self) -> None:
        self.was_reset = True


class FakeCuda:
    """What the harness calls on torch.cuda, recorded. Like torch.cuda.graph, a capture whose end fails leaves
    the capture stream current."""

    def __init__(self):
        self.default = FakeStream("default")
        self.current = self.default
        self.allocated, self.peak = 0, 0
        self.capturing = False
        self.graphs: list[FakeGraph] = []
        self.log: list[str] = []
        self.capture_end_error: BaseException | None = None
        self.sync_error: BaseException | None = None  # raised by the next synchronize only

    def install(self, monkeypatch) -> "FakeCuda":
        for name in ("current_stream", "set_stream", "Stream", "stream", "synchronize", "reset_peak_memory_stats",
                     "max_memory_allocated", "max_memory_reserved", "empty_cache", "CUDAGraph", "graph"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        monkeypatch.setattr(timer, "CudaEventClock", FakeEventClock)
        monkeypatch.setattr(sweep, "random_input", lambda shape, settings: torch.randn(shape))
        return self

    def touch(self, nbytes: int) -> None:
        """A forward's temporary memory: it raises the peak, then is freed."""
        self.peak = max(self.peak, self.allocated + nbytes)

    # torch.cuda's API
    def current_stream(self, device=None):
        return self.current

    def set_stream(self, stream) -> None:
        self.log.append(f"set_stream {stream.name}")
        self.current = stream

    def Stream(self):  # noqa: N802 - torch's name
        return FakeStream("side")

    @contextlib.contextmanager
    def stream(self, stream):
        previous, self.current = self.current, stream
        try:
            yield
        finally:
            self.current = previous

    def synchronize(self, device=None) -> None:
        self.log.append("synchronize")
        if self.sync_error is not None:
            error, self.sync_error = self.sync_error, None
            raise error

    def reset_peak_memory_stats(self, device=None) -> None:
        self.log.append("reset_peak")
        self.peak = self.allocated

    def max_memory_allocated(self, device=None) -> int:
        return self.peak

    def max_memory_reserved(self, device=None) -> int:
        return self.peak + 2**20

    def empty_cache(self) -> None:
        self.log.append("empty_cache")

    def CUDAGraph(self):  # noqa: N802 - torch's name
        return FakeGraph(self)

    @contextlib.contextmanager
    def graph(self, graph: FakeGraph):
        previous, self.current = self.current, FakeStream("capture")
        self.capturing = True
        try:
            yield
        finally:
            self.capturing = False
            if self.capture_end_error is not None:
                raise self.capture_end_error  # torch.cuda.graph.__exit__: the stream is not restored
            graph.captured = True
            self.current = previous


class FakeEventClock:
    """CUDA events that measure nothing: every call takes 2 ms."""

    def time(self, step) -> float:
        step()
        return 2.0


class Toy(nn.Module):
    """A 1x1 conv whose forward uses ``first_bytes`` of temporary memory on its first call and ``bytes`` after, and
    runs out of memory inside a capture at batch ``oom_batch``."""

    def __init__(self, cuda: FakeCuda, first_bytes: int = 0, nbytes: int = 0, oom_batch: int | None = None):
        super().__init__()
        self.proj = nn.Conv2d(3, 4, 1)
        self.cuda, self.first_bytes, self.nbytes, self.oom_batch, self.calls = cuda, first_bytes, nbytes, oom_batch, 0

    def forward(self, x):
        self.calls += 1
        if self.cuda.capturing and x.shape[0] == self.oom_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        self.cuda.touch(self.first_bytes if self.calls == 1 else self.nbytes)
        return self.proj(x)


def _settings(**kwargs) -> LatencySettings:
    return LatencySettings(**{"device": "cuda", "warmup": 2, "iters": 3, **kwargs})


SHAPE = (1, 3, 8, 8)


@pytest.fixture
def cuda(monkeypatch) -> FakeCuda:
    return FakeCuda().install(monkeypatch)


def _env(**changes) -> Environment:
    base = Environment.capture("cpu", "fp32")
    defaults = {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "gpu_sm_count": 132,
                "cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": True}
    return dataclasses.replace(base, **{**defaults, **changes})


# ---------------------------------------------------------------------------------------------------------------
# 1. Which peak: the dtype and BOTH TF32 switches.


@pytest.mark.parametrize(
    "dtype, matmul, conv, expected",
    [
        ("fp32", True, True, {"tf32": ALL_OPS}),
        ("fp32", False, False, {"fp32": ALL_OPS}),
        ("fp32", False, True, {"fp32": MATMUL_OPS, "tf32": CONV_OPS}),  # torch's defaults
        ("fp32", True, False, {"tf32": MATMUL_OPS, "fp32": CONV_OPS}),
        ("bf16", True, True, {"bf16": ALL_OPS}),
        ("fp16", False, True, {"fp16": ALL_OPS}),
    ],
)
def test_peak_follows_dtype_and_both_tf32_switches(dtype, matmul, conv, expected):
    choice = choose_peak(_env(dtype=dtype, cuda_matmul_allow_tf32=matmul, cudnn_allow_tf32=conv))
    assert choice.applies_to == expected and choice.warning is None
    h100 = {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4}  # the datasheet, by hand
    assert choice.tflops == {key: h100[key] for key in expected}


def test_without_tf32_tensor_cores_fp32_runs_at_the_fp32_peak():
    choice = choose_peak(_env(device_name="Tesla V100-SXM2-16GB", gpu_sm_count=80, cuda_matmul_allow_tf32=True))
    assert choice.applies_to == {"fp32": ALL_OPS} and choice.tflops == {"fp32": 15.7}


def test_no_peak_on_cpu_or_an_unknown_gpu():
    assert choose_peak(Environment.capture("cpu", "fp32")) == PeakChoice()
    assert choose_peak(_env(device_name="NVIDIA L40S")) == PeakChoice()


def test_split_peaks_give_two_fractions_each_for_its_operators():
    from hrvit_bench.latency import LatencyPoint, LatencyReport, LatencyStats

    choice = choose_peak(_env())  # matmul TF32 off, cuDNN TF32 on
    point = LatencyPoint((512, 512), 1, "ok", stats=LatencyStats.from_samples([10.0] * 5), flops=6_700_000_000_000,
                         peak_tflops=choice.tflops, memory={"cuda_warmup_max_allocated": 0, "cuda_max_allocated": 0,
                                                            "cuda_max_reserved": 0})
    # 6.7e12 flops in 10 ms = 670 TFLOP/s: 1000% of the fp32 peak (67), 135.4% of the tf32 peak (494.7)
    assert point.peak_fractions == pytest.approx({"fp32": 10.0, "tf32": 670 / 494.7})
    report = LatencyReport("m", _settings(), _env(), [point], choice)
    data = report.to_dict()
    assert data["peak_applies_to"] == {"fp32": MATMUL_OPS, "tf32": CONV_OPS}
    assert data["environment"]["cuda_matmul_allow_tf32"] is False and data["environment"]["cudnn_allow_tf32"] is True
    [table] = report.tables()
    headers = [c.header for c in table.columns]
    assert "% of H100 SXM fp32 peak" in headers and "% of H100 SXM tf32 peak" in headers
    assert "TF32 is on for some operators only" in table.caption and CONV_OPS in table.caption
    row = report.csv_rows()[0]
    assert row["peak_fraction_fp32"] == pytest.approx(10.0) and row["peak_tflops_tf32"] == 494.7


# ---------------------------------------------------------------------------------------------------------------
# 2. MIG slices and partitions get no peak.


@pytest.mark.parametrize(
    "changes, why",
    [
        ({"device_name": "NVIDIA H100 80GB HBM3 MIG 3g.40gb", "gpu_sm_count": 60}, "MIG slice"),
        ({"gpu_mig_mode": "Enabled"}, "MIG mode is enabled"),
        ({"gpu_sm_count": 66}, "66 SMs visible, but a whole H100 SXM has 132"),
        ({"device_name": "NVIDIA H100 PCIe", "gpu_sm_count": 100}, "whole H100 PCIe has 114"),
        ({"device_name": "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "gpu_sm_count": 14}, "MIG slice"),
    ],
)
def test_partial_gpus_get_no_peak(changes, why):
    choice = choose_peak(_env(**changes))
    assert choice.gpu is None and choice.tflops == {}
    assert why in choice.warning and choice.warning.startswith("no % of peak")


@pytest.mark.parametrize("name, sms", [("NVIDIA H100 80GB HBM3", 132), ("NVIDIA H100 PCIe", 114),
                                       ("NVIDIA H200", 132), ("NVIDIA A100-SXM4-80GB", 108)])
def test_whole_chips_keep_their_peak(name, sms):
    assert gpu_peak(name).sms == sms
    assert choose_peak(_env(device_name=name, gpu_sm_count=sms, gpu_mig_mode="Disabled")).warning is None


# ---------------------------------------------------------------------------------------------------------------
# 3. Memory: warm-up peak apart from the timed calls' peak.


def test_memory_peak_is_reset_after_warmup(cuda):
    model = Toy(cuda, first_bytes=1000, nbytes=100)  # e.g. cuDNN autotune's workspace on the first call only
    point = sweep.measure_point(model, SHAPE, _settings())
    assert point.status == "ok" and model.calls == 2 + 3
    assert point.memory == {"cuda_warmup_max_allocated": 1000, "cuda_warmup_max_reserved": 1000 + 2**20,
                            "cuda_max_allocated": 100, "cuda_max_reserved": 100 + 2**20}
    assert cuda.log.count("reset_peak") == 2  # before the warm-up and after it
    assert point.stats.median_ms == 2.0  # the fake event clock's samples


def test_memory_keys_are_labelled_in_table_and_csv(cuda):
    from hrvit_bench.latency import LatencyReport

    point = sweep.measure_point(Toy(cuda, first_bytes=3 * 2**20, nbytes=2**20), SHAPE, _settings())
    report = LatencyReport("toy", _settings(), _env(), [point])
    [table] = report.tables()
    headers = [c.header for c in table.columns]
    assert "warm-up MiB" in headers and "alloc/resv MiB" in headers
    assert table.columns[headers.index("warm-up MiB")]._cells == ["3"]
    assert table.columns[headers.index("alloc/resv MiB")]._cells == ["1/2"]
    row = report.csv_rows()[0]
    assert row["cuda_warmup_max_allocated_bytes"] == 3 * 2**20 and row["cuda_max_allocated_bytes"] == 2**20
    assert "warm-up" in report.to_dict()["memory_note"]


# ---------------------------------------------------------------------------------------------------------------
# 4. CUDA graphs: enough warm-up for compiled graphs, and graphs verified, never assumed.


def test_compiled_graphs_need_three_warmup_calls():
    with pytest.raises(UsageError, match="--warmup 3 or more"):
        _settings(compile=True, cuda_graphs=True, warmup=2)
    assert _settings(compile=True, cuda_graphs=True, warmup=3).warmup == 3
    assert _settings(cuda_graphs=True, warmup=1).warmup == 1  # the manual capture warms up itself


def test_compiled_graphs_with_warmup_1_is_one_line_exit_2(monkeypatch):
    monkeypatch.setattr(zoo, "build", lambda *a, **k: pytest.fail("no model may be built"))
    result = CliRunner().invoke(cli.app, ["latency", "-m", "hrvit_b1", "--device", "cuda", "--compile",
                                          "--cuda-graphs", "--warmup", "1"])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "--warmup 3" in line


def test_graph_launches_are_counted_from_profiler_event_names():
    assert timer.count_graph_launches(["aten::conv2d", "cudaGraphLaunch", "cudaStreamSynchronize"]) == 1
    assert timer.count_graph_launches(["cudaLaunchKernel", "cuLaunchKernel", "aten::add"]) == 0
    assert timer.count_graph_launches(["cuGraphLaunch", "cudaGraphLaunch_v10000"]) == 2
    assert timer.count_graph_launches(["aten::conv2d", "aten::add"]) is None  # the profiler saw no CUDA


@pytest.mark.parametrize(
    "launches, engaged, warning",
    [(1, True, None), (0, False, "did not engage"), (None, None, "unverified")],
)
def test_manual_graph_is_captured_replayed_and_verified(cuda, monkeypatch, launches, engaged, warning):
    monkeypatch.setattr(sweep, "graph_launches", lambda step: launches)
    model = Toy(cuda)
    point = sweep.measure_point(model, SHAPE, _settings(cuda_graphs=True))
    [graph] = cuda.graphs
    assert graph.captured and graph.replays == 2 + 3  # warm-up and timed calls replay; the model ran 3 + 1 times
    assert model.calls == 4
    assert point.cuda_graphs_engaged is engaged and point.graph_launches_per_call == launches
    assert [w for w in point.warnings if warning and warning in w] == ([] if warning is None else point.warnings)
    assert len(point.warnings) == (0 if warning is None else 1)


def test_compiled_graphs_skipped_by_inductor_are_reported(cuda, monkeypatch):
    from torch._dynamo.utils import counters

    def make_step(model, x, settings):  # inductor declining CUDA graphs during the first (compiling) call
        calls = []

        def step():
            if not calls:
                counters["inductor"]["cudagraph_skips"] += 1
            calls.append(1)
            return model(x)

        return step

    monkeypatch.setattr(sweep, "make_step", make_step)
    monkeypatch.setattr(sweep, "graph_launches", lambda step: 0)
    point = sweep.measure_point(Toy(cuda), SHAPE, _settings(compile=True, cuda_graphs=True, warmup=3))
    assert point.status == "ok" and point.cuda_graphs_engaged is False
    [warning] = point.warnings
    assert "skipped them 1 time(s)" in warning and "eager" in warning


# ---------------------------------------------------------------------------------------------------------------
# 5. Out of memory inside a capture: one "oom" point, the stream restored, memory freed, the next point runs.


@pytest.mark.parametrize("capture_end_fails", [False, True])
def test_oom_inside_manual_capture_is_a_point_and_the_sweep_goes_on(cuda, monkeypatch, capture_end_fails):
    monkeypatch.setattr(sweep, "graph_launches", lambda step: 1)
    if capture_end_fails:  # capture_end reports the broken capture, the stream stays the capture stream,
        cuda.capture_end_error = RuntimeError("CUDA error: operation failed due to a previous error during capture")
        cuda.sync_error = RuntimeError("CUDA error: operation not permitted when stream is capturing")
    model = Toy(cuda, oom_batch=2)
    oom = sweep.measure_point(model, (2, 3, 8, 8), _settings(cuda_graphs=True))
    assert oom.status == "oom" and "out of memory" in oom.error and oom.stats is None
    [half_built] = cuda.graphs
    assert half_built.was_reset  # dropped with its memory pool
    assert cuda.current is cuda.default and not cuda.capturing
    assert cuda.log[-3:] == ["set_stream default", "synchronize", "empty_cache"]
    assert cuda.sync_error is None  # the synchronise that raised was the one after the failed capture

    cuda.capture_end_error = None
    ok = sweep.measure_point(model, (1, 3, 8, 8), _settings(cuda_graphs=True))
    assert ok.status == "ok" and ok.cuda_graphs_engaged is True and cuda.graphs[-1].replays == 5


def test_oom_inside_compiled_capture_resets_compiled_graphs(cuda, monkeypatch):
    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))

    def make_step(model, x, settings):  # cudagraph trees recording on the 2nd call, which runs out of memory
        calls = []

        def step():
            calls.append(1)
            with cuda.graph(cuda.CUDAGraph()) if len(calls) == 2 else contextlib.nullcontext():
                return model(x)

        return step

    monkeypatch.setattr(sweep, "make_step", make_step)
    point = sweep.measure_point(Toy(cuda, oom_batch=1), SHAPE, _settings(compile=True, cuda_graphs=True, warmup=3))
    assert point.status == "oom" and resets == [1]
    assert cuda.current is cuda.default and cuda.log[-1] == "empty_cache"


# ---------------------------------------------------------------------------------------------------------------
# 6. Clocks sampled while the timed calls run.


class FakeClocks:
    """Readings from a list, then the end of the source; each open starts the list again."""

    name = "fake"
    pause_s = 0.001

    def __init__(self, readings, open_error: BaseException | None = None):
        self.listed, self.open_error, self.opened, self.closed = list(readings), open_error, False, False

    def open(self) -> None:
        if self.open_error:
            raise self.open_error
        self.readings, self.opened = list(self.listed), True

    def read(self):
        return self.readings.pop(0) if self.readings else None

    def close(self) -> None:
        self.closed = True


def _drain(sampler: ClockSampler, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(sampler.readings) < count and time.monotonic() < deadline:
        time.sleep(0.005)


def test_clock_sampler_min_and_median():
    source = FakeClocks([(1980.0, 2619.0), (1755.0, 2619.0), (1980.0, None), (1600.0, 2619.0)])
    with ClockSampler(source) as sampler:
        _drain(sampler, 4)
    assert source.opened and source.closed
    assert sampler.summary() == {"source": "fake", "samples": 4, "sm_min_mhz": 1600.0,
                                 "sm_median_mhz": (1755.0 + 1980.0) / 2, "mem_min_mhz": 2619.0,
                                 "mem_median_mhz": 2619.0}


def test_clock_source_that_fails_never_fails_timing():
    with ClockSampler(FakeClocks([], open_error=OSError("NVML Shared Library Not Found"))) as sampler:
        pass
    assert sampler.summary() == {"source": "fake", "samples": 0, "sm_min_mhz": None, "sm_median_mhz": None,
                                 "mem_min_mhz": None, "mem_median_mhz": None, "error": "NVML Shared Library Not Found"}


def test_measure_point_samples_clocks_during_timed_calls(cuda):
    point = sweep.measure_point(Toy(cuda), SHAPE, _settings(), clock_source=FakeClocks([(1755.0, 2619.0)]))
    assert point.clocks_mhz["samples"] == 1 and point.clocks_mhz["sm_median_mhz"] == 1755.0


FAKE_SMI = """#!/bin/sh
case "$*" in
  *--loop-ms*) while true; do echo "1755, 2619"; echo "[N/A], 2619"; sleep 0.02; done ;;
  *) echo "550.54.15, 345, 1593, 1980, 2619, 700.00, Disabled" ;;
esac
"""


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    exe = tmp_path / "nvidia-smi"
    exe.write_text(FAKE_SMI)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    return str(exe)


def test_nvidia_smi_loop_is_read_and_stopped(fake_smi):
    source = SmiClocks(fake_smi, "0", interval_ms=20)
    with ClockSampler(source) as sampler:
        _drain(sampler, 4)
    summary = sampler.summary()
    assert summary["source"] == "nvidia-smi" and summary["samples"] >= 4
    assert summary["sm_min_mhz"] == 1755.0 and summary["mem_median_mhz"] == 2619.0  # "[N/A]" left out
    assert source.process is None  # terminated


def _fake_gpu(monkeypatch, name="NVIDIA H100 80GB HBM3", sms=132):
    props = types.SimpleNamespace(multi_processor_count=sms, pci_domain_id=0, pci_bus_id=0x65, pci_device_id=0)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=None: props)


def test_environment_labels_idle_clocks_and_reads_sms_and_mig(fake_smi, monkeypatch):
    _fake_gpu(monkeypatch, sms=132)
    env = Environment.capture("cuda", "fp32")
    assert env.device_name == "NVIDIA H100 80GB HBM3" and env.gpu_sm_count == 132
    assert env.driver_version == "550.54.15" and env.gpu_power_limit_w == 700.0 and env.gpu_mig_mode == "Disabled"
    assert env.gpu_idle_clocks_mhz == {"clocks.sm": 345.0, "clocks.mem": 1593.0, "clocks.max.sm": 1980.0,
                                       "clocks.max.mem": 2619.0}
    assert "SM 345 MHz idle" in env.summary()


def test_clock_source_prefers_nvml_then_nvidia_smi(fake_smi, monkeypatch):
    _fake_gpu(monkeypatch)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    source = gpu_clock_source(torch.device("cuda"))
    assert isinstance(source, SmiClocks) and source.command[-1] == "00000000:65:00.0"

    nvml = types.SimpleNamespace(
        NVML_CLOCK_SM=0, NVML_CLOCK_MEM=1, nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByPciBusId=lambda bus: ("handle", bus),
        nvmlDeviceGetClockInfo=lambda handle, clock: {0: 1980, 1: 2619}[clock],
    )
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    source = gpu_clock_source(torch.device("cuda"))
    assert isinstance(source, NvmlClocks)
    source.open()
    assert source.handle == ("handle", "00000000:65:00.0") and source.read() == (1980.0, 2619.0)
    source.close()

    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert gpu_clock_source(torch.device("cuda")) is None


# ---------------------------------------------------------------------------------------------------------------
# The whole sweep on a fake GPU: peak choice, MIG warning, memory, clocks.


TOY = "toy_latency_cuda"


@pytest.fixture
def toy_on_fake_gpu(cuda, monkeypatch):
    models.register_model(family="toy", variant="t", task="backbone", input_size=(8, 8), reference="test",
                          official_code="none", input_multiple=1, name=TOY)(lambda **kw: Toy(cuda, nbytes=100))
    real_build = zoo.build
    monkeypatch.setattr(zoo, "build", lambda name, device="cpu": real_build(name, device="meta" if device == "meta"
                                                                           else "cpu"))
    monkeypatch.setattr(session, "preflight", lambda settings: [])
    monkeypatch.setattr(session, "pinned", lambda settings: contextlib.nullcontext())
    monkeypatch.setattr(sweep, "prepare", lambda model, settings: model.eval())
    monkeypatch.setattr(sweep, "gpu_clock_source", lambda device: FakeClocks([(1980.0, 2619.0)]))
    yield TOY
    models.unregister_model(TOY)


@pytest.mark.parametrize("mig", [False, True])
def test_sweep_on_fake_gpu(toy_on_fake_gpu, monkeypatch, mig):
    env = _env(device_name="NVIDIA H100 80GB HBM3 MIG 3g.40gb" if mig else "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(session.Environment, "capture", lambda device, dtype: env)
    warned = []
    [report] = sweep.run([toy_on_fake_gpu], [None], [1, 2], _settings(), warn=warned.append)
    assert [p.status for p in report.points] == ["ok", "ok"]
    for p in report.points:
        assert p.memory["cuda_max_allocated"] == 100 and p.clocks_mhz["sm_median_mhz"] == 1980.0
        assert p.flops == 2 * p.batch_size * 4 * 3 * 8 * 8
    if mig:
        assert report.peak.gpu is None and all(p.peak_tflops == {} for p in report.points)
        assert any("MIG slice" in w for w in report.warnings) and warned == report.warnings
    else:
        assert report.points[0].peak_tflops == {"fp32": 67.0, "tf32": 494.7} and warned == []


# ---------------------------------------------------------------------------------------------------------------
# The GPU suite's smoke mode, on CPU: every section but compile (run by hand: about 90 s here), and a resume.


def _load_suite(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_suite", module)  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


TOY_OOM = "toy_suite_oom"


class OomAtBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        if x.shape[0] >= 2 and not x.is_meta:
            raise MemoryError()
        return self.proj(x)


@pytest.fixture
def suite(monkeypatch):
    models.register_model(family="toy", variant="t", task="backbone", input_size=(64, 64), reference="test",
                          official_code="none", input_multiple=1, name=TOY_OOM)(lambda **kw: OomAtBatch())
    yield _load_suite(monkeypatch)
    models.unregister_model(TOY_OOM)


def _results(folder) -> dict:
    return json.loads((folder / "results.json").read_text())


@pytest.mark.slow
def test_gpu_suite_smoke_runs_resumes_and_keeps_to_its_budget(suite, tmp_path):
    config = dataclasses.replace(
        suite.SMOKE, models=("mit_b1_seg_ade20k",), agreement=(("mit_b1_seg_ade20k", "64x64", "fp32"),),
        repeats=2, small_model=TOY_OOM, batch_cap=8, claims_args=("list", "--family", "mit", "--json"),
    )
    sections = "--sections=agreement,eager,repeat,batch,claims"
    # no budget: nothing measured, everything left for a rerun
    assert suite.main(["--out", str(tmp_path), sections, "--budget-s", "0"], config) == 0
    [(slug, device)] = _results(tmp_path)["devices"].items()
    assert slug.endswith("-smoke") and device["points"] == {}
    [first] = device["runs"]
    assert {s["section"]: len(s["left_for_rerun"]) for s in first["sections"]} == {
        "agreement": 1, "eager": 1, "repeat": 2, "batch": 4, "claims": 1}

    assert suite.main(["--out", str(tmp_path), sections], config) == 0
    # three flat files: the device tool returns at most 8, no deeper than 2 folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SUMMARY.md", "results.json", "suite_log.txt"]
    points = _results(tmp_path)["devices"][slug]["points"]
    assert {section: sorted(records) for section, records in points.items()} == {
        "agreement": ["mit_b1_seg_ade20k-64x64-fp32"], "eager": ["mit_b1_seg_ade20k-64x64-b1-fp32-eager"],
        "repeat": [f"{TOY_OOM}-64x64-b1-fp32-eager-1", f"{TOY_OOM}-64x64-b1-fp32-eager-2"],
        # the batch sweep stops at its first out-of-memory point: batch 4 and 8 are never tried
        "batch": [f"{TOY_OOM}-64x64-b1-fp32-eager", f"{TOY_OOM}-64x64-b2-fp32-eager"],
        "claims": ["claims"],
    }
    assert points["batch"][f"{TOY_OOM}-64x64-b2-fp32-eager"]["status"] == "oom"
    eager = points["eager"]["mit_b1_seg_ade20k-64x64-b1-fp32-eager"]
    assert eager["status"] == "ok" and eager["report"]["points"][0]["latency_ms"]["n"] == 2
    assert eager["report"]["settings"]["threads"] == 1
    assert points["agreement"]["mit_b1_seg_ade20k-64x64-fp32"]["ratio"] > 0
    claims = points["claims"]["claims"]  # the CLI in a subprocess, through the suite's import fallback
    assert claims["status"] == "ok" and {m["name"] for m in claims["claims"]} >= {"mit_b1_seg_ade20k"}
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "First out-of-memory at batch 2." in summary and "run-to-run CV" in summary

    assert suite.main(["--out", str(tmp_path), sections], config) == 0  # the resume: every point is done
    device = _results(tmp_path)["devices"][slug]
    assert device["points"] == points  # not one record measured again
    assert all(s["measured"] == 0 for s in device["runs"][-1]["sections"])
    assert sum(s["skipped_done"] for s in device["runs"][-1]["sections"]) == 7
    assert len(device["runs"]) == 3 and "[plan] eager: 1 points, 1 done before" in (tmp_path / "suite_log.txt").read_text()


@pytest.mark.slow
def test_gpu_suite_records_a_failing_claims_command_and_goes_on(suite, tmp_path):
    config = dataclasses.replace(suite.SMOKE, claims_args=("claims", "--no-such-option"))
    assert suite.main(["--out", str(tmp_path), "--sections=claims"], config) == 0
    [device] = _results(tmp_path)["devices"].values()
    record = device["points"]["claims"]["claims"]
    assert record["status"] == "error" and record["returncode"] == 2 and "no-such-option" in record["error"]
    assert "Failed:" in (tmp_path / "SUMMARY.md").read_text()


@pytest.mark.slow
def test_gpu_suite_imports_without_pip_install():
    """The device machine may lack the editable install: models/ is then loaded under its installed name."""
    code = ("import sys; sys.modules['hrvit_bench_models'] = None; import runpy; "
            f"runpy.run_path({str(ROOT / 'benchmarks' / 'gpu_suite.py')!r}, run_name='suite'); "
            "import hrvit_bench_models, hrvit_bench.zoo as zoo; print(zoo.info('mit_b1_seg_ade20k').name)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "mit_b1_seg_ade20k"


@pytest.mark.slow
def test_nothing_on_the_suite_path_imports_fvcore_or_thop():
    code = ("import sys; sys.argv = ['gpu_suite']; import runpy; "
            f"runpy.run_path({str(ROOT / 'benchmarks' / 'gpu_suite.py')!r}, run_name='suite'); "
            "from hrvit_bench import latency; latency.run(['mit_b1_seg_ade20k'], [(64, 64)], [1], "
            "latency.LatencySettings(iters=1, warmup=0, threads=1)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fvcore', 'thop')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_gpu_suite_profile_section_runs_the_cli_and_draws_the_roofline(suite, tmp_path):
    assert suite.main(["--out", str(tmp_path), "--sections=profile"], suite.SMOKE) == 0
    [(_, device)] = _results(tmp_path)["devices"].items()
    [record] = device["points"]["profile"].values()
    assert record["status"] == "ok", record.get("error")
    [report] = record["profile"]
    assert (report["model"], report["by"], report["input"]) == ("mit_b1_seg_ade20k", "module", "1x3x64x64")
    assert report["check"]["plain_ms"] > 0 and report["rows"]
    assert (tmp_path / "roofline.png").stat().st_size > 0 and (tmp_path / "roofline.svg").is_file()
    assert "mit_b1_seg_ade20k by module: plain median" in (tmp_path / "SUMMARY.md").read_text()
