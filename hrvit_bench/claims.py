"""HRViT's stated savings, checked: each claim row of data/claims.csv gets one verdict, and says what it rests on.

A claim row names pairs ``subject>baseline`` of registered models, an input, a metric and what the paper states.
A relative change is the mean over its pairs of ``subject / baseline - 1``; the averages say which pairs they
average because the pairs are in the row. FLOP claims are evaluated under every counting convention; unit and
giga cancel in a ratio, so only all-ops against GEMM-only counting can change a verdict, and the headline says
"depends on the convention" when the two disagree. Accuracy claims need a trained model: their verdict is
"needs training", never a pass. Latency rows are timed only on request, in interleaved rounds, and their
verdict rests on a bootstrap interval.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean

from . import zoo
from .conventions import DEFAULT, Convention
from .count_cache import CountCache
from .counting import MacCount
from .latency.compare import FASTER, INDISTINGUISHABLE, SLOWER, Comparison, direction
from .latency.stats import Interval, mean_ratio_interval
from .published import PublishedResult, read_data

HOLDS, FAILS, UNMEASURABLE = "holds", "does not hold", "needs training"
DEPENDS = "depends on the convention"
NOT_TIMED = "not timed"
COST_METRICS = ("params", "flops")
LATENCY = "latency"


def _float(text: str) -> float | None:
    return float(text) if text.strip() else None


@dataclass(frozen=True)
class Claim:
    id: str
    metric: str  # params, flops, latency, miou, top1
    kind: str  # change (a stated %), range (words read as a % range), growth (b1->b3 ratios), direction
    #            (latency: "faster"), observed (latency beside a cost claim, nothing stated), accuracy
    pairs: tuple[tuple[str, str], ...]  # (subject, baseline)
    input: tuple[int, int]
    stated: str
    stated_pct: float | None
    tolerance_pp: float | None
    low_pct: float | None
    high_pct: float | None
    source: str
    note: str
    pairs_by: str = "paper"  # who chose the pairs: "paper", or "hrvit-bench" where the paper does not say

    @property
    def key(self) -> str:
        """Unique per claim row: a growth row shares its id, metric and input with a range row."""
        growth = " growth" if self.kind == "growth" else ""
        return f"{self.id}/{self.metric}{growth}@{zoo.format_size(self.input)}"

    @property
    def measurable(self) -> bool:
        return self.kind != "accuracy" and self.metric in (*COST_METRICS, LATENCY)

    @classmethod
    def from_row(cls, row: dict) -> "Claim":
        pairs = tuple(tuple(p.split(">")) for p in row["pairs"].split(";") if p)
        return cls(
            id=row["id"], metric=row["metric"], kind=row["kind"], pairs=pairs, input=zoo.parse_size(row["input"]),
            stated=row["stated"], stated_pct=_float(row["stated_pct"]), tolerance_pp=_float(row["tolerance_pp"]),
            low_pct=_float(row["low_pct"]), high_pct=_float(row["high_pct"]), source=row["source"], note=row["note"],
            pairs_by=row["pairs_by"] or "paper",
        )


def load_claims() -> list[Claim]:
    return [Claim.from_row(r) for r in read_data("claims.csv")]


def latency_claims(claims: list[Claim]) -> list[Claim]:
    """Every latency row to time: the stated ones, and one beside each cost comparison that states none, so a
    reader sees where a FLOP saving does or does not become time. Growth claims compare ratios, not two models."""
    rows = [c for c in claims if c.metric == LATENCY]
    covered = {(c.id, c.pairs, c.input) for c in rows}
    for c in claims:
        if c.metric in COST_METRICS and c.kind in ("change", "range") and (c.id, c.pairs, c.input) not in covered:
            covered.add((c.id, c.pairs, c.input))
            rows.append(Claim(c.id, LATENCY, "observed", c.pairs, c.input, "-", None, None, None, None, c.source,
                              "not stated: timed beside the cost claim", c.pairs_by))
    return rows


@dataclass(frozen=True)
class Provenance:
    """What a verdict rests on: official architectures, or our reading of the paper."""

    reconstructions: tuple[tuple[str, str], ...] = ()  # (model, why no official code exists)
    pairs_chosen: bool = False  # the paper does not say which models it compared; hrvit-bench chose

    @property
    def short(self) -> str:
        parts = (["reconstruction"] if self.reconstructions else []) + (["our pairs"] if self.pairs_chosen else [])
        return "; ".join(parts) or "official"

    def describe(self) -> str:
        parts = []
        if self.reconstructions:
            parts.append("reconstruction: " + "; ".join(f"{m} ({why})" for m, why in self.reconstructions))
        if self.pairs_chosen:
            parts.append("pairs chosen by hrvit-bench (the paper does not name them)")
        return ". ".join(parts) or "official architectures on both sides"

    def to_dict(self) -> dict:
        return {"basis": self.short, "reconstructions": "; ".join(f"{m}: {why}" for m, why in self.reconstructions),
                "pairs_chosen": self.pairs_chosen}


def provenance(claim: Claim) -> Provenance:
    models = sorted({m for pair in claim.pairs for m in pair})
    rebuilt = tuple((m, zoo.info(m).reconstruction) for m in models if zoo.info(m).reconstruction)
    return Provenance(rebuilt, claim.pairs_by == "hrvit-bench")


def _cost(count: MacCount, metric: str, convention: Convention | None) -> int:
    return count.params if metric == "params" else count.total(convention)


@dataclass
class ClaimResult:
    """One claim under one convention (``None`` for parameter claims, which no FLOP convention touches)."""

    claim: Claim
    convention: Convention | None
    measured_pct: float | None  # mean relative change over the pairs (growth: the subject's growth, as %)
    per_pair: list[tuple[str, str, float]]
    verdict: str
    why: str

    @property
    def convention_name(self) -> str:
        return self.convention.name if self.convention else "-"

    def to_dict(self) -> dict:
        c = self.claim
        return {
            "id": c.id, "metric": c.metric, "kind": c.kind, "input": zoo.format_size(c.input),
            "convention": self.convention_name, "stated": c.stated, "stated_pct": c.stated_pct,
            "measured_pct": None if self.measured_pct is None else round(self.measured_pct, 3),
            "verdict": self.verdict, "why": self.why, "source": c.source, "note": c.note,
            "pairs": [{"subject": s, "baseline": b, "change_pct": round(p, 3)} for s, b, p in self.per_pair],
        }


def published_explanation(claim: Claim, published: dict) -> str:
    """What the papers' own numbers give for this claim, and whether its two sides were counted alike."""
    sides = [(published.get((s, claim.input)), published.get((b, claim.input))) for s, b in claim.pairs]
    if claim.metric not in COST_METRICS or not sides or not all(a and b for a, b in sides):
        return ""
    value = (lambda r: r.published.params_m) if claim.metric == "params" else (lambda r: r.published.gflops)
    pct = 100 * mean(value(a) / value(b) - 1 for a, b in sides)
    text = f"; the published numbers give {pct:+.1f}%"
    if claim.metric == "flops":
        mixed = [(a, b) for a, b in sides if a.best_convention != b.best_convention]
        if mixed:
            a, b = mixed[0]
            text += (f", but counted differently: {a.published.gflops:g}G matches {a.best_convention}, "
                     f"{b.published.gflops:g}G matches {b.best_convention}")
    return text


