"""The claims table and its verdicts: data complete, logic right by hand arithmetic, published conventions found
by an independent counter, headlines, provenance, latency verdicts and the 80-column table."""
import io

import pytest
import torch
from rich.console import Console
from torch.utils.flop_counter import FlopCounterMode

import hrvit_bench_models as models
from hrvit_bench import zoo
from hrvit_bench.claims import (
    DEPENDS, FAILS, HOLDS, LATENCY, UNMEASURABLE, Claim, Headline, evaluate, evaluate_latency, headlines,
    latency_claims, load_claims, provenance,
)
from hrvit_bench.claims_report import ClaimsReport
from hrvit_bench.conventions import ALL_CONVENTIONS, Convention
from hrvit_bench.count_cache import CountCache
from hrvit_bench.counting import MacCount
from hrvit_bench.environment import Environment
from hrvit_bench.latency.compare import FASTER, INDISTINGUISHABLE, SLOWER, Comparison, Side
from hrvit_bench.latency.settings import LatencySettings
from hrvit_bench.official import official_count
from hrvit_bench.published import check_published, load_published

# The 14 claim ids of the design notes (PAPER_CLAIMS.md), one row each at least.
CLAIM_IDS = {
    "ade-b1-vs-mitb1", "ade-b3-vs-cswins", "city-b3-vs-mitb4", "ade-vs-hrnetv2-ocr", "city-b1-vs-mitb1-cswint",
    "average", "abl-shared-kv", "abl-patch-embed", "abl-mixcfn", "abl-parallel-conv", "abl-nonlinearity",
    "abl-sparse-fusion", "abl-des", "t6-hrnet-vit",
}


def test_every_paper_claim_is_a_row():
    assert {c.id for c in load_claims()} == CLAIM_IDS


def test_claim_rows_are_complete():
    keys = [c.key for c in load_claims()]
    assert len(keys) == len(set(keys))  # one verdict per key
    for claim in load_claims():
        for subject, baseline in claim.pairs:
            assert models.is_model(subject) and models.is_model(baseline), claim.key
        assert claim.pairs_by in ("paper", "hrvit-bench"), claim.key
        if claim.kind == "change":
            assert claim.stated_pct is not None and claim.tolerance_pp is not None, claim.key
        elif claim.kind == "range":
            assert claim.low_pct < claim.high_pct, claim.key
        elif claim.kind == "growth":
            assert len(claim.pairs) == 2, claim.key
        elif claim.kind == "direction":
            assert claim.metric == LATENCY, claim.key
        else:
            assert claim.kind == "accuracy" and not claim.measurable
    for p in load_published():
        assert models.is_model(p.model) and p.input in models.model_info(p.model).paper_inputs


class FakeCounts(CountCache):
    """Counts given by hand: (params, MACs of GEMM ops, MACs of other ops) per model."""

    def __init__(self, table):
        super().__init__(store={})
        self.table = table

    def get(self, name, size):
        params, gemm, other = self.table[name]
        return MacCount(name, (1, 3, *size), "fake", params, params, 0, {"": {"conv": gemm, "layer_norm": other}}, {})


def claim(**fields) -> Claim:
    base = dict(id="x", metric="params", kind="change", pairs=(("a", "b"),), input=(512, 512), stated="-40%",
                stated_pct=-40.0, tolerance_pp=2.0, low_pct=None, high_pct=None, source="test", note="")
    return Claim(**{**base, **fields})


COUNTS = FakeCounts({"a": (60, 900, 100), "b": (100, 1000, 0), "c": (50, 450, 50), "d": (80, 1000, 600)})


def test_change_holds_within_tolerance_and_says_why():
    result = evaluate(claim(), None, COUNTS)  # 60 vs 100 params: -40%
    assert result.verdict == HOLDS and result.measured_pct == pytest.approx(-40.0)
    result = evaluate(claim(stated_pct=-50.0), None, COUNTS)
    assert result.verdict == FAILS and "smaller than stated" in result.why
    result = evaluate(claim(stated_pct=+10.0), None, COUNTS)
    assert result.verdict == FAILS and "opposite direction" in result.why


