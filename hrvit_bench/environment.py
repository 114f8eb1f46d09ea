"""What machine and software a number was measured on, captured beside every timing.

A latency without its environment cannot be compared with another: the thread count, TF32 switches, clocks and
load of a shared machine each move a number by more than the differences being measured.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field

import torch

from . import __version__

# nvidia-smi fields, in query order; clocks in MHz, power in W.
_SMI_FIELDS = ("driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem", "power.limit")


@dataclass
class Environment:
    device: str  # "cpu" or "cuda[:i]"
    device_name: str  # GPU name, or the CPU model on cpu
    torch_version: str
    python_version: str
    hrvit_bench_version: str
    platform: str
    cpu_model: str
    cpu_mhz: float | None  # mean current MHz over logical CPUs, from /proc/cpuinfo
    logical_cpus: int | None
    threads: int  # torch.get_num_threads() when captured
    interop_threads: int
    omp_num_threads: str | None  # the environment variable, as set
    load_average: tuple[float, float, float] | None  # 1, 5, 15 min: others' work on a shared machine
    dtype: str | None = None
    cuda_version: str | None = None  # torch was built against
    cudnn_version: int | None = None
    driver_version: str | None = None
    gpu_clocks_mhz: dict[str, float] = field(default_factory=dict)  # sm/mem now and max, from nvidia-smi
    gpu_power_limit_w: float | None = None
    cudnn_benchmark: bool = False
    cuda_matmul_allow_tf32: bool = False
    cudnn_allow_tf32: bool = False
    float32_matmul_precision: str = "highest"

    @classmethod
    def capture(cls, device: str | torch.device = "cpu", dtype: str | None = None) -> "Environment":
        device = torch.device(device)
        cpu_model, cpu_mhz = _cpu_info()
        env = cls(
            device=str(device),
            device_name=cpu_model,
            torch_version=torch.__version__,
            python_version=platform.python_version(),
            hrvit_bench_version=__version__,
            platform=platform.platform(),
            cpu_model=cpu_model,
            cpu_mhz=cpu_mhz,
            logical_cpus=os.cpu_count(),
            threads=torch.get_num_threads(),
            interop_threads=torch.get_num_interop_threads(),
            omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
            load_average=tuple(round(v, 2) for v in os.getloadavg()) if hasattr(os, "getloadavg") else None,
            dtype=dtype,
            cuda_version=torch.version.cuda,
            cudnn_version=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
            cuda_matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
            cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32),
            float32_matmul_precision=torch.get_float32_matmul_precision(),
        )
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            env.device_name = torch.cuda.get_device_name(index)
            smi = _nvidia_smi(_smi_id(index))
            env.driver_version = smi.pop("driver_version", None)
            env.gpu_power_limit_w = smi.pop("power.limit", None)
            env.gpu_clocks_mhz = smi
        return env

    def to_dict(self) -> dict:
        out = asdict(self)
        out["load_average"] = list(self.load_average) if self.load_average else None
        return out

    def summary(self) -> str:
        """One line for a table caption."""
        parts = [f"torch {self.torch_version}", self.device_name]
        if self.device.startswith("cuda"):
            parts += [f"CUDA {self.cuda_version}", f"driver {self.driver_version or '?'}"]
            if self.gpu_clocks_mhz.get("clocks.sm"):
                parts.append(f"SM {self.gpu_clocks_mhz['clocks.sm']:.0f} MHz")
            parts.append(
                f"TF32 matmul {'on' if self.cuda_matmul_allow_tf32 else 'off'}"
                f"/cuDNN {'on' if self.cudnn_allow_tf32 else 'off'}"
            )
            parts.append(f"cudnn.benchmark {'on' if self.cudnn_benchmark else 'off'}")
        elif self.cpu_mhz:
            parts.append(f"{self.cpu_mhz:.0f} MHz")
        parts.append(f"{self.threads} thread{'s' if self.threads != 1 else ''}")
        if self.dtype:
            parts.append(self.dtype)
        if self.load_average:
            parts.append(f"load {self.load_average[0]:.2f}")
        return ", ".join(parts)


def _cpu_info() -> tuple[str, float | None]:
    """CPU model and mean current clock; /proc/cpuinfo on Linux, platform's guess elsewhere."""
    model, mhz = None, []
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "cpu MHz":
                    mhz.append(float(value))
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), (round(sum(mhz) / len(mhz), 1) if mhz else None)


def _smi_id(index: int) -> str:
    """nvidia-smi's name for torch's GPU ``index``: its PCI address, since CUDA_VISIBLE_DEVICES renumbers GPUs."""
    props = torch.cuda.get_device_properties(index)
    if all(hasattr(props, a) for a in ("pci_domain_id", "pci_bus_id", "pci_device_id")):
        return f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
    return str(index)


def _nvidia_smi(gpu: str) -> dict:
    """Driver, clocks and power limit of one GPU; empty when nvidia-smi is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        text = subprocess.run(
            [exe, f"--query-gpu={','.join(_SMI_FIELDS)}", "--format=csv,noheader,nounits", "-i", gpu],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [v.strip() for v in text.strip().splitlines()[0].split(",")] if text.strip() else []
    out = {}
    for key, value in zip(_SMI_FIELDS, values):
        if key == "driver_version":
            out[key] = value
        else:
            try:
                out[key] = float(value)
            except ValueError:  # "[N/A]"
                continue
    return out
