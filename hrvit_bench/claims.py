"""HRViT's stated savings, checked: the claims table (data/claims.csv) evaluated under every convention.

Each claim row names pairs ``subject>baseline`` of registered models, an input, a metric and what the paper
states. A relative change is the mean over its pairs of ``subject / baseline - 1``; the averages say which pairs
they average because the pairs are in the row. Accuracy claims need training and data: they are listed as not
measurable here, never as passed. Published absolute numbers (data/published.csv) are set beside the measured
ones, with the convention each matches best.
"""
from __future__ import annotations

import csv
import importlib.resources
from dataclasses import dataclass, field
from statistics import mean

from rich.table import Table

from . import zoo
from .conventions import ALL_CONVENTIONS, Convention
from .count_cache import CountCache
from .counting import MacCount

HOLDS, FAILS, UNMEASURABLE = "holds", "does not hold", "not measurable here"
COST_METRICS = ("params", "flops")


def _data(name: str) -> list[dict]:
    with importlib.resources.files("hrvit_bench.data").joinpath(name).open(newline="") as handle:
        return list(csv.DictReader(handle))


def _float(text: str) -> float | None:
    return float(text) if text.strip() else None


@dataclass(frozen=True)
class Claim:
    id: str
    metric: str  # params, flops, miou, top1
    kind: str  # change (a stated %), range (words read as a % range), growth (b1->b3 ratios), accuracy
    pairs: tuple[tuple[str, str], ...]  # (subject, baseline)
    input: tuple[int, int]
    stated: str
    stated_pct: float | None
    tolerance_pp: float | None
    low_pct: float | None
    high_pct: float | None
    source: str
    note: str

    @property
    def key(self) -> str:
        return f"{self.id}/{self.metric}@{self.input[0]}x{self.input[1]}"

    @property
    def measurable(self) -> bool:
        return self.kind != "accuracy" and self.metric in COST_METRICS

    @classmethod
    def from_row(cls, row: dict) -> "Claim":
        pairs = tuple(tuple(p.split(">")) for p in row["pairs"].split(";") if p)
        return cls(
            id=row["id"], metric=row["metric"], kind=row["kind"], pairs=pairs, input=zoo.parse_size(row["input"]),
            stated=row["stated"], stated_pct=_float(row["stated_pct"]), tolerance_pp=_float(row["tolerance_pp"]),
            low_pct=_float(row["low_pct"]), high_pct=_float(row["high_pct"]), source=row["source"], note=row["note"],
        )


@dataclass(frozen=True)
class Published:
    model: str
    input: tuple[int, int]
    params_m: float
    gflops: float
    source: str


def load_claims() -> list[Claim]:
    return [Claim.from_row(r) for r in _data("claims.csv")]


def load_published() -> list[Published]:
    return [
        Published(r["model"], zoo.parse_size(r["input"]), float(r["params_m"]), float(r["gflops"]), r["source"])
        for r in _data("published.csv")
    ]


def _cost(count: MacCount, metric: str, convention: Convention | None) -> int:
    return count.params if metric == "params" else count.total(convention)


@dataclass
class ClaimResult:
    claim: Claim
    convention: Convention | None  # None for parameter claims, which no FLOP convention touches
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
            "id": c.id, "metric": c.metric, "kind": c.kind, "input": f"{c.input[0]}x{c.input[1]}",
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
             published: dict | None = None) -> ClaimResult:
    if not claim.measurable:
        return ClaimResult(claim, None, None, [], UNMEASURABLE, f"{claim.metric} needs training and data ({claim.note})")

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
class PublishedResult:
    published: Published
    params: int
    giga_by_convention: dict[str, float]

    @property
    def best_convention(self) -> str:
        return min(self.giga_by_convention, key=lambda c: abs(self.giga_by_convention[c] - self.published.gflops))

    def to_dict(self) -> dict:
        p, best = self.published, self.best_convention
        return {
            "model": p.model, "input": f"{p.input[0]}x{p.input[1]}", "source": p.source,
            "published_params_m": p.params_m, "measured_params_m": round(self.params / 1e6, 3),
            "published_gflops": p.gflops, "best_convention": best,
            "measured_giga_best": round(self.giga_by_convention[best], 3),
            "gap_pct": round(100 * (self.giga_by_convention[best] / p.gflops - 1), 2),
            "measured_giga": {k: round(v, 3) for k, v in self.giga_by_convention.items()},
        }