def test_flop_claims_depend_on_the_ops_scope_only():
    c = claim(metric="flops", stated_pct=0.0)
    by_convention = {conv.name: evaluate(c, conv, COUNTS).measured_pct for conv in ALL_CONVENTIONS}
    assert by_convention["macs-all-1e9"] == pytest.approx(0.0)  # (900 + 100) vs 1000
    assert by_convention["macs-gemm-1e9"] == pytest.approx(-10.0)  # 900 vs 1000
    for conv in ALL_CONVENTIONS:  # unit and giga cancel in a ratio
        assert by_convention[conv.name] == pytest.approx(by_convention[f"macs-{conv.ops}-1e9"])


def test_averages_over_pairs_and_ranges():
    c = claim(kind="range", pairs=(("a", "b"), ("c", "d")), low_pct=-40.0, high_pct=-30.0)
    result = evaluate(c, None, COUNTS)  # -40% and -37.5%
    assert result.measured_pct == pytest.approx(-38.75)
    assert result.verdict == HOLDS and "mean of 2 pairs" in result.why
    assert evaluate(claim(kind="range", low_pct=-1.0, high_pct=0.0), None, COUNTS).verdict == FAILS


def test_growth_compares_two_ratios():
    c = claim(kind="growth", pairs=(("d", "c"), ("b", "a")))  # d/c = 1.6 vs b/a = 1.67
    result = evaluate(c, None, COUNTS)
    assert result.verdict == FAILS and result.measured_pct == pytest.approx(60.0)


def test_accuracy_claims_are_never_passed():
    result = evaluate(claim(metric="miou", kind="accuracy"), None, COUNTS)
    assert result.verdict == UNMEASURABLE and result.measured_pct is None


# ---------------------------------------------------------------------------------------------------------------
# One headline per claim row.


def test_headline_is_one_verdict_when_conventions_agree_and_depends_when_they_do_not():
    agree = claim(metric="flops", stated_pct=0.0, tolerance_pp=20.0)  # 0% (all ops) and -10% (GEMM): both hold
    split = claim(id="y", metric="flops", stated_pct=0.0, tolerance_pp=5.0)  # 0% holds, -10% does not
    results = [evaluate(c, conv, COUNTS) for c in (agree, split) for conv in ALL_CONVENTIONS]
    first, second = headlines(results, [], [])
    assert len(first.results) == len(ALL_CONVENTIONS) == len(second.results)
    assert first.verdict == HOLDS and first.scope_detail() == []
    assert first.measured_pct == pytest.approx(0.0)  # fvcore's convention, all ops
    assert second.verdict == DEPENDS
    detail = {scope: (r.measured_pct, r.verdict) for scope, r in second.scope_detail()}
    assert detail == {"all ops": (pytest.approx(0.0), HOLDS), "GEMM only": (pytest.approx(-10.0), FAILS)}


@pytest.mark.slow
def test_the_summary_counts_each_claim_row_once():
    report = ClaimsReport.measure(counts=CountCache())
    rows = [c for c in load_claims() if c.metric != LATENCY]
    assert len(report.cost_headlines) == len(rows)  # not once per convention
    assert f"{len(rows)} claim rows" in report.summary()
    tally = sum(int(word) for word in report.summary().split(": ", 1)[1].replace(",", "").split()
                if word.isdigit())
    assert tally == len(rows)


def test_provenance_names_reconstructions_and_chosen_pairs():
    by_key = {c.key: c for c in load_claims()}
    official = provenance(by_key["ade-b1-vs-mitb1/params@512x512"])
    assert official.short == "official" and "official architectures" in official.describe()
    ablation = provenance(by_key["abl-shared-kv/params@224x224"])
    assert ablation.short == "reconstruction"
    assert [m for m, _ in ablation.reconstructions] == ["hrvit_b1_indep_key"]  # hrvit_b1 itself is official
    chosen = provenance(by_key["ade-vs-hrnetv2-ocr/params@512x512"])
    assert chosen.pairs_chosen and "our pairs" in chosen.short
    for c in load_claims():  # the registry says why each reconstruction has no official code
        assert all(why for _, why in provenance(c).reconstructions)


