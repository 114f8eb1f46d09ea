"""Peak dense throughput of known GPUs, read from data/gpu_peaks.csv (datasheet figures, sources beside them).

Structured-sparsity figures are halved in the table: a dense forward pass never reaches them.
"""
from __future__ import annotations

import csv
import functools
import importlib.resources
import re
from dataclasses import dataclass

PEAK_DTYPES = ("fp32", "tf32", "fp16", "bf16")  # fp32 is the CUDA-core rate; tf32 the tensor-core rate for fp32


@dataclass(frozen=True)
class GpuPeak:
    label: str
    pattern: str  # regex over torch.cuda.get_device_name()
    tflops: dict  # PEAK_DTYPES key -> peak dense TFLOP/s; a dtype the GPU lacks is absent
    source: str


@functools.lru_cache(maxsize=1)
def gpu_peaks() -> tuple[GpuPeak, ...]:
    with importlib.resources.files("hrvit_bench.data").joinpath("gpu_peaks.csv").open(newline="") as handle:
        return tuple(
            GpuPeak(row["label"], row["pattern"], {k: float(row[k]) for k in PEAK_DTYPES if row[k].strip()},
                    row["source"])
            for row in csv.DictReader(handle)
        )


def gpu_peak(device_name: str) -> GpuPeak | None:
    """The first table row whose pattern matches the device name, or None for a GPU the table does not know."""
    for peak in gpu_peaks():
        if re.search(peak.pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None


def peak_key(dtype: str, matmul_allow_tf32: bool) -> str:
    """fp32 matmuls run on tensor cores only when TF32 is allowed; their peak is then TF32's."""
    return "tf32" if dtype == "fp32" and matmul_allow_tf32 else dtype
