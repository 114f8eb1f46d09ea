"""What machine and software a number was measured on, captured beside every timing.

A latency without its environment cannot be compared with another: the thread count, TF32 switches, clocks and
load of a shared machine each move a number by more than the differences being measured. The clocks captured
here are read once, before any work (idle); ``ClockSampler`` reads them while the timed calls run.
"""
from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import threading
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch

from . import __version__
from .errors import first_line

# nvidia-smi fields, in query order; clocks in MHz, power in W; MIG mode "Enabled", "Disabled" or "[N/A]".
_SMI_FIELDS = (
    "driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem", "power.limit", "mig.mode.current",
)
_SMI_TEXT_FIELDS = ("driver_version", "mig.mode.current")


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
    gpu_idle_clocks_mhz: dict[str, float] = field(default_factory=dict)  # sm/mem and max, nvidia-smi, before work
    gpu_power_limit_w: float | None = None
    gpu_sm_count: int | None = None  # streaming multiprocessors visible (a MIG slice has fewer than the chip)
    gpu_mig_mode: str | None = None  # nvidia-smi's mig.mode.current: "Enabled" or "Disabled"
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
            env.gpu_sm_count = torch.cuda.get_device_properties(index).multi_processor_count
            smi = _nvidia_smi(_smi_id(index))
            env.driver_version = smi.pop("driver_version", None)
            env.gpu_power_limit_w = smi.pop("power.limit", None)
            mig = smi.pop("mig.mode.current", None)
            env.gpu_mig_mode = mig if mig in ("Enabled", "Disabled") else None
            env.gpu_idle_clocks_mhz = smi
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
            if self.gpu_idle_clocks_mhz.get("clocks.sm"):
                parts.append(f"SM {self.gpu_idle_clocks_mhz['clocks.sm']:.0f} MHz idle")
            if self.gpu_mig_mode == "Enabled":
                parts.append("MIG on")
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
        if key in _SMI_TEXT_FIELDS:
            out[key] = value
        else:
            try:
                out[key] = float(value)
            except ValueError:  # "[N/A]"
                continue
    return out


# ---------------------------------------------------------------------------------------------------------------
# Clocks while the timed calls run.


class ClockSource(Protocol):
    name: str
    pause_s: float  # wait between reads; 0 for a source that paces itself

    def open(self) -> None: ...

    def read(self) -> tuple[float | None, float | None] | None:
        """(SM MHz, memory MHz), either None when unknown; None when the source has ended."""

    def close(self) -> None: ...


def _mhz(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "[N/A]"
        return None


class SmiClocks:
    """One ``nvidia-smi --query-gpu ... -lms`` process per timed run: it prints a line every ``interval_ms``."""

    name = "nvidia-smi"
    pause_s = 0.0

    def __init__(self, exe: str, gpu: str, interval_ms: int = 100):
        self.command = [exe, "--query-gpu=clocks.sm,clocks.mem", "--format=csv,noheader,nounits",
                        f"--loop-ms={interval_ms}", "-i", gpu]
        self.process: subprocess.Popen | None = None

    def open(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def read(self) -> tuple[float | None, float | None] | None:
        line = self.process.stdout.readline()
        if not line:
            return None
        values = [_mhz(v.strip()) for v in line.split(",")] + [None, None]
        return values[0], values[1]

    def close(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process = None


class NvmlClocks:
    """NVML through pynvml (nvidia-ml-py), in-process: no subprocess while the GPU is being timed."""

    name = "nvml"

    def __init__(self, pci_bus_id: str, interval_s: float = 0.05):
        import pynvml

        self.nvml, self.pci_bus_id, self.pause_s, self.handle = pynvml, pci_bus_id, interval_s, None

    def open(self) -> None:
        self.nvml.nvmlInit()
        self.handle = self.nvml.nvmlDeviceGetHandleByPciBusId(self.pci_bus_id)

    def read(self) -> tuple[float | None, float | None]:
        return (float(self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM)),
                float(self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_MEM)))

    def close(self) -> None:
        if self.handle is not None:
            self.handle = None
            self.nvml.nvmlShutdown()


def gpu_clock_source(device: torch.device) -> ClockSource | None:
    """NVML when pynvml is installed, else nvidia-smi, else None (then no clocks are sampled)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    gpu = _smi_id(index)
    try:
        return NvmlClocks(gpu)
    except ImportError:
        pass
    exe = shutil.which("nvidia-smi")
    return SmiClocks(exe, gpu) if exe else None


class ClockSampler:
    """Reads (SM, memory) clocks in a background thread while the timed calls run: the idle reading says what the
    GPU may reach, this says what it ran at (a hot or power-capped GPU lowers its SM clock under load).

    A source that fails never fails the timing: its error is kept in the summary.
    """

    FIRST_READING_TIMEOUT_S = 1.0

    def __init__(self, source: ClockSource):
        self.source = source
        self.readings: list[tuple[float | None, float | None]] = []
        self.error: str | None = None
        self._stop, self._first = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "ClockSampler":
        try:
            self.source.open()
        except Exception as exc:  # NVML and subprocess each raise their own types
            self.error = first_line(exc)
            return self
        self._thread = threading.Thread(target=self._poll, name="clock-sampler", daemon=True)
        self._thread.start()
        self._first.wait(self.FIRST_READING_TIMEOUT_S)  # timing starts with at least one reading, when there is one
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(timeout=1.0)  # a self-paced source returns its next line within its interval
        try:
            self.source.close()
        except Exception as exc:
            self.error = self.error or first_line(exc)
        self._thread.join(timeout=1.0)

    def _poll(self) -> None:
        try:
            while not self._stop.is_set():
                reading = self.source.read()
                if reading is None:
                    break
                self.readings.append(reading)
                self._first.set()
                self._stop.wait(self.source.pause_s)
        except Exception as exc:
            if not self._stop.is_set():  # a source closed under a blocked read raises; that is the normal end
                self.error = first_line(exc)
        finally:
            self._first.set()

    def summary(self) -> dict:
        """Min and median SM and memory clock over the readings (MHz), with their number and source."""
        out: dict = {"source": self.source.name, "samples": len(self.readings)}
        for i, clock in enumerate(("sm", "mem")):
            values = [r[i] for r in self.readings if r[i] is not None]
            out[f"{clock}_min_mhz"] = min(values) if values else None
            out[f"{clock}_median_mhz"] = statistics.median(values) if values else None
        if self.error:
            out["error"] = self.error
        return out
