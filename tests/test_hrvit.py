"""HRViT against numbers measured on the official code (facebookresearch/HRViT@6a63b5b, counted with fvcore).

The official modules were run outside this repository; only derived facts live here: a digest of each official
state dict's sorted ``key:shape`` lines. Parameter counts and fvcore totals are in the official table
(hrvit_bench/data/official_counts.csv), every row of which tests/test_official.py checks.
"""
import math

import pytest
import torch

from hrvit_bench.official import official_count
from hrvit_bench_models import create_model, list_models, model_info
from hrvit_bench_models.hrvit import ABLATIONS, CrossShapedAttention
from model_checks import assert_round_trip, fvcore_flops, key_layout, meta_build, meta_macs, n_params

# sha256 (first 16 hex) of "\n".join(f"{key}:{tuple(shape)}") over the official state dict, keys sorted.
OFFICIAL_STATE_DIGESTS = {
    "hrvit_b1": "ed7aa8121fbaa4d5", "hrvit_b2": "887c6710067d2242", "hrvit_b3": "84cd5d87290e1314",
    "hrvit_b1_backbone": "650c6e2486926b24", "hrvit_b2_backbone": "1e2f7387044bf9af",
    "hrvit_b3_backbone": "6bf06c3e0b4c61aa",
    "hrvit_b1_seg_ade20k": "c49798f2045d9cb3", "hrvit_b2_seg_ade20k": "cbe34aff2e7efeda",
    "hrvit_b3_seg_ade20k": "a186388a9cb262c8",
}
# Paper (section 3.3) direction of each ablation's cost, relative to HRViT-b1.
ABLATION_DIRECTION = {
    "indep_key": +1, "conv_patch_embed": +1, "no_mixcfn": -1, "no_parallel_conv": -1,
    "no_extra_nonlin": -1, "sparse_fusion": -1, "no_des": -1,
}


def n_params_of(name: str) -> int:
    return n_params(meta_build(name))


def wake_attention(model: torch.nn.Module) -> torch.nn.Module:
    """The attention BNs start at zero, which would hide the attention; give them unit scale."""
    for m in model.modules():
        if isinstance(m, CrossShapedAttention) and m.attn_bn is not None:
            torch.nn.init.ones_(m.attn_bn.weight)
    return model


def test_registered_names_and_metadata():
    expected = {f"hrvit_{v}{t}" for v in ("b1", "b2", "b3")
                for t in ("", "_backbone", "_seg_ade20k", "_seg_cityscapes")}
    expected |= {"hrvit_b3_w1239_seg_cityscapes"}
    expected |= {f"hrvit_b1_{s}{t}" for s in ABLATIONS for t in ("", "_seg_cityscapes")}
    assert set(list_models("hrvit*")) == expected
    assert set(ABLATIONS) == set(ABLATION_DIRECTION)
    info = model_info("hrvit_b2_seg_cityscapes")
    assert (info.task, info.dataset, info.num_classes) == ("segmentation", "cityscapes", 19)
    assert info.input_size == (1024, 1024)
    assert info.paper_inputs == ((1024, 1024), (512, 512))
    assert "240" in info.notes
    ade = model_info("hrvit_b3_seg_ade20k")
    assert (ade.dataset, ade.num_classes, ade.input_size) == ("ade20k", 150, (512, 512))
    cls = model_info("hrvit_b1")
    assert (cls.task, cls.dataset, cls.num_classes, cls.input_size, cls.ablation) == (
        "classification", "imagenet", 1000, (224, 224), None)
    assert model_info("hrvit_b1_backbone").dataset is None
    for switch in ABLATIONS:
        assert model_info(f"hrvit_b1_{switch}").ablation == switch
        assert model_info(f"hrvit_b1_{switch}_seg_cityscapes").ablation == switch


@pytest.mark.parametrize("name", sorted(OFFICIAL_STATE_DIGESTS))
def test_state_dict_layout_matches_official(name):
    assert key_layout(meta_build(name))[0] == OFFICIAL_STATE_DIGESTS[name]


def test_b3_w1239_differs_only_in_windows():
    with torch.device("meta"):
        model = create_model("hrvit_b3_w1239_seg_cityscapes")
    windows = {m.window_size for m in model.modules() if isinstance(m, CrossShapedAttention)}
    assert windows == {1, 2, 3, 9}
    assert n_params_of("hrvit_b3_w1239_seg_cityscapes") == official_count("hrvit_b3_seg_cityscapes").params


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hrvit_b1", "hrvit_b3"])
def test_fvcore_flops_match_official(name):
    """fvcore itself on our explicit-matmul build (plain fvcore counts SDPA as 0) gives the official total."""
    official = official_count(name, (224, 224))
    assert fvcore_flops(create_model(name, use_sdpa=False), official.input) == official.fvcore_macs