def evaluate(claim: Claim, convention: Convention | None, counts: CountCache,
             published: dict[tuple[str, tuple[int, int]], PublishedResult] | None = None) -> ClaimResult:
    """A parameter or FLOP claim under one convention (accuracy claims need training)."""
    if claim.metric not in COST_METRICS or claim.kind == "accuracy":
        why = f"{claim.metric} needs training and data ({claim.note})"
        return ClaimResult(claim, None, None, [], UNMEASURABLE, why)

    def change(subject: str, baseline: str) -> float:
        s = _cost(counts.get(subject, claim.input), claim.metric, convention)
        b = _cost(counts.get(baseline, claim.input), claim.metric, convention)
        return 100.0 * (s / b - 1.0)

    per_pair = [(s, b, change(s, b)) for s, b in claim.pairs]
    if claim.kind == "growth":
        (big, small, grown), (ref_big, ref_small, ref_grown) = per_pair
        holds = grown > ref_grown
        why = (f"{small} -> {big}: x{1 + grown / 100:.2f}; {ref_small} -> {ref_big}: x{1 + ref_grown / 100:.2f}: "
               + ("grows faster" if holds else "does not grow faster"))
        return ClaimResult(claim, convention, grown, per_pair, HOLDS if holds else FAILS, why)
    measured = mean(p for _, _, p in per_pair)
    averaged = f" (mean of {len(per_pair)} pairs)" if len(per_pair) > 1 else ""
    if claim.kind == "change":
        gap = measured - claim.stated_pct
        holds = abs(gap) <= claim.tolerance_pp
        why = f"measured {measured:+.1f}%{averaged} vs stated {claim.stated_pct:+.1f}% (±{claim.tolerance_pp:g} pp)"
        if not holds:
            if measured * claim.stated_pct < 0:
                why += ": the opposite direction"
            else:
                why += ": larger than stated" if abs(measured) > abs(claim.stated_pct) else ": smaller than stated"
    else:  # range
        holds = claim.low_pct <= measured <= claim.high_pct
        why = (f"measured {measured:+.2f}%{averaged}; '{claim.stated}' read as "
               f"{claim.low_pct:+g}% to {claim.high_pct:+g}%")
    why += published_explanation(claim, published or {})
    return ClaimResult(claim, convention, measured, per_pair, HOLDS if holds else FAILS, why)


