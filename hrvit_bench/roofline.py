"""The roofline's two roofs, for the device and dtype of a profile: peak arithmetic rate and memory bandwidth.

Both are measured here, at the run's thread count: the rate as the best of a few large square matmuls (2 n^3
FLOPs each), the bandwidth as the best of a few large tensor copies (bytes read + bytes written). On a GPU the
datasheet figures stand beside the measured ones: the peak from ``latency.peaks`` (chosen by dtype and both TF32
switches), the bandwidth from the table below. A module's point sits under min(peak, bandwidth x intensity).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import torch

from .environment import Environment
from .latency.peaks import PeakChoice, choose_peak
from .latency.settings import DTYPES, LatencySettings
from .latency.timer import clock_for, timed_rounds

# Datasheet memory bandwidth (GB/s, 1e9 bytes) of the GPUs data/gpu_peaks.csv knows; first match wins.
DATASHEET_BANDWIDTH = (
    (r"\bH200\b", 4800.0, "NVIDIA H200 datasheet: 4.8 TB/s"),
    (r"\bH100\b.*\bPCIe\b", 2000.0, "NVIDIA H100 datasheet, PCIe: 2 TB/s"),
    (r"\bH100\b.*\bNVL\b", 3900.0, "NVIDIA H100 datasheet, NVL: 3.9 TB/s"),
    (r"\bH100\b", 3350.0, "NVIDIA H100 datasheet, SXM: 3.35 TB/s"),
    (r"\bA100\b.*80GB.*PCIe", 1935.0, "NVIDIA A100 datasheet, 80GB PCIe: 1,935 GB/s"),
    (r"\bA100\b.*80GB", 2039.0, "NVIDIA A100 datasheet, 80GB SXM: 2,039 GB/s"),
    (r"\bA100\b", 1555.0, "NVIDIA A100 datasheet, 40GB: 1,555 GB/s"),
    (r"\bL4\b", 300.0, "NVIDIA L4 datasheet: 300 GB/s"),
    (r"\bA10\b", 600.0, "NVIDIA A10 datasheet: 600 GB/s"),
    (r"\bV100\b", 900.0, "NVIDIA V100 datasheet: 900 GB/s"),
    (r"\bRTX 4090$", 1008.0, "NVIDIA Ada architecture whitepaper, RTX 4090: 1,008 GB/s"),
)


def datasheet_bandwidth(device_name: str) -> tuple[float, str] | None:
    """(GB/s, source) of a GPU the table knows, or None."""
    for pattern, gbs, source in DATASHEET_BANDWIDTH:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return gbs, source
    return None


@dataclass
class Roofline:
    device_name: str
    dtype: str
    threads: int
    measured_gflops: float  # best of the square matmuls
    measured_gbs: float  # best of the copies, bytes read + written
    matmul_n: int
    copy_bytes: int  # bytes read by one copy (as many are written)
    datasheet_gflops: dict[str, float] = field(default_factory=dict)  # peak key (fp32, tf32, ...) -> GFLOP/s
    datasheet_applies_to: dict[str, str] = field(default_factory=dict)  # peak key -> the operators it bounds
    datasheet_gbs: float | None = None
    datasheet_source: str | None = None

    @property
    def ridge(self) -> float:
        """FLOPs per byte where the measured roofs meet: below it a kernel cannot reach the measured peak."""
        return self.measured_gflops / self.measured_gbs

    def bound(self, intensity: float) -> float:
        """The measured roofline at ``intensity`` FLOP/byte, in GFLOP/s."""
        return min(self.measured_gflops, self.measured_gbs * intensity)

    def describe(self) -> str:
        parts = [f"measured: {self.dtype} matmul {self.matmul_n}^3 {self.measured_gflops:,.0f} GFLOP/s, copy of "
                 f"{self.copy_bytes / 2**20:.0f} MiB {self.measured_gbs:,.1f} GB/s (read + written), "
                 f"{self.threads} thread{'s' if self.threads != 1 else ''}"]
        if self.datasheet_gflops:
            peaks = ", ".join(f"{key} {value:,.0f}" for key, value in self.datasheet_gflops.items())
            parts.append(f"datasheet: {peaks} GFLOP/s" + (f", {self.datasheet_gbs:,.0f} GB/s"
                                                          if self.datasheet_gbs else ""))
        return "roofs " + "; ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self) | {"ridge_flop_per_byte": self.ridge}


def _best_ms(step, device: torch.device, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls after one untimed call: a roof is what the hardware can reach."""
    clock = clock_for(device)
    step()
    return min(timed_rounds({"call": lambda: clock.time(step)}, iters=repeats)["call"])


def measure_matmul(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 3) -> float:
    """GFLOP/s of the best ``n`` x ``n`` by ``n`` x ``n`` matmul (2 n^3 FLOPs)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    with torch.inference_mode():
        ms = _best_ms(lambda: torch.mm(a, b, out=out), device, repeats)
    return 2 * n**3 / (ms * 1e-3) / 1e9


def measure_copy(device: torch.device, nbytes: int, repeats: int = 3) -> float:
    """GB/s of the best copy of ``nbytes`` into a second buffer: each byte is read once and written once."""
    src = torch.ones(nbytes // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    with torch.inference_mode():
        ms = _best_ms(lambda: dst.copy_(src), device, repeats)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


# Sizes far beyond every cache, and large enough to fill every core or SM.
CPU_MATMUL_N, GPU_MATMUL_N = 2048, 8192
CPU_COPY_BYTES, GPU_COPY_BYTES = 2**27, 2**30


def measure(settings: LatencySettings, env: Environment, *, matmul_n: int | None = None,
            copy_bytes: int | None = None, peak: PeakChoice | None = None) -> Roofline:
    """Both roofs for ``settings``' device, dtype and (pinned by the caller) thread count; on a GPU beside the
    datasheet's, from ``peak`` (the session's; chosen from ``env`` when not given)."""
    device = settings.torch_device
    cuda = device.type == "cuda"
    matmul_n = matmul_n or (GPU_MATMUL_N if cuda else CPU_MATMUL_N)
    copy_bytes = copy_bytes or (GPU_COPY_BYTES if cuda else CPU_COPY_BYTES)
    roof = Roofline(
        device_name=env.device_name, dtype=settings.dtype, threads=settings.threads,
        measured_gflops=measure_matmul(device, DTYPES[settings.dtype], matmul_n),
        measured_gbs=measure_copy(device, copy_bytes), matmul_n=matmul_n, copy_bytes=copy_bytes,
    )
    if cuda:
        peak = peak or choose_peak(env)
        roof.datasheet_gflops = {key: tflops * 1e3 for key, tflops in peak.tflops.items()}
        roof.datasheet_applies_to = dict(peak.applies_to) if roof.datasheet_gflops else {}
        known = datasheet_bandwidth(env.device_name)
        if known is not None and peak.warning is None:  # a MIG slice gets neither datasheet roof
            roof.datasheet_gbs, roof.datasheet_source = known
        torch.cuda.empty_cache()  # the buffers above must not count against the model's memory
    return roof
