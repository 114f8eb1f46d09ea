"""The latency harness: statistics, call counts, pinned threads, OOM in a sweep, usage errors, output keys.

No timing number is asserted: a shared CI machine makes them noise. Toy models keep every test fast.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics

import numpy as np
import pytest
import torch
from torch import nn
from rich.console import Console
from typer.testing import CliRunner

import hrvit_bench_models as models
from hrvit_bench import cli, latency, zoo
from hrvit_bench.environment import Environment
from hrvit_bench.errors import UsageError
from hrvit_bench.latency import LatencyPoint, LatencyReport, LatencySettings, LatencyStats
from hrvit_bench.latency.results import min_samples

runner = CliRunner()

TOY = "toy_latency_conv"
TOY_OOM = "toy_latency_oom"


class ToyConv(nn.Module):
    """One 1x1 conv, 3 -> 4 channels: 12 MACs per pixel per image, the only counted operator.

    Raises ``oom_error`` when called with ``oom_batch`` images, as an allocator would.
    """

    def __init__(self, oom_batch: int | None = None, oom_error: BaseException | None = None):
        super().__init__()
        self.proj = nn.Conv2d(3, 4, 1, bias=False)
        self.oom_batch, self.oom_error = oom_batch, oom_error

    def forward(self, x):
        if x.shape[0] == self.oom_batch and not x.is_meta:
            raise self.oom_error
        return self.proj(x)


built: list[ToyConv] = []


def _register(name: str, **kwargs):
    def build(**overrides):
        model = ToyConv(**{**kwargs, **overrides})
        model.calls, model.threads_seen = 0, set()

        def count(module, inputs):
            if not inputs[0].is_meta:  # the FLOP count's meta forward is not a timed call
                module.calls += 1
                module.threads_seen.add(torch.get_num_threads())

        model.register_forward_pre_hook(count)
        built.append(model)
        return model

    models.register_model(
        family="toy", variant="t", task="backbone", input_size=(16, 16), reference="test",
        official_code="none", input_multiple=1, name=name,
    )(build)


@pytest.fixture
def toy():
    built.clear()
    _register(TOY)
    yield TOY
    models.unregister_model(TOY)


OOM_ERRORS = {
    "cuda": torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "memory_error": MemoryError(),
    "cpu_allocator": RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 bytes"),
}


@pytest.fixture(params=sorted(OOM_ERRORS))
def toy_oom(request):
    _register(TOY_OOM, oom_batch=2, oom_error=OOM_ERRORS[request.param])
    yield TOY_OOM
    models.unregister_model(TOY_OOM)


def _run_cli(*args: str):
    return runner.invoke(cli.app, ["latency", *args])


# ---------------------------------------------------------------------------------------------------------------
# Statistics.


def test_stats_by_hand():
    stats = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0, 100.0])
    # linear interpolation between order statistics: rank q * (n - 1)
    assert stats.median_ms == 3.0
    assert stats.p90_ms == pytest.approx(4.0 + 0.6 * 96.0)
    assert stats.p99_ms == pytest.approx(4.0 + 0.96 * 96.0)
    assert stats.iqr_ms == pytest.approx(4.0 - 2.0)
    assert stats.mean_ms == pytest.approx(22.0)
    std = math.sqrt((21**2 + 20**2 + 19**2 + 18**2 + 78**2) / 4)  # sample std, n - 1
    assert stats.std_ms == pytest.approx(std)
    assert stats.cv == pytest.approx(std / 22.0)
    assert (stats.n, stats.min_ms, stats.max_ms) == (5, 1.0, 100.0)


def test_stats_against_the_statistics_module():
    # An independent implementation: statistics.quantiles' "inclusive" method interpolates linearly between order
    # statistics at rank p * (n - 1), as the harness promises.
    samples = np.random.default_rng(0).lognormal(mean=3.0, sigma=0.3, size=257).tolist()
    stats = LatencyStats.from_samples(samples)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")  # cuts[k - 1] is the k-th percentile
    assert stats.median_ms == pytest.approx(statistics.median(samples))
    assert stats.p90_ms == pytest.approx(cuts[89])
    assert stats.p99_ms == pytest.approx(cuts[98])
    assert stats.iqr_ms == pytest.approx(cuts[74] - cuts[24])
    assert stats.cv == pytest.approx(statistics.stdev(samples) / statistics.fmean(samples))
    assert list(stats.samples_ms) == pytest.approx(samples)


def test_single_sample_has_no_spread():
    stats = LatencyStats.from_samples([7.5])
    assert (stats.median_ms, stats.p99_ms, stats.std_ms, stats.iqr_ms, stats.cv) == (7.5, 7.5, 0.0, 0.0, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# The harness.


def test_time_calls_counts_warmup_and_timed_calls():
    calls = []
    samples = latency.time_calls(lambda: calls.append(1), torch.device("cpu"), warmup=3, iters=7)
    assert len(calls) == 10 and len(samples) == 7
    assert all(s >= 0 for s in samples)


def test_min_time_takes_at_least_the_minimum_samples():
    samples = latency.time_calls(lambda: None, torch.device("cpu"), warmup=0, min_time=1e-9)
    assert len(samples) == latency.MIN_SAMPLES


def test_run_calls_model_warmup_plus_iters_with_pinned_threads(toy):
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    settings = LatencySettings(warmup=2, iters=5, threads=wanted)
    [report] = latency.run([toy], [(16, 16), (8, 8)], [1, 3], settings)
    [timed] = [m for m in built if not next(m.parameters()).is_meta]
    assert timed.calls == 4 * (2 + 5)  # four sweep points
    assert timed.threads_seen == {wanted}
    assert torch.get_num_threads() == before  # restored afterwards
    assert report.environment.threads == wanted and report.settings.threads == wanted
    assert [(p.input_size, p.batch_size) for p in report.points] == [
        ((16, 16), 1), ((16, 16), 3), ((8, 8), 1), ((8, 8), 3)]
    for p in report.points:
        assert p.status == "ok" and p.stats.n == 5
        h, w = p.input_size
        assert p.flops == 2 * p.batch_size * 4 * 3 * h * w  # 2 x MACs of the 1x1 conv
        assert p.achieved_tflops == pytest.approx(p.flops / (p.stats.median_ms / 1e3) / 1e12)
        assert p.throughput == pytest.approx(p.batch_size * 1e3 / p.stats.median_ms)
        assert p.memory["process_peak_rss"] > 0
        assert p.peak_tflops == {} and p.peak_fractions == {}  # no GPU peak on CPU


def test_oom_in_sweep_is_reported_and_sweep_goes_on(toy_oom):
    [report] = latency.run([toy_oom], [None], [1, 2, 3], LatencySettings(warmup=1, iters=2))
    assert [p.status for p in report.points] == ["ok", "oom", "ok"]
    oom = report.points[1]
    assert oom.stats is None and oom.flops is None and oom.error
    assert report.points[2].stats.n == 2
    assert "OOM" in "".join(str(cell) for col in report.tables()[0].columns for cell in col._cells)


def test_other_errors_are_not_swallowed_as_oom():
    name = "toy_latency_bug"
    _register(name, oom_batch=1, oom_error=RuntimeError("shape mismatch"))
    try:
        with pytest.raises(RuntimeError, match="shape mismatch"):
            latency.run([name], [None], [1], LatencySettings(warmup=1, iters=1))
    finally:
        models.unregister_model(name)


def _raised_while_handling(first: BaseException, second: BaseException) -> BaseException:
    try:
        try:
            raise first
        except BaseException:
            raise second
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    "exc, oom",
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory."), True),
        # a capture that ran out of memory, failing again at capture_end: the second error propagates
        (_raised_while_handling(torch.cuda.OutOfMemoryError("CUDA out of memory."),
                                RuntimeError("operation failed due to a previous error during capture")), True),
        (_raised_while_handling(ValueError("bad"), RuntimeError("shape mismatch")), False),
        (MemoryError(), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
        (RuntimeError("required rank 4 tensor to use channels_last memory format"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_out_of_memory_is_recognised(exc, oom):
    assert latency.is_out_of_memory(exc) is oom


def test_cross_check_puts_timer_median_beside_ours(toy):
    [report] = latency.run([toy], [None], [1], LatencySettings(warmup=1, iters=3, cross_check=True))
    point = report.points[0]
    assert point.reference_median_ms > 0
    assert point.reference_ratio == pytest.approx(point.stats.median_ms / point.reference_median_ms)


@pytest.mark.parametrize(
    "device_name, label",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200 SXM"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA L4", "L4"),
        ("Tesla V100-SXM2-16GB", "V100 SXM2"),
        ("Tesla V100-PCIE-32GB", "V100 PCIe"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA A10G", None),
        ("NVIDIA L40S", None),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA GH200 480GB", None),
    ],
)
def test_gpu_peak_table_matches_device_names(device_name, label):
    peak = latency.gpu_peak(device_name)
    assert (peak.label if peak else None) == label


def test_fp32_uses_tf32_peak_only_when_allowed():
    assert latency.peak_key("fp32", allow_tf32=False) == "fp32"
    assert latency.peak_key("fp32", allow_tf32=True) == "tf32"
    assert latency.peak_key("bf16", allow_tf32=True) == "bf16"


def test_environment_block():
    env = Environment.capture("cpu", "bf16").to_dict()
    assert env["torch_version"] == torch.__version__
    assert env["threads"] == torch.get_num_threads()
    assert env["dtype"] == "bf16" and env["device"] == "cpu"
    for key in ("cpu_model", "cuda_matmul_allow_tf32", "cudnn_allow_tf32", "float32_matmul_precision",
                "cudnn_benchmark", "load_average", "driver_version", "gpu_idle_clocks_mhz", "gpu_sm_count",
                "gpu_mig_mode"):
        assert key in env
    json.dumps(env)


def test_fp16_on_cpu_is_refused_where_kernels_are_missing(monkeypatch):
    def missing(*args, **kwargs):
        raise RuntimeError("\"slow_conv2d_cpu\" not implemented for 'Half'")

    monkeypatch.setattr(torch.nn.functional, "conv2d", missing)
    with pytest.raises(UsageError, match="fp16 does not run on CPU"):
        latency.preflight(LatencySettings(dtype="fp16"))


def test_fp16_on_cpu_warns_where_it_runs():
    [warning] = latency.preflight(LatencySettings(dtype="fp16"))  # torch >= 2.1 has CPU fp16 kernels
    assert "fp16" in warning


@pytest.mark.parametrize("native, warned", [(False, True), (True, False), (None, False)])
def test_bf16_on_cpu_warns_only_without_native_bf16(monkeypatch, native, warned):
    from hrvit_bench.latency import settings as latency_settings

    monkeypatch.setattr(latency_settings, "cpu_has_native_bf16", lambda: native)
    warnings = latency.preflight(LatencySettings(dtype="bf16"))
    assert [w for w in warnings if "bf16" in w and "several times slower" in w] == (warnings if warned else [])
    assert len(warnings) == int(warned)
    assert latency.preflight(LatencySettings(dtype="fp32")) == []  # fp32 never gets it


def test_bf16_flags_are_read_from_cpuinfo():
    from hrvit_bench.latency.settings import cpu_has_native_bf16

    x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {}\nbugs\t\t: spectre_v1\n"
    assert cpu_has_native_bf16(x86.format("avx512_bf16")) is True
    assert cpu_has_native_bf16(x86.format("amx_bf16 amx_tile")) is True
    assert cpu_has_native_bf16(x86.format("avx512_vnni")) is False  # avx512_vnni: no bf16
    assert cpu_has_native_bf16("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n") is True  # Arm
    assert cpu_has_native_bf16("processor\t: 0\nFeatures\t: fp asimd\n") is False
    assert cpu_has_native_bf16("model name\t: something\n") is None  # no flags line: unknown, no warning


def test_bf16_warning_reaches_the_command_line(monkeypatch, toy):
    from hrvit_bench.latency import settings as latency_settings

    monkeypatch.setattr(latency_settings, "cpu_has_native_bf16", lambda: False)
    result = _run_cli("-m", toy, "--dtype", "bf16", "--iters", "3", "--warmup", "1", "--json")
    assert result.exit_code == 0, result.output
    assert "warning: bf16 on a CPU without bf16 arithmetic" in result.stderr
    json.loads(result.stdout)


# ---------------------------------------------------------------------------------------------------------------
# The command line.


def _refuse_build(monkeypatch):
    def build(*args, **kwargs):
        raise AssertionError("no model may be built")

    monkeypatch.setattr(zoo, "build", build)


def test_cuda_without_gpu_exits_2_before_building(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _refuse_build(monkeypatch)
    result = _run_cli("-m", "hrvit_b1", "--device", "cuda")
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "cuda" in line.lower() and "error" in line


@pytest.mark.parametrize(
    "args, message",
    [
        (["--iters", "0"], "--iters"),
        (["--threads", "0"], "--threads"),
        (["--warmup", "-1"], "--warmup"),
        (["--batch-size", "0"], "batch size"),
        (["--batch-size", "1,-2"], "batch size"),
        (["--input", "-64x64"], "input size"),
        (["--input", "0x64"], "input size"),
        (["--iters", "3", "--min-time", "1"], "not both"),
        (["--min-time", "0"], "--min-time"),
        (["--dtype", "fp8"], "dtype"),
        (["--cuda-graphs"], "--cuda-graphs"),
    ],
)
def test_bad_input_is_one_line_exit_2(monkeypatch, args, message):
    _refuse_build(monkeypatch)
    result = _run_cli("-m", "hrvit_b1", *args)
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert message in line


def test_compile_without_compiler_is_one_line_exit_2(monkeypatch):
    import torch._inductor.cpp_builder as cpp_builder

    def no_compiler():
        raise RuntimeError("No working C++ compiler found in ('g++',)")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    _refuse_build(monkeypatch)
    result = _run_cli("-m", "hrvit_b1", "--compile")
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "--compile cannot work here" in line and "C++ compiler" in line


POINT_KEYS = {
    "input_size", "batch_size", "status", "latency_ms", "throughput_images_per_s", "flops", "achieved_tflops",
    "peak_tflops", "peak_fraction", "memory_bytes", "clocks_mhz", "cuda_graphs_engaged", "graph_launches_per_call",
    "reference_median_ms", "reference_ratio", "error", "warnings",
}
STAT_KEYS = {"n", "median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "iqr_ms", "cv", "min_ms", "max_ms",
             "samples_ms"}


def test_json_keys(toy):
    result = _run_cli("-m", toy, "-b", "1,2", "--iters", "3", "--warmup", "1", "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    [data] = json.loads(result.stdout)  # a list, one entry per model
    assert set(data) == {"model", "attention", "settings", "environment", "flops_convention", "memory_note", "gpu_peak",
                         "peak_applies_to", "warnings", "points"}
    assert data["model"] == toy
    assert data["settings"]["threads"] == 1 and data["settings"]["iters"] == 3
    assert data["environment"]["torch_version"] == torch.__version__
    assert data["environment"]["threads"] == 1 and data["environment"]["dtype"] == "fp32"
    assert [p["batch_size"] for p in data["points"]] == [1, 2]
    for point in data["points"]:
        assert set(point) == POINT_KEYS
        assert set(point["latency_ms"]) == STAT_KEYS and len(point["latency_ms"]["samples_ms"]) == 3
        assert set(point["memory_bytes"]) == {"process_peak_rss"}
        assert point["clocks_mhz"] == {} and point["cuda_graphs_engaged"] is None
        # 3 samples support neither p90 (10) nor p99 (100): the values stay, each with a warning naming it and n
        assert point["latency_ms"]["p99_ms"] is not None
        assert [w.split(" needs")[0] for w in point["warnings"]] == ["p90", "p99"]
        assert all("has 3" in w for w in point["warnings"])


def test_csv_keys_and_sweep_over_models(toy, toy_oom):
    result = _run_cli("-m", "toy_latency_*", "-i", "8x8,16x16", "-b", "1,2", "--iters", "2", "--warmup", "0",
                      "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 2 * 2 * 2
    for key in ("model", "device", "dtype", "threads", "input", "batch_size", "status", "samples", "median_ms",
                "p90_ms", "p99_ms", "mean_ms", "iqr_ms", "cv", "throughput_images_per_s", "flops",
                "achieved_tflops", "process_peak_rss_bytes", "reference_median_ms", "env_torch_version",
                "env_threads", "env_dtype", "env_cpu_model"):
        assert key in rows[0], key
    statuses = {(r["model"], r["input"], r["batch_size"]): r["status"] for r in rows}
    assert statuses[(TOY_OOM, "8x8", "2")] == "oom" and statuses[(TOY_OOM, "16x16", "2")] == "oom"
    assert statuses[(TOY_OOM, "16x16", "1")] == "ok" and statuses[(TOY, "16x16", "2")] == "ok"


def test_a_sweep_where_every_point_ran_out_of_memory_exits_1(toy_oom, tmp_path):
    result = _run_cli("-m", toy_oom, "-b", "2", "--iters", "2", "--warmup", "1", "--json", "--out", str(tmp_path))
    assert result.exit_code == 1
    [report] = json.loads(result.stdout)  # what was tried is still printed, and recorded
    assert [p["status"] for p in report["points"]] == ["oom"]
    assert (tmp_path / "latency.record.json").is_file()
    assert result.stderr.splitlines()[-1] == ("error: nothing was measured: the one point ran out of memory; try a "
                                              "smaller --batch-size or --input")
    assert _run_cli("-m", toy_oom, "-b", "1,2", "--iters", "2", "--warmup", "1", "--json").exit_code == 0


def test_table_output(toy_oom):
    result = _run_cli("-m", toy_oom, "-b", "1,2", "--iters", "2", "--warmup", "1")
    assert result.exit_code == 0, result.output
    assert "OOM" in result.stdout and "median ms" in result.stdout and toy_oom in result.stdout


# ---------------------------------------------------------------------------------------------------------------
# Thread counts and percentiles a point cannot support.


@pytest.mark.parametrize("affinity", [True, False])
def test_more_threads_than_cpus_is_refused(monkeypatch, affinity):
    if affinity:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    else:  # macOS and Windows have no affinity mask: every CPU counts
        monkeypatch.delattr(os, "sched_getaffinity", raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert LatencySettings(threads=3).threads == 3
    with pytest.raises(UsageError, match=r"--threads 4 is more than the 3 CPU\(s\)"):
        LatencySettings(threads=4)


def test_threads_999_is_one_line_exit_2(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    _refuse_build(monkeypatch)
    result = _run_cli("-m", "hrvit_b1", "--threads", "999")
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert "--threads 999" in line and "2 CPU(s)" in line


def test_percentile_sample_rule_by_hand():
    assert [min_samples(q) for q in (50, 75, 90, 95, 99)] == [2, 4, 10, 20, 100]


def _report_with(samples_per_point: list[list[float]]) -> LatencyReport:
    points = [LatencyPoint((64, 64), b, "ok", stats=LatencyStats.from_samples(s))
              for b, s in enumerate(samples_per_point, start=1)]
    for p in points:
        p.memory = {"process_peak_rss": 2**20}
    return LatencyReport("hand", LatencySettings(iters=5), Environment.capture("cpu"), points)


def _render(table) -> str:
    console = Console(file=io.StringIO(), width=250)
    console.print(table)
    return console.file.getvalue()


def test_unsupported_percentiles_are_dashes_with_warnings():
    five = [1.0, 2.0, 3.0, 4.0, 100.0]  # p90 = 61.6, p99 = 96.16
    twelve = [float(v) for v in range(1, 13)]  # p90 = 10.9 (supported), p99 = 11.89 (not)
    hundred = [float(v) for v in range(1, 101)]  # p99 = 99.01
    report = _report_with([five, twelve, hundred])
    text = _render(report.tables()[0])
    rows = {line.split("│")[2].strip(): [c.strip() for c in line.split("│")[1:-1]]
            for line in text.splitlines() if line.startswith("│ 64x64")}
    # columns: input, batch, n, median, p90, p99, ...
    assert rows["1"][4:6] == ["-", "-"]
    assert rows["2"][4:6] == ["10.900", "-"]
    assert rows["3"][4:6] == ["90.100", "99.010"]
    assert "p90 needs at least 10 samples" in text and "(n = 5)" in text
    assert "p99 needs at least 100 samples" in text and "(n = 5, 12)" in text

    data = report.to_dict()["points"]
    assert data[0]["latency_ms"]["p99_ms"] == pytest.approx(96.16)  # the value stays in JSON, flagged
    assert [w[:3] for w in data[0]["warnings"]] == ["p90", "p99"] and "has 5" in data[0]["warnings"][1]
    assert [w[:3] for w in data[1]["warnings"]] == ["p99"] and "has 12" in data[1]["warnings"][0]
    assert data[2]["warnings"] == []
    csv_rows = report.csv_rows()
    assert csv_rows[0]["p99_ms"] == pytest.approx(96.16) and "p99 needs at least 100" in csv_rows[0]["warnings"]
    assert csv_rows[2]["warnings"] is None
