"""The claims table and its verdicts: data complete, logic right, numbers from official counts."""
import re
from pathlib import Path

import pytest

import hrvit_bench_models as models
from hrvit_bench import claims as claims_module
from hrvit_bench.claims import FAILS, HOLDS, UNMEASURABLE, Claim, evaluate, load_claims, load_published
from hrvit_bench.count_cache import CountCache
from hrvit_bench.conventions import ALL_CONVENTIONS, Convention
from hrvit_bench.counting import MacCount

PAPER_CLAIMS = Path(__file__).resolve().parents[2] / "shared" / "design" / "PAPER_CLAIMS.md"
CLAIM_IDS = {
    "ade-b1-vs-mitb1", "ade-b3-vs-cswins", "city-b3-vs-mitb4", "ade-vs-hrnetv2-ocr", "city-b1-vs-mitb1-cswint",
    "average", "abl-shared-kv", "abl-patch-embed", "abl-mixcfn", "abl-parallel-conv", "abl-nonlinearity",
    "abl-sparse-fusion", "abl-des", "t6-hrnet-vit",
}


def test_every_paper_claim_is_a_row():
    assert {c.id for c in load_claims()} == CLAIM_IDS
    if PAPER_CLAIMS.is_file():  # the design notes sit beside the checkout in this project's workplace
        ids = set(re.findall(r"^\| ([a-z0-9-]+) \|", PAPER_CLAIMS.read_text(), flags=re.M)) - {"id"}
        assert ids == CLAIM_IDS


def test_claim_rows_are_complete():
    for claim in load_claims():
        for subject, baseline in claim.pairs:
            assert models.is_model(subject) and models.is_model(baseline), claim.key
        if claim.kind == "change":
            assert claim.stated_pct is not None and claim.tolerance_pp is not None, claim.key
        elif claim.kind == "range":
            assert claim.low_pct < claim.high_pct, claim.key
        elif claim.kind == "growth":
            assert len(claim.pairs) == 2, claim.key
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


def test_a_real_claim_from_official_counts():
    # Official parameter counts (fvcore on the official code): HRViT-b1 8,183,118 and SegFormer-B1 13,735,148.
    row = next(c for c in load_claims() if c.key == "ade-b1-vs-mitb1/params@512x512")
    result = evaluate(row, None, CountCache())
    assert result.measured_pct == pytest.approx(100 * (8_183_118 / 13_735_148 - 1))
    assert result.verdict == HOLDS


def test_published_hrnet_numbers_match_gemm_macs_over_2_30():
    w18 = [p for p in load_published() if p.model == "hrnetv2_w18"]
    (result,) = claims_module.check_published(CountCache(), w18)
    assert result.best_convention == "macs-gemm-2^30"
    assert result.giga_by_convention["macs-gemm-2^30"] == pytest.approx(3.99, abs=0.005)


def test_convention_parse_round_trip():
    assert all(Convention.parse(c.name) == c for c in ALL_CONVENTIONS)


def test_the_stated_8_percent_comes_from_mixed_conventions():
    # HRViT's published 14.6G is GEMM MACs / 2^30; SegFormer's 15.9G is GEMM MACs / 1e9 (official counts).
    row = next(c for c in load_claims() if c.key == "ade-b1-vs-mitb1/flops@512x512")
    counts = CountCache()
    lookup = {(p.published.model, p.published.input): p for p in claims_module.check_published(
        counts, [p for p in load_published() if p.model in ("hrvit_b1_seg_ade20k", "mit_b1_seg_ade20k")])}
    result = evaluate(row, Convention("macs", "gemm", "1e9"), counts, lookup)
    assert result.verdict == FAILS
    assert "published numbers give -8.2%" in result.why
    assert "14.6G matches macs-gemm-2^30, 15.9G matches macs-gemm-1e9" in result.why