def claim_inputs(claims: list[Claim]) -> set[tuple[str, tuple[int, int]]]:
    return {(m, c.input) for c in claims if c.measurable for pair in c.pairs for m in pair}


def check_published(counts: CountCache, published: list[Published] | None = None) -> list[PublishedResult]:
    results = []
    for p in load_published() if published is None else published:
        count = counts.get(p.model, p.input)
        giga = {c.name: c.giga_value(count.total(c)) for c in ALL_CONVENTIONS}
        results.append(PublishedResult(p, count.params, giga))
    return results


CONVENTION_FOOTNOTE = ("* the same under MACs and FLOPs, 1e9 and 2^30: unit and giga scale both sides of a ratio "
                       "alike, so only all-ops vs GEMM-only counting can change a relative claim")

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


def scaling_inputs() -> set[tuple[str, tuple[int, int]]]:
    return {(pattern.format(v), size) for _, pattern, variants in SCALING_FAMILIES for v in variants
            for size in SCALING_SIZES}


def scaling_view(counts: CountCache) -> list[ScalingRow]:
    """Table 6 as a scaling view: cost of each family as width (b1..b3) and resolution grow."""
    rows = []
    for family, pattern, variants in SCALING_FAMILIES:
        for v in variants:
            name = pattern.format(v)
            gmacs = {f"{h}x{w}": counts.get(name, (h, w)).total() / 1e9 for h, w in SCALING_SIZES}
            rows.append(ScalingRow(family, name, counts.get(name, SCALING_SIZES[1]).params, gmacs))
    return rows