# ---------------------------------------------------------------------------------------------------------------
# Numbers from outside, checked with an independent counter.


def _gemm_macs(name: str, size) -> int:
    """torch's FlopCounterMode (matrix products only, 2 FLOPs per MAC), on meta tensors: independent of the
    counting engine under test."""
    model = zoo.build(name, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, 3, *size, device="meta"))
    return counter.get_total_flops() // 2


def test_published_hrnet_numbers_are_gemm_macs_over_2_30():
    # HRNet-W18's published 3.99 GFLOPs; its GEMM MACs from FlopCounterMode, divided by 2^30 and by 1e9.
    gemm = _gemm_macs("hrnetv2_w18", (224, 224))
    assert abs(gemm / 2**30 - 3.99) < 0.005 < abs(gemm / 1e9 - 3.99)
    (result,) = check_published(CountCache(), [p for p in load_published() if p.model == "hrnetv2_w18"])
    assert result.best_convention == "macs-gemm-2^30"
    assert result.giga_by_convention["macs-gemm-2^30"] == pytest.approx(gemm / 2**30)


def _nearest_convention(all_macs: int, gemm_macs: int, published: float) -> str:
    candidates = {f"{unit}-{ops}-{giga}": macs * factor / divisor
                  for unit, factor in (("macs", 1), ("flops", 2)) for ops, macs in (("all", all_macs), ("gemm", gemm_macs))
                  for giga, divisor in (("1e9", 1e9), ("2^30", 2**30))}
    return min(candidates, key=lambda name: abs(candidates[name] - published))


def test_the_stated_8_percent_comes_from_mixed_conventions():
    # Independently: all-ops MACs from fvcore on the official code, GEMM MACs from FlopCounterMode.
    hrvit, mit = _gemm_macs("hrvit_b1_seg_ade20k", (512, 512)), _gemm_macs("mit_b1_seg_ade20k", (512, 512))
    official = {m: official_count(m, (512, 512)).fvcore_macs for m in ("hrvit_b1_seg_ade20k", "mit_b1_seg_ade20k")}
    assert _nearest_convention(official["hrvit_b1_seg_ade20k"], hrvit, 14.6) == "macs-gemm-2^30"
    assert _nearest_convention(official["mit_b1_seg_ade20k"], mit, 15.9) == "macs-gemm-1e9"
    assert round(100 * (14.6 / 15.9 - 1), 1) == -8.2
    row = next(c for c in load_claims() if c.key == "ade-b1-vs-mitb1/flops@512x512")
    counts = CountCache()
    lookup = {(p.published.model, p.published.input): p for p in check_published(
        counts, [p for p in load_published() if p.model in ("hrvit_b1_seg_ade20k", "mit_b1_seg_ade20k")])}
    result = evaluate(row, Convention("macs", "gemm", "1e9"), counts, lookup)
    assert result.verdict == FAILS
    assert result.measured_pct == pytest.approx(100 * (hrvit / mit - 1))
    assert "published numbers give -8.2%" in result.why
    assert "14.6G matches macs-gemm-2^30, 15.9G matches macs-gemm-1e9" in result.why


def test_a_real_claim_from_official_counts():
    row = next(c for c in load_claims() if c.key == "ade-b1-vs-mitb1/params@512x512")
    result = evaluate(row, None, CountCache())
    hrvit, mit = (official_count(m).params for m in ("hrvit_b1_seg_ade20k", "mit_b1_seg_ade20k"))
    assert result.measured_pct == pytest.approx(100 * (hrvit / mit - 1))
    assert result.verdict == HOLDS


def test_convention_parse_round_trip():
    assert all(Convention.parse(c.name) == c for c in ALL_CONVENTIONS)


# ---------------------------------------------------------------------------------------------------------------
# Latency rows.


def _comparison(baseline_ms, subject_ms) -> Comparison:
    env = Environment.capture("cpu")
    sides = [Side("b", "none", list(baseline_ms), 1000), Side("a", "none", list(subject_ms), 900)]
    return Comparison((512, 512), 1, LatencySettings(iters=len(baseline_ms)), env, sides)


