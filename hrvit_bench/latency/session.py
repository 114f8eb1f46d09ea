"""The one set-up step every timed command takes: checks before any model is built, pinned threads, the
environment captured once, the device's peak chosen, and the warnings said once."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from ..environment import Environment
from .peaks import PeakChoice, choose_peak
from .settings import LatencySettings, preflight


@contextlib.contextmanager
def pinned(settings: LatencySettings):
    """The thread count, and on CUDA the current device and cuDNN autotuning, for a run; restored afterwards."""
    threads, autotune = torch.get_num_threads(), torch.backends.cudnn.benchmark
    cuda = settings.torch_device.type == "cuda"
    torch.set_num_threads(settings.threads)
    if cuda:
        torch.backends.cudnn.benchmark = True
    try:
        with torch.cuda.device(settings.torch_device) if cuda else contextlib.nullcontext():
            yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = autotune


@dataclass
class Session:
    """What a timed run measures on: the machine, its peak for the run's dtype, and the warnings so far."""

    settings: LatencySettings
    environment: Environment
    peak: PeakChoice
    warnings: list[str] = field(default_factory=list)


@contextlib.contextmanager
def timed_session(settings: LatencySettings, warn: Callable[[str], None] | None = None) -> Iterator[Session]:
    """``preflight`` first (a missing device, dtype or compiler is one line, exit 2, before anything is built),
    then pinned threads for the run, the environment captured inside them and the peak chosen from it; the
    preflight's warnings are said once through ``warn`` (the peak's warning is the caller's to report)."""
    warnings = preflight(settings)
    with pinned(settings):
        env = Environment.capture(settings.torch_device, settings.dtype)
        for message in warnings:
            if warn:
                warn(message)
        yield Session(settings, env, choose_peak(env), warnings)
