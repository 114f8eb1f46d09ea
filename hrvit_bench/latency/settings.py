"""What to measure, and the checks that must pass before any model is built."""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .. import zoo
from ..errors import UsageError, first_line
from .timer import COMPILED_GRAPHS_MIN_WARMUP

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_MIN_TIME_S = 1.0


@dataclass
class LatencySettings:
    device: str = "cpu"
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    warmup: int = 5
    iters: int | None = None  # a fixed number of timed calls, or ...
    min_time: float | None = None  # ... timed calls until this many seconds (default 1 s, at least 5 calls)
    threads: int | None = None  # None: torch's current count
    cross_check: bool = False

    def __post_init__(self):
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise UsageError(f"unknown device {self.device!r}; use cpu or cuda") from None
        if device.type not in ("cpu", "cuda"):
            raise UsageError(f"unknown device {self.device!r}; use cpu or cuda")
        if self.dtype not in DTYPES:
            raise UsageError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more, not {self.warmup}")
        if self.iters is not None and self.min_time is not None:
            raise UsageError("give --iters or --min-time, not both")
        if self.iters is not None and self.iters < 1:
            raise UsageError(f"--iters must be at least 1, not {self.iters}")
        if self.min_time is not None and not self.min_time > 0:
            raise UsageError(f"--min-time must be a positive number of seconds, not {self.min_time}")
        if self.iters is None and self.min_time is None:
            self.min_time = DEFAULT_MIN_TIME_S
        if self.threads is None:
            self.threads = torch.get_num_threads()
        elif self.threads < 1:
            raise UsageError(f"--threads must be at least 1, not {self.threads}")
        elif self.threads > available_cpus():
            raise UsageError(f"--threads {self.threads} is more than the {available_cpus()} CPU(s) this process may "
                             "run on: extra threads only wait for each other")
        if self.cuda_graphs and device.type != "cuda":
            raise UsageError("--cuda-graphs needs --device cuda")
        if self.compile and self.cuda_graphs and self.warmup < COMPILED_GRAPHS_MIN_WARMUP:
            raise UsageError(f"--compile --cuda-graphs needs --warmup {COMPILED_GRAPHS_MIN_WARMUP} or more: CUDA graph "
                             "trees warm up on the 1st call and record on the 2nd, so only later calls replay")
        if (self.compile or self.cuda_graphs) and self.warmup < 1:
            raise UsageError("--compile and --cuda-graphs need --warmup 1 or more: compiling must not be timed")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def to_dict(self) -> dict:
        return asdict(self)


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the OS has one (a container's or taskset's share),
    else every CPU."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def preflight(settings: LatencySettings) -> list[str]:
    """Fail fast, before any model is built, on a device, dtype or compiler this machine lacks; return warnings."""
    device = settings.torch_device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            reason = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UsageError(f"--device cuda: {reason} (torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {settings.device}: only {torch.cuda.device_count()} GPU(s) visible")
        if settings.dtype == "bf16" and not torch.cuda.is_bf16_supported():
            raise UsageError(f"bf16 is not supported on {torch.cuda.get_device_name(device)}; use fp16 or fp32")
    warnings = []
    if device.type == "cpu" and settings.dtype == "fp16":
        warnings.append(_probe_cpu_fp16())
    if device.type == "cpu" and settings.dtype == "bf16" and cpu_has_native_bf16() is False:
        warnings.append(
            "bf16 on a CPU without bf16 arithmetic (its flags name neither avx512_bf16 nor amx_bf16): kernels "
            "convert to fp32 and back and can run several times slower than fp32, so these numbers say little "
            "about bf16 where it is native")
    if settings.compile:
        _check_compiler(device)
    return warnings


def _probe_cpu_fp16() -> str:
    """fp16 convolutions and linear layers on CPU: an error on old torch builds, emulated and slow on new ones."""
    probe = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).half().eval()
    try:
        with torch.inference_mode():
            probe(torch.zeros(1, 3, 8, 8, dtype=torch.float16))
    except (RuntimeError, NotImplementedError) as exc:
        raise UsageError(
            f"fp16 does not run on CPU in torch {torch.__version__} ({first_line(exc)}); use --dtype bf16 or fp32"
        ) from None
    return (
        f"fp16 runs on CPU in torch {torch.__version__}, but most CPUs lack fp16 arithmetic: kernels convert "
        "to fp32 and back, so these numbers say little about fp16 on a GPU"
    )


BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 AVX512-BF16 and AMX-BF16; Arm's BF16 ("Features")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU has bf16 arithmetic, from the flags of /proc/cpuinfo (``cpuinfo``: its text); None where
    they cannot be read. torch's get_cpu_capability() names only the vector width (AVX512), not bf16."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as handle:
                cpuinfo = handle.read()
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & BF16_FLAGS) if flags else None


def _check_compiler(device: torch.device) -> None:
    """torch.compile needs Dynamo support, a C++ compiler on CPU, and Triton plus a C compiler on CUDA."""
    try:
        from torch._dynamo.eval_frame import check_if_dynamo_supported

        check_if_dynamo_supported()
        if device.type == "cpu":
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        else:
            from torch.utils._triton import has_triton

            if not has_triton():
                raise RuntimeError("Triton is missing or does not support this GPU")
            if not any(shutil.which(c) for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c):
                raise RuntimeError("no C compiler found (Triton builds its launcher with one; set CC)")
    except Exception as exc:  # each check has its own exception type
        raise UsageError(f"--compile cannot work here: {first_line(exc)}") from None


def parse_batch_sizes(text: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]."""
    sizes = []
    for item in text.split(","):
        try:
            value = int(item)
        except ValueError:
            raise UsageError(f"batch size {item.strip()!r} is not an integer (give e.g. 1 or 1,2,4,8)") from None
        if value < 1:
            raise UsageError(f"batch size must be a positive integer, not {value}")
        sizes.append(value)
    return sizes


def parse_sizes(text: str | None) -> list[tuple[int, int] | None]:
    """'512x512,1024x1024' -> [(512, 512), (1024, 1024)]; None -> [None], the model's own size."""
    return [None] if text is None else [zoo.parse_size(item) for item in text.split(",")]
