"""Order statistics of per-call latencies, in milliseconds."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles interpolate linearly between order statistics (numpy's default)."""

    n: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float  # sample standard deviation (ddof=1); 0 for one sample
    iqr_ms: float  # p75 - p25
    cv: float  # std / mean
    min_ms: float
    max_ms: float
    samples_ms: tuple[float, ...] = field(repr=False)

    @classmethod
    def from_samples(cls, samples_ms) -> "LatencyStats":
        a = np.asarray(samples_ms, dtype=np.float64)
        if a.size == 0:
            raise ValueError("no samples")
        p25, median, p75, p90, p99 = np.percentile(a, [25, 50, 75, 90, 99])
        mean = float(a.mean())
        std = float(a.std(ddof=1)) if a.size > 1 else 0.0
        return cls(
            n=int(a.size), median_ms=float(median), p90_ms=float(p90), p99_ms=float(p99), mean_ms=mean,
            std_ms=std, iqr_ms=float(p75 - p25), cv=std / mean if mean > 0 else 0.0,
            min_ms=float(a.min()), max_ms=float(a.max()), samples_ms=tuple(float(v) for v in a),
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["samples_ms"] = list(self.samples_ms)
        return out
