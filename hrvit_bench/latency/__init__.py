"""Latency of one forward pass, timed the way careful harnesses time it.

- Untimed warm-up calls first: lazy initialisation, cuDNN autotuning (``cudnn.benchmark`` is on while timing on
  CUDA), ``torch.compile``'s compilation and CUDA-graph capture all happen there.
- Every timed call is one sample (``timer``); statistics over samples (``stats``).
- The thread count is pinned with ``torch.set_num_threads`` and reported: torch.utils.benchmark's ``Timer``
  defaults to one thread, which is not what a model sees in production.
- Inference runs under ``torch.inference_mode``; ``cross_check`` runs ``torch.utils.benchmark.Timer
  .blocked_autorange`` on the same callable, so every number can be set beside the reference harness's.

One module per job: ``peaks`` (device peaks, from data/gpu_peaks.csv), ``stats``, ``timer`` (clocks, stamps and the
one rounds loop every timed command uses), ``settings`` (what to measure and the checks before any model is
built), ``session`` (the one set-up step: checks, pinned threads, environment, peak), ``sweep`` (the driver),
``compare`` (interleaved A/B) and ``results`` (rendering).
"""
from .peaks import GpuPeak, gpu_peak, peak_key
from .results import LatencyPoint, LatencyReport
from .settings import DTYPES, LatencySettings, parse_batch_sizes, parse_sizes, preflight
from .session import pinned, timed_session
from .stats import LatencyStats
from .sweep import is_out_of_memory, measure_point, prepare, run
from .timer import MIN_SAMPLES, make_step, reference_timing, time_calls, timed_rounds

__all__ = [
    "DTYPES", "MIN_SAMPLES", "GpuPeak", "LatencyPoint", "LatencyReport", "LatencySettings", "LatencyStats",
    "gpu_peak", "is_out_of_memory", "make_step", "measure_point", "parse_batch_sizes", "parse_sizes", "peak_key",
    "pinned", "preflight", "prepare", "reference_timing", "run", "time_calls", "timed_rounds", "timed_session",
]
