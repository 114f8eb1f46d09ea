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


CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0  # a fixed seed: the same samples always give the same interval


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile-bootstrap confidence interval."""

    value: float
    low: float
    high: float
    confidence: float = CONFIDENCE

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def to_dict(self) -> dict:
        return asdict(self)


def _percentile_interval(value: float, replicates: np.ndarray, confidence: float) -> Interval:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Interval(float(value), float(low), float(high), confidence)


def median_interval(samples_ms, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                    seed: int = SEED) -> Interval:
    """The median and its bootstrap interval: the samples resampled with replacement ``resamples`` times."""
    a = np.asarray(samples_ms, dtype=np.float64)
    rng = np.random.default_rng(seed)
    replicates = np.median(a[rng.integers(0, a.size, size=(resamples, a.size))], axis=1)
    return _percentile_interval(float(np.median(a)), replicates, confidence)


def ratio_interval(rounds_ms, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                   seed: int = SEED) -> Interval:
    """median(B) / median(A) over paired rounds ``[(a, b), ...]``, bootstrapped by resampling whole rounds.

    Both sides of a round ran back to back, under the same load: resampling rounds, not samples, keeps that
    pairing, so the interval reflects the noise the two sides did not share.
    """
    pairs = np.asarray(rounds_ms, dtype=np.float64)
    return mean_ratio_interval([pairs], confidence, resamples, seed)


def mean_ratio_interval(rounds_per_pair, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                        seed: int = SEED) -> Interval:
    """The mean over several comparisons of median(B) / median(A), each comparison's rounds resampled on its own."""
    rng = np.random.default_rng(seed)
    values, replicates = [], np.zeros(resamples)
    for rounds in rounds_per_pair:
        pairs = np.asarray(rounds, dtype=np.float64)
        if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) == 0:
            raise ValueError("rounds must be a non-empty list of (a, b) pairs")
        values.append(np.median(pairs[:, 1]) / np.median(pairs[:, 0]))
        picked = pairs[rng.integers(0, len(pairs), size=(resamples, len(pairs)))]
        replicates += np.median(picked[..., 1], axis=1) / np.median(picked[..., 0], axis=1)
    return _percentile_interval(float(np.mean(values)), replicates / len(values), confidence)