@dataclass
class ClaimsReport:
    results: list[ClaimResult]
    published: list[PublishedResult] = field(default_factory=list)
    scaling: list[ScalingRow] = field(default_factory=list)
    conventions: tuple[Convention, ...] = ALL_CONVENTIONS

    @classmethod
    def measure(cls, conventions=ALL_CONVENTIONS, counts: CountCache | None = None, progress=None,
                jobs: int = 1) -> "ClaimsReport":
        counts = counts or CountCache()
        claims = load_claims()
        wanted = claim_inputs(claims) | scaling_inputs() | {(p.model, p.input) for p in load_published()}
        counts.prefetch(wanted, jobs, progress)
        published = check_published(counts)
        lookup = {(p.published.model, p.published.input): p for p in published}
        results = []
        for claim in claims:
            if claim.metric == "flops" and claim.measurable:
                results += [evaluate(claim, c, counts, lookup) for c in conventions]
            else:
                results.append(evaluate(claim, None, counts, lookup))
        return cls(results, published, scaling_view(counts), tuple(conventions))

    @property
    def failed(self) -> list[ClaimResult]:
        return [r for r in self.results if r.verdict == FAILS]

    def to_dict(self) -> dict:
        return {
            "claims": [r.to_dict() for r in self.results],
            "published": [p.to_dict() for p in self.published],
            "scaling": [{"family": s.family, "model": s.model, "params": s.params, "gmacs_all_1e9": s.gmacs}
                        for s in self.scaling],
        }

    def csv_rows(self) -> list[dict]:
        return [{k: v for k, v in r.to_dict().items() if k != "pairs"} | {
            "pairs": ";".join(f"{s}>{b}" for s, b, _ in r.per_pair)} for r in self.results]

    def grouped(self) -> list[tuple[ClaimResult, list[str]]]:
        """One entry per claim and distinct outcome, naming the conventions that share it.

        Unit (MACs/FLOPs) and giga (1e9/2^30) scale both sides of a ratio alike, so only the ops scope can change a
        relative claim; grouping shows that instead of eight identical rows."""
        groups: dict[tuple, tuple[ClaimResult, list[str]]] = {}
        for r in self.results:
            key = (r.claim.key, r.verdict, None if r.measured_pct is None else round(r.measured_pct, 6))
            if key in groups:
                groups[key][1].append(r.convention_name)
            else:
                groups[key] = (r, [r.convention_name])
        return list(groups.values())

    def _convention_label(self, names: list[str]) -> str:
        if names == ["-"]:
            return "any"
        if len(names) == len(self.conventions) and len(names) > 1:
            return "every convention"
        scopes = {n.split("-")[1] for n in names}
        if len(scopes) == 1 and len(names) == sum(1 for c in self.conventions if c.ops in scopes) and len(names) > 1:
            return ("all ops" if scopes == {"all"} else "GEMM only") + "*"
        return ", ".join(names)

    def tables(self) -> list[Table]:
        table = Table(title="HRViT's claims, checked", caption=CONVENTION_FOOTNOTE)
        for col in ("claim", "metric", "input", "convention", "stated", "measured", "verdict"):
            table.add_column(col, no_wrap=col in ("metric", "input", "convention", "measured"),
                             max_width=18 if col in ("claim", "stated") else None,
                             justify="right" if col == "measured" else "left")
        table.add_column("why", min_width=36, ratio=1)
        style = {HOLDS: "green", FAILS: "red", UNMEASURABLE: "dim"}
        for r, names in self.grouped():
            c = r.claim
            measured = "-" if r.measured_pct is None else f"{r.measured_pct:+.1f}%"
            table.add_row(c.id, c.metric, f"{c.input[0]}x{c.input[1]}", self._convention_label(names), c.stated,
                          measured, f"[{style[r.verdict]}]{r.verdict}[/]", r.why)
        tables = [table]
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
            for h, w in SCALING_SIZES:
                scale.add_column(f"{h}x{w}", justify="right")
            for s in self.scaling:
                scale.add_row(s.family, s.model, f"{s.params / 1e6:.1f}M", *(f"{g:.1f}" for g in s.gmacs.values()))
            tables.append(scale)
        return tables

    def to_markdown(self) -> str:
        from tabulate import tabulate

        counts = {v: sum(1 for r in self.results if r.verdict == v) for v in (HOLDS, FAILS, UNMEASURABLE)}
        lines = [
            "# HRViT's claims, checked by hrvit-bench",
            "",
            f"{counts[HOLDS]} hold, {counts[FAILS]} do not hold, {counts[UNMEASURABLE]} are not measurable here "
            "(one result per claim and convention; accuracy claims need training).",
            "A relative change is `subject / baseline - 1`, averaged over the claim's pairs. "
            + CONVENTION_FOOTNOTE.replace("* ", "Conventions marked * give ") + ".",
            "",
        ]
        rows = []
        for r, names in self.grouped():
            c = r.claim
            rows.append([c.id, c.metric, f"{c.input[0]}x{c.input[1]}", self._convention_label(names), c.stated,
                         "-" if r.measured_pct is None else f"{r.measured_pct:+.1f}%", r.verdict, r.why])
        lines.append(tabulate(rows, headers=["claim", "metric", "input", "convention", "stated", "measured",
                                             "verdict", "why"], tablefmt="github"))
        lines += ["", "## Pairs behind each claim", ""]
        seen = set()
        for r in self.results:
            if r.claim.key in seen or not r.per_pair:
                continue
            seen.add(r.claim.key)
            pairs = ", ".join(f"`{s}` vs `{b}`" for s, b, _ in r.per_pair)
            lines.append(f"- **{r.claim.key}**: {pairs}. {r.claim.note}".rstrip())
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
                                                 *(f"{h}x{w}" for h, w in SCALING_SIZES)], tablefmt="github"))
        return "\n".join(lines) + "\n"