@dataclass
class LatencyResult:
    """A latency row: each pair timed in interleaved rounds; the change is the mean over pairs of the ratio of
    medians, with a bootstrap interval that resamples each pair's rounds."""

    claim: Claim
    comparisons: list[Comparison]  # one per pair: the baseline timed as model 0, the subject as model 1
    change: Interval  # mean over pairs of median(subject) / median(baseline), as a ratio
    flop_change_pct: float  # mean over pairs of the FLOP change, fvcore's convention
    verdict: str
    why: str

    @property
    def measured_pct(self) -> float:
        return 100 * (self.change.value - 1)

    @property
    def direction(self) -> str:
        return direction(self.change)

    def to_dict(self) -> dict:
        c, env = self.claim, self.comparisons[0].environment
        settings = self.comparisons[0].settings
        return {
            "id": c.id, "metric": c.metric, "kind": c.kind, "input": zoo.format_size(c.input), "stated": c.stated,
            "measured_pct": round(self.measured_pct, 3), "ratio": self.change.to_dict(),
            "direction": self.direction, "verdict": self.verdict, "why": self.why,
            "flop_change_pct": round(self.flop_change_pct, 3), "device": env.device_name, "dtype": settings.dtype,
            "threads": settings.threads, "rounds": [cmp.rounds for cmp in self.comparisons],
            "pairs": [{"subject": cmp.sides[1].model, "baseline": cmp.sides[0].model,
                       "subject_median_ms": cmp.sides[1].median.value, "baseline_median_ms": cmp.sides[0].median.value,
                       "ratio": cmp.ratio(1).to_dict()} for cmp in self.comparisons],
        }


def evaluate_latency(claim: Claim, comparisons: list[Comparison], flop_change_pct: float) -> LatencyResult:
    """``comparisons[i]`` timed pair i with the baseline first: its ratio is subject over baseline."""
    change = mean_ratio_interval([list(zip(c.sides[0].samples_ms, c.sides[1].samples_ms)) for c in comparisons])
    low, high = 100 * (change.low - 1), 100 * (change.high - 1)
    said = f"{100 * (change.value - 1):+.1f}% ({low:+.1f}% to {high:+.1f}%, 95%)"
    moved = direction(change)
    if claim.kind == "range":
        inside, outside = claim.low_pct <= low and high <= claim.high_pct, high < claim.low_pct or low > claim.high_pct
        verdict = HOLDS if inside else FAILS if outside else INDISTINGUISHABLE
        why = f"time {said}; '{claim.stated}' read as {claim.low_pct:+g}% to {claim.high_pct:+g}%"
        if verdict == INDISTINGUISHABLE:
            why += ": the interval straddles the bound"
    elif claim.kind == "direction":
        verdict = {FASTER: HOLDS, SLOWER: FAILS}.get(moved, INDISTINGUISHABLE)
        why = f"time {said}: {moved}"
    else:
        verdict, why = moved, f"time {said}"
    why += f"; FLOPs {flop_change_pct:+.1f}%"
    return LatencyResult(claim, comparisons, change, flop_change_pct, verdict, why)