@pytest.mark.parametrize("switch", sorted(ABLATIONS))
def test_ablation_params_move_as_the_paper_says(switch):
    direction = ABLATION_DIRECTION[switch]
    for suffix in ("", "_seg_cityscapes"):
        base, ablated = n_params_of(f"hrvit_b1{suffix}"), n_params_of(f"hrvit_b1_{switch}{suffix}")
        assert math.copysign(1, ablated - base) == direction, (switch, suffix, base, ablated)
    if switch == "conv_patch_embed":  # "+22% params" (measured on the Cityscapes segmenter: +21.8%)
        base = official_count("hrvit_b1_seg_cityscapes").params
        assert 0.20 < n_params_of("hrvit_b1_conv_patch_embed_seg_cityscapes") / base - 1 < 0.24


@pytest.mark.slow
def test_ablation_flops_move_as_the_paper_says():
    size = (96, 96)  # the two 7-wide branches pad their stripes (6 and 3 px)
    base = meta_macs("hrvit_b1_backbone", size)  # fvcore's rules on shapes: tests/test_engines.py
    assert base == official_count("hrvit_b1_backbone", size).fvcore_macs
    for switch, direction in ABLATION_DIRECTION.items():
        flops = meta_macs("hrvit_b1_backbone", size, **ABLATIONS[switch])
        assert math.copysign(1, flops - base) == direction, (switch, base, flops)
        if switch == "sparse_fusion":  # "saves < 1%"
            assert base - flops < 0.01 * base


@pytest.mark.slow
def test_classifier_forward_224():
    model = create_model("hrvit_b1").eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


@pytest.mark.slow
def test_backbone_forward_512():
    model = create_model("hrvit_b1_backbone").eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 512, 512))
    assert [tuple(f.shape) for f in feats] == [(1, 32, 128, 128), (1, 64, 64, 64), (1, 128, 32, 32), (1, 256, 16, 16)]


@pytest.mark.slow
def test_segmenter_forward_1024_on_meta():
    with torch.device("meta"):
        logits = create_model("hrvit_b1_seg_cityscapes").eval()(torch.empty(1, 3, 1024, 1024))
    assert logits.shape == (1, 19, 1024, 1024)


@pytest.mark.slow
def test_odd_size_forward_sdpa_equals_explicit():
    """500x375 pads every stripe width and is no multiple of 32; SDPA and explicit matmuls must agree."""
    torch.manual_seed(0)
    fast = wake_attention(create_model("hrvit_b1_backbone")).eval()
    explicit = create_model("hrvit_b1_backbone", use_sdpa=False).eval()
    explicit.load_state_dict(fast.state_dict(), strict=True)
    x = torch.randn(1, 3, 500, 375)
    with torch.no_grad():
        out_fast, out_explicit = fast(x), explicit(x)
    assert [tuple(f.shape[2:]) for f in out_fast] == [(125, 94), (63, 47), (32, 24), (16, 12)]
    for a, b in zip(out_fast, out_explicit):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_padded_stripe_equals_full_attention(use_sdpa):
    """A 5x5 map with stripe width 7 is one padded stripe per half: the mask must make it full attention."""
    torch.manual_seed(0)
    attn = CrossShapedAttention(dim=64, dim_head=16, window_size=7, use_sdpa=use_sdpa,
                                parallel_conv=False, extra_nonlin=False).eval()
    x = torch.randn(2, 5, 5, 64)
    with torch.no_grad():
        q, v = attn.to_qkv(x).flatten(1, 2).chunk(2, dim=-1)  # (B, 25, 64); keys are the values

        def full(q, v):  # plain multi-head attention over all 25 tokens, 16-wide heads
            q, v = (t.unflatten(-1, (-1, 16)).transpose(1, 2) for t in (q, v))
            w = (q @ v.transpose(-2, -1) * 16 ** -0.5).softmax(-1)
            return (w @ v).transpose(1, 2).flatten(2)

        # the column half visits tokens column by column; full attention is order-free, so both halves agree
        ref = torch.cat([full(q[..., :32], v[..., :32]), full(q[..., 32:], v[..., 32:])], dim=-1)
        ref = attn.to_out(ref).unflatten(1, (5, 5))
        torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hrvit_b1", "hrvit_b1_sparse_fusion", "hrvit_b1_indep_key_seg_cityscapes"])
def test_state_dict_round_trip(name):
    assert_round_trip(name, (64, 96), prepare=wake_attention)


@pytest.mark.slow
def test_training_step_backpropagates():
    """The forward sums in place; autograd must still see a valid graph (drop path and every switch off too)."""
    for overrides in ({"drop_path_rate": 0.1}, {**{k: v for o in ABLATIONS.values() for k, v in o.items()}}):
        model = create_model("hrvit_b1_backbone", **overrides).train()  # the in-place sums are all here
        sum(f.square().mean() for f in model(torch.randn(2, 3, 64, 64))).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
