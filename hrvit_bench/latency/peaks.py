"""Peak dense throughput of known GPUs, read from data/gpu_peaks.csv (datasheet figures, sources beside them).

Structured-sparsity figures are halved in the table: a dense forward pass never reaches them. A peak is for the
whole chip (``sms`` streaming multiprocessors): a MIG slice or any other partition gets none.
"""
from __future__ import annotations

import csv
import functools
import importlib.resources
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..environment import Environment

PEAK_DTYPES = ("fp32", "tf32", "fp16", "bf16")  # fp32 is the CUDA-core rate; tf32 the tensor-core rate for fp32

# Which operators each TF32 switch governs (cuBLAS: torch.backends.cuda.matmul.allow_tf32; cuDNN:
# torch.backends.cudnn.allow_tf32, on by default).
MATMUL_OPS = "matmuls, linears and attention products (cuBLAS)"
CONV_OPS = "convolutions (cuDNN)"
ALL_OPS = "every operator"


@dataclass(frozen=True)
class GpuPeak:
    label: str
    pattern: str  # regex over torch.cuda.get_device_name()
    sms: int | None  # streaming multiprocessors of the whole chip the peaks are for
    tflops: dict  # PEAK_DTYPES key -> peak dense TFLOP/s; a dtype the GPU lacks is absent
    source: str


@functools.lru_cache(maxsize=1)
def gpu_peaks() -> tuple[GpuPeak, ...]:
    with importlib.resources.files("hrvit_bench.data").joinpath("gpu_peaks.csv").open(newline="") as handle:
        return tuple(
            GpuPeak(row["label"], row["pattern"], int(row["sms"]) if row["sms"].strip() else None,
                    {k: float(row[k]) for k in PEAK_DTYPES if row[k].strip()}, row["source"])
            for row in csv.DictReader(handle)
        )


def gpu_peak(device_name: str) -> GpuPeak | None:
    """The first table row whose pattern matches the device name, or None for a GPU the table does not know."""
    for peak in gpu_peaks():
        if re.search(peak.pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None


def peak_key(dtype: str, allow_tf32: bool) -> str:
    """fp32 operators run on tensor cores only when their library's TF32 switch is on; their peak is then TF32's."""
    return "tf32" if dtype == "fp32" and allow_tf32 else dtype


@dataclass(frozen=True)
class PeakChoice:
    """The peak(s) achieved TFLOP/s is set against: one, or two when cuBLAS and cuDNN disagree on TF32 (each
    fraction then bounds only the operators it names); none, with a warning saying why, for a partial GPU."""

    gpu: GpuPeak | None = None
    applies_to: dict[str, str] = field(default_factory=dict)  # peak key -> the operators that run at that rate
    warning: str | None = None

    @property
    def tflops(self) -> dict[str, float]:
        if self.gpu is None:
            return {}
        return {key: self.gpu.tflops[key] for key in self.applies_to if key in self.gpu.tflops}


def choose_peak(env: "Environment") -> PeakChoice:
    """The peak for the environment's device, dtype and both TF32 switches; none on CPU or an unknown GPU."""
    if not env.device.startswith("cuda"):
        return PeakChoice()
    gpu = gpu_peak(env.device_name)
    if gpu is None:
        return PeakChoice()
    partial = partial_gpu(gpu, env.device_name, env.gpu_sm_count, env.gpu_mig_mode)
    if partial:
        return PeakChoice(warning=f"no % of peak: {partial}")
    has_tf32 = "tf32" in gpu.tflops  # without TF32 tensor cores (Volta) the switches change nothing
    matmul = peak_key(env.dtype, env.cuda_matmul_allow_tf32 and has_tf32)
    conv = peak_key(env.dtype, env.cudnn_allow_tf32 and has_tf32)
    applies_to = {matmul: ALL_OPS} if matmul == conv else {matmul: MATMUL_OPS, conv: CONV_OPS}
    return PeakChoice(gpu, applies_to)


def partial_gpu(gpu: GpuPeak, device_name: str, sm_count: int | None, mig_mode: str | None) -> str | None:
    """Why this device is less than the whole chip ``gpu``'s peaks are for, or None when it is the whole chip."""
    if re.search(r"\bMIG\b", device_name):
        return f"{device_name!r} is a MIG slice, and {gpu.label}'s peak is for the whole GPU"
    if (mig_mode or "").strip().lower() == "enabled":
        return f"MIG mode is enabled on this {gpu.label} (nvidia-smi): a slice gets part of the whole GPU's peak"
    if gpu.sms and sm_count is not None and sm_count < gpu.sms:
        return f"{sm_count} SMs visible, but a whole {gpu.label} has {gpu.sms}: a partition of the GPU (MIG?)"
    return None