def test_latency_rows_sit_beside_every_cost_comparison():
    rows = latency_claims(load_claims())
    stated = {(r.id, r.kind) for r in rows if r.kind != "observed"}
    assert stated == {("ade-b1-vs-mitb1", "direction"), ("ade-vs-hrnetv2-ocr", "range")}
    expected = {(c.id, c.pairs, c.input) for c in load_claims()
                if c.metric in ("params", "flops") and c.kind in ("change", "range")}
    assert {(r.id, r.pairs, r.input) for r in rows} == expected  # one row each, no duplicates
    assert len(rows) == len(expected)


def test_latency_verdicts_from_intervals():
    faster = _comparison([100.0, 101.0, 99.0, 100.5] * 5, [80.0, 81.0, 79.0, 80.5] * 5)
    same = _comparison([100.0, 90.0, 110.0, 95.0, 105.0] * 4, [105.0, 95.0, 100.0, 110.0, 90.0] * 4)
    observed = claim(metric=LATENCY, kind="observed", stated="-")
    result = evaluate_latency(observed, [faster], flop_change_pct=-10.0)
    assert result.verdict == FASTER and result.measured_pct == pytest.approx(100 * (80.25 / 100.25 - 1))
    assert result.change.high < 1 and "FLOPs -10.0%" in result.why
    assert evaluate_latency(observed, [same], 0.0).verdict == INDISTINGUISHABLE
    slower = _comparison([80.0, 81.0, 79.0, 80.5] * 5, [100.0, 101.0, 99.0, 100.5] * 5)
    assert evaluate_latency(observed, [slower], 0.0).verdict == SLOWER
    direction = claim(metric=LATENCY, kind="direction", stated="faster")
    assert evaluate_latency(direction, [faster], 0.0).verdict == HOLDS
    assert evaluate_latency(direction, [slower], 0.0).verdict == FAILS
    assert evaluate_latency(direction, [same], 0.0).verdict == INDISTINGUISHABLE
    marked = claim(metric=LATENCY, kind="range", low_pct=-100.0, high_pct=-25.0, stated="markedly")
    assert evaluate_latency(marked, [faster], 0.0).verdict == FAILS  # -20%, its whole interval above -25%
    two = evaluate_latency(observed, [faster, slower], 0.0)  # mean of 0.8 and 1.25
    assert two.change.value == pytest.approx((80.25 / 100.25 + 100.25 / 80.25) / 2)


def test_latency_headlines_follow_their_claim():
    cost = claim(id="z")
    results = [evaluate(cost, None, COUNTS)]
    row = claim(id="z", metric=LATENCY, kind="observed", stated="-")
    timed = evaluate_latency(row, [_comparison([2.0] * 10, [1.0] * 10)], -40.0)
    [first, second] = headlines(results, [timed], [row])
    assert first.claim.metric == "params" and second.latency is timed and second.verdict == FASTER


# ---------------------------------------------------------------------------------------------------------------
# The table a terminal shows.


@pytest.mark.slow
def test_compact_table_fits_80_columns_and_keeps_ids_whole():
    report = ClaimsReport.measure(counts=CountCache())
    console = Console(width=80, record=True, file=io.StringIO())
    for table in report.tables():
        console.print(table)
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    for claim_id in CLAIM_IDS:
        assert any(line.split() and line.split()[0] == claim_id for line in lines), claim_id
    for word in ("official", "reconstruction", "our pairs"):
        assert any(word in line for line in lines)
    report.wide = True
    assert len(report.tables()) == 3  # claims, published numbers, Table 6


def test_an_accuracy_row_reads_needs_training_in_the_compact_and_the_wide_table():
    accuracy = claim(metric="miou", kind="accuracy", pairs=(("hrvit_b1_seg_ade20k", "mit_b1_seg_ade20k"),))
    report = ClaimsReport([], headlines([evaluate(accuracy, None, COUNTS)], [], []))
    for wide in (False, True):
        report.wide = wide
        console = Console(width=200, record=True, file=io.StringIO())
        console.print(report.tables()[0])
        text = console.export_text()
        assert UNMEASURABLE == "needs training" and UNMEASURABLE in text, wide
        assert "needs data" not in text and "not measurable" not in text, wide


