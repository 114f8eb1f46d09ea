"""`hrvit-bench claims`: every claim's headline verdict and what it rests on, the published numbers beside ours,
Table 6 as a scaling view, and (on request) latency rows timed in interleaved rounds."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from statistics import mean
from typing import Callable

from rich import box
from rich.table import Table
from tabulate import tabulate

from . import zoo
from .claims import (
    COST_METRICS,
    DEPENDS,
    FAILS,
    HOLDS,
    LATENCY,
    NOT_TIMED,
    UNMEASURABLE,
    Claim,
    ClaimResult,
    Headline,
    LatencyResult,
    evaluate,
    evaluate_latency,
    headlines,
    latency_claims,
    load_claims,
)
from .conventions import ALL_CONVENTIONS, DEFAULT, Convention
from .count_cache import CountCache
from .errors import UsageError
from .latency.compare import FASTER, INDISTINGUISHABLE, SLOWER, Comparison, interleaved
from .latency.settings import LatencySettings
from .published import PublishedResult, check_published, load_published

CONVENTION_FOOTNOTE = ("unit (MACs/FLOPs) and giga (1e9/2^30) scale both sides of a ratio alike, so only all-ops "
                       "vs GEMM-only counting can change a relative claim")
VERDICT_STYLE = {HOLDS: "green", FAILS: "red", DEPENDS: "yellow", UNMEASURABLE: "dim", NOT_TIMED: "dim",
                 FASTER: "green", SLOWER: "red", INDISTINGUISHABLE: "yellow"}

SCALING_FAMILIES = (("naive HRNet-MiT", "hrnet_mit_{}_seg_ade20k", ("b1", "b2", "b3")),
                    ("sequential MiT", "mit_{}_seg_ade20k", ("b1", "b2", "b3")),
                    ("HRViT", "hrvit_{}_seg_ade20k", ("b1", "b2", "b3")))
SCALING_SIZES = ((256, 256), (512, 512), (1024, 1024))


@dataclass
class ScalingRow:
    family: str
    model: str
    params: int
    gmacs: dict[str, float]  # input -> GMACs (all ops, 1e9)


def claim_inputs(claims: list[Claim]) -> set[tuple[str, tuple[int, int]]]:
    return {(m, c.input) for c in claims if c.measurable for pair in c.pairs for m in pair}


def scaling_inputs() -> set[tuple[str, tuple[int, int]]]:
    return {(pattern.format(v), size) for _, pattern, variants in SCALING_FAMILIES for v in variants
            for size in SCALING_SIZES}


def scaling_view(counts: CountCache) -> list[ScalingRow]:
    """Table 6 as a scaling view: cost of each family as width (b1..b3) and resolution grow."""
    rows = []
    for family, pattern, variants in SCALING_FAMILIES:
        for v in variants:
            name = pattern.format(v)
            gmacs = {zoo.format_size(s): counts.get(name, s).total() / 1e9 for s in SCALING_SIZES}
            rows.append(ScalingRow(family, name, counts.get(name, SCALING_SIZES[1]).params, gmacs))
    return rows


def select_claims(claims: list[Claim], patterns: list[str] | None) -> list[Claim]:
    """The claims whose id matches one of the glob ``patterns`` (all when none are given)."""
    if not patterns:
        return claims
    chosen = [c for c in claims if any(fnmatchcase(c.id, p) for p in patterns)]
    if not chosen:
        ids = ", ".join(dict.fromkeys(c.id for c in claims))
        raise UsageError(f"no claim id matches {', '.join(patterns)}; ids: {ids}")
    return chosen


def time_claims(rows: list[Claim], counts: CountCache, settings: LatencySettings,
                progress: Callable[[str], None] | None = None) -> list[LatencyResult]:
    """Each latency row's pairs timed in interleaved rounds (baseline first); a pair shared by rows is timed once."""
    timed: dict[tuple[str, str, tuple[int, int]], Comparison] = {}
    results = []
    for row in rows:
        comparisons = []
        for subject, baseline in row.pairs:
            key = (subject, baseline, row.input)
            if key not in timed:
                if progress:
                    progress(f"latency {subject} vs {baseline} @ {zoo.format_size(row.input)}")
                timed[key] = interleaved([baseline, subject], row.input, 1, settings)
            comparisons.append(timed[key])
        flops = mean(100 * (counts.get(s, row.input).total() / counts.get(b, row.input).total() - 1)
                     for s, b in row.pairs)
        results.append(evaluate_latency(row, comparisons, flops))
    return results