@dataclass
class Headline:
    """One verdict per claim row: the same under every convention, or "depends on the convention"."""

    claim: Claim
    results: list[ClaimResult] = field(default_factory=list)  # one per convention evaluated
    latency: LatencyResult | None = None

    @property
    def provenance(self) -> Provenance:
        return provenance(self.claim)

    @property
    def main(self) -> ClaimResult | None:
        """The result shown as the headline's number: fvcore's convention when it was evaluated."""
        if not self.results:
            return None
        return next((r for r in self.results if r.convention == DEFAULT), self.results[0])

    @property
    def verdict(self) -> str:
        if self.claim.metric == LATENCY:
            return self.latency.verdict if self.latency else NOT_TIMED
        verdicts = {r.verdict for r in self.results}
        return verdicts.pop() if len(verdicts) == 1 else DEPENDS

    @property
    def measured_pct(self) -> float | None:
        if self.claim.metric == LATENCY:
            return self.latency.measured_pct if self.latency else None
        return self.main.measured_pct if self.main else None

    @property
    def why(self) -> str:
        if self.claim.metric == LATENCY:
            return self.latency.why if self.latency else "timed only with --latency cpu|cuda (noise, not gated)"
        return self.main.why

    def scope_detail(self) -> list[tuple[str, ClaimResult]]:
        """(scope label, result) per ops scope, where the scopes' verdicts disagree; empty where they agree."""
        if self.verdict != DEPENDS:
            return []
        by_scope: dict[str, ClaimResult] = {}
        for r in self.results:
            by_scope.setdefault("all ops" if r.convention.ops == "all" else "GEMM only", r)
        return list(by_scope.items())

    def to_dict(self) -> dict:
        c = self.claim
        out = {
            "key": c.key, "id": c.id, "metric": c.metric, "kind": c.kind, "input": zoo.format_size(c.input),
            "stated": c.stated,
            "measured_pct": None if self.measured_pct is None else round(self.measured_pct, 3),
            "verdict": self.verdict, **self.provenance.to_dict(), "why": self.why,
            "pairs": ";".join(f"{s}>{b}" for s, b in c.pairs), "source": c.source, "note": c.note,
        }
        if c.metric == "flops":
            out["by_scope"] = "; ".join(f"{scope}: {r.measured_pct:+.2f}% {r.verdict}" for scope, r in
                                        {("all ops" if r.convention.ops == "all" else "GEMM only"): r
                                         for r in self.results}.items())
        if self.latency:
            lat = self.latency.to_dict()
            out |= {k: lat[k] for k in ("direction", "flop_change_pct", "device", "dtype", "threads")}
            ratio = lat["ratio"]
            out |= {"ratio": ratio["value"], "ratio_low": ratio["low"], "ratio_high": ratio["high"]}
        return out


def headlines(results: list[ClaimResult], latency: list[LatencyResult], latency_rows: list[Claim]) -> list[Headline]:
    """Headlines in claims.csv order, each latency row after the cost rows of its claim id."""
    by_key: dict[str, Headline] = {}
    for r in results:
        by_key.setdefault(r.claim.key, Headline(r.claim)).results.append(r)
    timed = {(r.claim.id, r.claim.pairs, r.claim.input): r for r in latency}
    ordered = list(by_key.values())
    for row in latency_rows:
        h = Headline(row, latency=timed.get((row.id, row.pairs, row.input)))
        last = max((i for i, o in enumerate(ordered) if o.claim.id == row.id), default=len(ordered) - 1)
        ordered.insert(last + 1, h)
    return ordered