@pytest.mark.slow
def test_compact_and_wide_tables_give_a_verdict_the_same_words():
    """One phrase per verdict on every surface: the compact table, --wide, the CSV and the markdown report."""
    report = ClaimsReport.measure(counts=CountCache())
    accuracy = [h for h in report.headlines if h.verdict == UNMEASURABLE]
    assert len(accuracy) == 12 and UNMEASURABLE == "needs training"
    texts = {}
    for wide in (False, True):
        report.wide = wide
        console = Console(width=200, record=True, file=io.StringIO())
        for table in report.tables():
            console.print(table)
        texts[wide] = console.export_text()
    texts["md"] = report.to_markdown()
    for where, text in texts.items():
        assert text.count(UNMEASURABLE) >= len(accuracy), where
        assert "needs data" not in text and "not measurable" not in text, where
    assert {r["verdict"] for r in report.csv_rows() if r["key"] in {h.claim.key for h in accuracy}} == {UNMEASURABLE}


@pytest.mark.slow
def test_headline_rows_in_csv_and_markdown():
    report = ClaimsReport.measure(counts=CountCache())
    rows = report.csv_rows()
    assert [r["key"] for r in rows] == [h.claim.key for h in report.headlines]
    assert {"verdict", "basis", "why", "pairs"} <= set(rows[0])
    markdown = report.to_markdown()
    assert markdown.index("| claim") < markdown.index("## What each verdict rests on")
    assert isinstance(report.headlines[0], Headline)


@pytest.mark.slow
def test_claims_latency_times_each_pair_interleaved_and_feeds_the_plot(toy_model, monkeypatch):
    from hrvit_bench import claims_report, plots

    pair = ((toy_model, toy_model),)
    toy = [claim(id="toy", pairs=pair, input=(32, 48), stated="0%", stated_pct=0.0),
           claim(id="toy", metric=LATENCY, kind="direction", pairs=pair, input=(32, 48), stated="faster")]
    monkeypatch.setattr(claims_report, "load_claims", lambda: toy)
    report = ClaimsReport.measure(counts=CountCache(store={}), latency=LatencySettings(warmup=1, iters=4, threads=1))
    [cost, timed] = report.headlines
    assert cost.claim.metric == "params" and timed.claim.metric == LATENCY
    [comparison] = timed.latency.comparisons
    assert comparison.rounds == 4 and [s.model for s in comparison.sides] == [toy_model, toy_model]
    assert timed.verdict in (HOLDS, FAILS, INDISTINGUISHABLE) and timed.latency.flop_change_pct == 0.0
    assert "latency on" in report.summary()
    row = next(r for r in report.csv_rows() if r["metric"] == LATENCY)
    assert row["ratio_low"] <= row["ratio"] <= row["ratio_high"]

    class WithLatency:
        latency = [{"model": toy_model, "input": "32x48", "device": "cpu", "threads": 1,
                    "median_ms": comparison.sides[0].median.value, "gmacs": comparison.sides[0].flops / 2e9}]

    figures = plots.latency_vs_flops(WithLatency())
    assert set(figures) == {"latency_vs_flops.png", "latency_vs_flops.svg"}
    assert figures["latency_vs_flops.png"].startswith(b"\x89PNG")


def test_the_latency_table_fits_80_columns():
    rows = [claim(id=i, metric=LATENCY, kind=k, stated="-", low_pct=-100.0, high_pct=-25.0)
            for i, k in (("abl-sparse-fusion", "observed"), ("ade-vs-hrnetv2-ocr", "range"))]
    timed = [evaluate_latency(rows[0], [_comparison([100.0, 90.0, 110.0, 95.0, 105.0] * 2,
                                                    [105.0, 95.0, 100.0, 110.0, 90.0] * 2)], -12.3),
             evaluate_latency(rows[1], [_comparison([100.0, 101.0, 99.0] * 4, [130.0, 131.0, 129.0] * 4)], -57.6)]
    report = ClaimsReport([], headlines([], timed, rows))
    console = Console(width=80, record=True, file=io.StringIO())
    for table in report.tables():
        console.print(table)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "in the noise" in text and "slower" in text and "does not hold" in text and "…" not in text