@dataclass
class ClaimsReport:
    results: list[ClaimResult]  # every cost claim under every convention evaluated
    headlines: list[Headline]  # one verdict per claim row
    published: list[PublishedResult] = field(default_factory=list)
    scaling: list[ScalingRow] = field(default_factory=list)
    conventions: tuple[Convention, ...] = ALL_CONVENTIONS
    wide: bool = False  # tables(): the full table with conventions and reasons, instead of the 80-column one

    @classmethod
    def measure(cls, conventions=ALL_CONVENTIONS, counts: CountCache | None = None, progress=None, jobs: int = 1,
                latency: LatencySettings | None = None, ids: list[str] | None = None) -> "ClaimsReport":
        counts = counts or CountCache()
        every = load_claims()
        claims = select_claims(every, ids)
        published_rows = load_published()
        counts.prefetch(claim_inputs(every) | scaling_inputs() | {(p.model, p.input) for p in published_rows},
                        jobs, progress)
        published = check_published(counts, published_rows)
        lookup = {(p.published.model, p.published.input): p for p in published}
        results = []
        for claim in claims:
            if claim.metric == LATENCY:
                continue
            if claim.metric == "flops" and claim.measurable:
                results += [evaluate(claim, c, counts, lookup) for c in conventions]
            else:
                results.append(evaluate(claim, None, counts, lookup))
        rows = latency_claims(claims) if latency else []
        timed = time_claims(rows, counts, latency, progress) if latency else []
        return cls(results, headlines(results, timed, rows), published, scaling_view(counts), tuple(conventions))

    @property
    def failed(self) -> list[Headline]:
        """Headlines that do not hold, under every convention or under some."""
        return [h for h in self.headlines if h.verdict in (FAILS, DEPENDS)]

    @property
    def cost_headlines(self) -> list[Headline]:
        return [h for h in self.headlines if h.claim.metric != LATENCY]

    @property
    def latency_headlines(self) -> list[Headline]:
        return [h for h in self.headlines if h.claim.metric == LATENCY]

    def summary(self) -> str:
        """One line: the headline verdicts, each claim row once."""
        tally = Counter(h.verdict for h in self.cost_headlines)
        parts = [f"{tally[v]} {label}" for v, label in ((HOLDS, "hold"), (FAILS, "do not hold"),
                                                         (DEPENDS, "depend on the counting convention"),
                                                         (UNMEASURABLE, "need training")) if tally[v]]
        text = f"{len(self.cost_headlines)} claim rows: " + ", ".join(parts)
        timed = [h for h in self.latency_headlines if h.latency]
        if timed:
            env = timed[0].latency.comparisons[0]
            lat = Counter(h.latency.direction for h in timed)
            threads = env.settings.threads
            text += (f"; latency on {env.environment.device_name} ({env.settings.dtype}, {threads} thread"
                     f"{'s' if threads != 1 else ''}): "
                     + ", ".join(f"{lat[d]} {d}" for d in (FASTER, SLOWER, INDISTINGUISHABLE) if lat[d]))
        return text

    # ------------------------------------------------------------------------------------------------------------
    # Rendering.

    def to_dict(self) -> dict:
        return {
            "summary": self.summary(),
            "headlines": [h.to_dict() for h in self.headlines],
            "claims": [r.to_dict() for r in self.results],
            "latency": [h.latency.to_dict() for h in self.latency_headlines if h.latency],
            "published": [p.to_dict() for p in self.published],
            "scaling": [{"family": s.family, "model": s.model, "params": s.params, "gmacs_all_1e9": s.gmacs}
                        for s in self.scaling],
        }

    def csv_rows(self) -> list[dict]:
        """One row per claim row (its headline); per-convention results are in the JSON."""
        return [h.to_dict() for h in self.headlines]

    @staticmethod
    def _measured(h: Headline) -> str:
        if h.measured_pct is None:
            return "-"
        if h.verdict == DEPENDS:
            return " / ".join(f"{r.measured_pct:+.1f}%" for _, r in h.scope_detail())
        return f"{h.measured_pct:+.1f}%"

    def tables(self) -> list[Table]:
        return self._wide_tables() if self.wide else self._compact_tables()

    def _compact_tables(self) -> list[Table]:
        """Fits 80 columns: the claim id once per group with what it rests on beneath it."""
        table = Table(title="HRViT's claims, checked", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0),
                      caption=f"{self.summary()}. Full table: --wide, or reports/claims.md.")
        table.add_column("claim", no_wrap=True)
        table.add_column("metric", no_wrap=True)
        table.add_column("input", no_wrap=True, justify="right")
        table.add_column("stated", max_width=13)
        table.add_column("measured", no_wrap=True, justify="right")
        table.add_column("verdict", no_wrap=True)
        previous = None
        for h in self.cost_headlines:
            first = h.claim.id != previous
            if first and previous is not None:
                table.add_section()
            previous = h.claim.id
            basis = h.provenance.short.replace("; ", "\n")
            claim_cell = f"{h.claim.id}\n[dim]{basis}[/]" if first else ""
            table.add_row(claim_cell, h.claim.metric, _short_size(h.claim.input), h.claim.stated, self._measured(h),
                          f"[{VERDICT_STYLE[h.verdict]}]{_short_verdict(h.verdict)}[/]")
        return [table, *self._latency_tables()]

    def _timed(self) -> list[Headline]:
        return [h for h in self.latency_headlines if h.latency]

    def _latency_rows(self) -> list[list[str]]:
        rows = []
        for h in self._timed():
            lat = h.latency
            low, high = (100 * (v - 1) for v in (lat.change.low, lat.change.high))
            rows.append([h.claim.id, _short_size(h.claim.input), f"{lat.measured_pct:+.1f}%",
                         f"{low:+.1f}..{high:+.1f}%", lat.direction, f"{lat.flop_change_pct:+.1f}%",
                         h.verdict if h.claim.kind != "observed" else "-"])
        return rows

    def _latency_tables(self) -> list[Table]:
        """Time beside FLOPs: where a FLOP saving does or does not become time."""
        rows = self._latency_rows()
        if not rows:
            return []
        first = self._timed()[0].latency.comparisons[0]
        threads = first.settings.threads
        table = Table(title=f"time vs FLOPs: subject / baseline - 1, interleaved on {first.settings.device}",
                      box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0),
                      caption=f"{first.environment.device_name}, {first.settings.dtype}, {threads} thread"
                              f"{'s' if threads != 1 else ''}; 95% bootstrap intervals over rounds. Verdict: of "
                              "a stated latency claim.")
        for col in ("claim", "input", "time (95% CI)", "direction", "FLOPs", "verdict"):
            table.add_column(col, no_wrap=True, justify="right" if col in ("input", "time (95% CI)", "FLOPs")
                             else "left")
        for claim, size, time, interval, moved, flops, verdict in rows:
            style = VERDICT_STYLE.get(verdict, "")
            table.add_row(claim, size, f"{time}\n[dim]{interval}[/]", f"[{VERDICT_STYLE[moved]}]"
                          f"{_short_verdict(moved)}[/]", flops, f"[{style}]{verdict}[/]" if style else verdict)
        return [table]

    def _wide_tables(self) -> list[Table]:
        table = Table(title="HRViT's claims, checked", caption=f"{self.summary()}. {CONVENTION_FOOTNOTE}.")
        for col in ("claim", "metric", "input", "stated", "measured", "verdict", "rests on"):
            table.add_column(col, no_wrap=col in ("claim", "metric", "input", "measured"),
                             max_width=18 if col in ("stated", "rests on") else None,
                             justify="right" if col == "measured" else "left")
        table.add_column("why", min_width=36, ratio=1)
        for h in self.headlines:
            c = h.claim
            table.add_row(c.id, c.metric, zoo.format_size(c.input), c.stated, self._measured(h),
                          f"[{VERDICT_STYLE[h.verdict]}]{h.verdict}[/]", h.provenance.short, h.why)
            for scope, r in h.scope_detail():
                table.add_row("", f"  {scope}", "", "", f"{r.measured_pct:+.1f}%",
                              f"[{VERDICT_STYLE[r.verdict]}]{r.verdict}[/]", "", r.why)
        tables = [table, *self._latency_tables()]
        if self.published:
            pub = Table(title="published numbers beside measured ones")
            for col in ("model", "input", "params (pub.)", "params (ours)", "G (pub.)", "best convention",
                        "G (ours)", "gap"):
                pub.add_column(col, justify="left" if col in ("model", "best convention") else "right")
            for p in self.published:
                d = p.to_dict()
                pub.add_row(d["model"], d["input"], f"{d['published_params_m']:.1f}M", f"{d['measured_params_m']:.2f}M",
                            f"{d['published_gflops']:g}", d["best_convention"], f"{d['measured_giga_best']:.2f}",
                            f"{d['gap_pct']:+.1f}%")
            tables.append(pub)
        if self.scaling:
            scale = Table(title="Table 6 as scaling: GMACs (all ops, 1e9) as width and resolution grow, ADE20K head")
            scale.add_column("family")
            scale.add_column("model")
            scale.add_column("params", justify="right")
            for size in SCALING_SIZES:
                scale.add_column(zoo.format_size(size), justify="right")
            for s in self.scaling:
                scale.add_row(s.family, s.model, f"{s.params / 1e6:.1f}M", *(f"{g:.1f}" for g in s.gmacs.values()))
            tables.append(scale)
        return tables

    def to_markdown(self) -> str:
        lines = [
            "# HRViT's claims, checked by hrvit-bench",
            "",
            f"{self.summary()}.",
            "",
            "One verdict per claim row. A relative change is `subject / baseline - 1`, averaged over the claim's "
            f"pairs; FLOP changes are fvcore's convention (MACs, all ops); {CONVENTION_FOOTNOTE}, so a FLOP verdict "
            "that differs between the two says *depends on the convention* and both are shown below. *Rests on* "
            "says whether a verdict is about the paper's own models (official architectures on both sides) or about "
            "our reading of it (a reconstruction where no official code exists, or pairs hrvit-bench chose where "
            "the paper does not name them). Latency rows are timed only with `--latency cpu|cuda` and are never "
            "gated: they are noise on a shared machine.",
            "",
        ]
        rows = [[h.claim.id, h.claim.metric, zoo.format_size(h.claim.input), h.claim.stated, self._measured(h),
                 h.verdict, h.provenance.short, h.why] for h in self.headlines]
        lines.append(tabulate(rows, headers=["claim", "metric", "input", "stated", "measured", "verdict", "rests on",
                                             "why"], tablefmt="github"))
        split = [h for h in self.headlines if h.scope_detail()]
        if split:
            lines += ["", "## Where the counting convention decides", ""]
            rows = [[h.claim.id, h.claim.metric, zoo.format_size(h.claim.input), scope, f"{r.measured_pct:+.1f}%",
                     r.verdict, r.why] for h in split for scope, r in h.scope_detail()]
            lines.append(tabulate(rows, headers=["claim", "metric", "input", "counting", "measured", "verdict",
                                                 "why"], tablefmt="github"))
        latency = self._latency_rows()
        if latency:
            first = self._timed()[0].latency.comparisons[0]
            lines += ["", f"## Time beside FLOPs ({first.environment.device_name}, {first.settings.dtype}, "
                          f"{first.settings.threads} threads, interleaved rounds, 95% bootstrap intervals)", ""]
            lines.append(tabulate(latency, headers=["claim", "input", "time", "95% CI", "direction", "FLOPs",
                                                    "verdict"], tablefmt="github"))
        lines += ["", "## What each verdict rests on", ""]
        seen = set()
        for h in self.headlines:
            if h.claim.key in seen or not h.claim.pairs:
                continue
            seen.add(h.claim.key)
            pairs = ", ".join(f"`{s}` vs `{b}`" for s, b in h.claim.pairs)
            lines.append(f"- **{h.claim.key}**: {pairs}. {h.provenance.describe()}. {h.claim.note}".rstrip())
        if self.published:
            lines += ["", "## Published numbers beside measured ones", ""]
            rows = [[d["model"], d["input"], d["published_params_m"], d["measured_params_m"], d["published_gflops"],
                     d["best_convention"], d["measured_giga_best"], f"{d['gap_pct']:+.1f}%", d["source"]]
                    for d in (p.to_dict() for p in self.published)]
            lines.append(tabulate(rows, headers=["model", "input", "params M (pub.)", "params M (ours)", "G (pub.)",
                                                 "best convention", "G (ours)", "gap", "source"], tablefmt="github"))
        if self.scaling:
            lines += ["", "## Table 6 as scaling (GMACs, all ops, 1e9; SegFormer head, 150 classes)", ""]
            rows = [[s.family, s.model, f"{s.params / 1e6:.1f}M", *(f"{g:.1f}" for g in s.gmacs.values())]
                    for s in self.scaling]
            lines.append(tabulate(rows, headers=["family", "model", "params",
                                                 *(zoo.format_size(s) for s in SCALING_SIZES)], tablefmt="github"))
        return "\n".join(lines) + "\n"


def _short_size(size: tuple[int, int]) -> str:
    return str(size[0]) if size[0] == size[1] else zoo.format_size(size)


def _short_verdict(verdict: str) -> str:
    return {DEPENDS: "by convention", INDISTINGUISHABLE: "in the noise"}.get(verdict, verdict)
