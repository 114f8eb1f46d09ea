"""MiT-B0..B5 and the SegFormer head against counts and key layouts of the official NVlabs/SegFormer code.

Reference numbers were measured with fvcore on the official code (mmseg/models/backbones/mix_transformer.py,
decode_heads/segformer_head.py at 65fa8cf, run outside this repository with shims for timm/mmcv/mmseg).
"""

import pytest
import torch

from hrvit_bench_models import create_model, list_models, model_info
from hrvit_bench_models.mit import Block, MIT_CONFIGS
from model_checks import assert_round_trip, fvcore_analysis, fvcore_flops, key_layout, meta_build, n_params

OFFICIAL_BACKBONE_PARAMS = {
    "b0": 3_319_392, "b1": 13_151_424, "b2": 24_196_288, "b3": 44_072_128, "b4": 60_842_688, "b5": 81_443_008,
}
# SegFormer ADE20K (150 classes), the unused conv_seg included.
OFFICIAL_ADE_PARAMS = {
    "b0": 3_772_044, "b1": 13_735_148, "b2": 27_481_324, "b3": 47_357_164, "b4": 64_127_724, "b5": 84_728_044,
}
OFFICIAL_CITYSCAPES_PARAMS = {
    "b0": 3_721_478, "b1": 13_684_582, "b2": 27_363_686, "b3": 47_239_526, "b4": 64_010_086, "b5": 84_610_406,
}
# sha256 (first 16 hex) of the sorted "key:shape" lines of the official state dict, and its number of entries.
OFFICIAL_KEY_LAYOUTS = {
    "mit_b0_seg_ade20k": ("1ae94de76598f407", 194),
    "mit_b2_seg_cityscapes": ("756ea1893eb61625", 350),
    "mit_b5_backbone": ("82a23991f4eaea58", 1052),
}


def test_registered_names():
    expected = {f"mit_b{i}{suffix}" for i in range(6)
                for suffix in ("", "_backbone", "_seg_ade20k", "_seg_cityscapes")} | {"mit_b5_seg_ade20k_640"}
    assert set(list_models("mit*")) == expected
    assert model_info("mit_b5_seg_ade20k_640").input_size == (640, 640)
    assert model_info("mit_b2_seg_cityscapes").num_classes == 19
    assert "has no classifier" in model_info("mit_b0").notes


@pytest.mark.parametrize("variant", sorted(MIT_CONFIGS))
def test_params_match_official(variant):
    assert n_params(meta_build(f"mit_{variant}_backbone")) == OFFICIAL_BACKBONE_PARAMS[variant]
    assert n_params(meta_build(f"mit_{variant}_seg_ade20k")) == OFFICIAL_ADE_PARAMS[variant]
    assert n_params(meta_build(f"mit_{variant}_seg_cityscapes")) == OFFICIAL_CITYSCAPES_PARAMS[variant]
    # Our ImageNet head: Linear(last width, 1000) on top of the backbone.
    width = MIT_CONFIGS[variant]["embed_dims"][-1]
    assert n_params(meta_build(f"mit_{variant}")) == OFFICIAL_BACKBONE_PARAMS[variant] + width * 1000 + 1000


def test_b5_640_is_the_ade_model():
    assert n_params(meta_build("mit_b5_seg_ade20k_640")) == OFFICIAL_ADE_PARAMS["b5"]


@pytest.mark.parametrize("name", sorted(OFFICIAL_KEY_LAYOUTS))
def test_state_dict_layout_matches_official(name):
    assert key_layout(meta_build(name)) == OFFICIAL_KEY_LAYOUTS[name]


def test_block_interface_for_other_families():
    block = Block(64, 1, mlp_ratio=4.0, qkv_bias=True, sr_ratio=8, drop_path=0.1)
    assert list(dict(block.named_parameters())) == [
        "norm1.weight", "norm1.bias", "attn.q.weight", "attn.q.bias", "attn.kv.weight", "attn.kv.bias",
        "attn.proj.weight", "attn.proj.bias", "attn.sr.weight", "attn.sr.bias", "attn.norm.weight",
        "attn.norm.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
        "mlp.dwconv.dwconv.weight", "mlp.dwconv.dwconv.bias", "mlp.fc2.weight", "mlp.fc2.bias",
    ]
    assert block.norm1.eps == block.norm2.eps == 1e-6
    x = torch.randn(2, 12 * 17, 64)
    assert block.eval()(x, 12, 17).shape == x.shape
    assert not hasattr(Block(64, 1).attn, "sr")


def hand_count_backbone(variant, H, W):
    """fvcore's rules by hand: conv/linear/matmul = multiply-adds, LayerNorm = 5 per element."""
    cfg = MIT_CONFIGS[variant]
    total, c_in = 0, 3
    for i, (C, depth, r) in enumerate(zip(cfg["embed_dims"], cfg["depths"], (8, 4, 2, 1))):
        k, s = (7, 4) if i == 0 else (3, 2)
        H, W = (H + 2 * (k // 2) - k) // s + 1, (W + 2 * (k // 2) - k) // s + 1
        N = H * W
        total += N * C * c_in * k * k + 5 * N * C  # patch embedding conv + norm
        n_kv = (H // r) * (W // r) if r > 1 else N
        block = 5 * N * C + N * C * C  # norm1, q
        if r > 1:
            block += n_kv * C * C * r * r + 5 * n_kv * C  # sr conv, its norm
        block += n_kv * C * 2 * C + 2 * N * n_kv * C + N * C * C  # kv, q @ k^T, attn @ v, proj
        block += 5 * N * C + N * C * 4 * C + N * 4 * C * 9 + N * 4 * C * C  # norm2, fc1, dwconv, fc2
        total += depth * block + 5 * N * C  # blocks, stage norm
        c_in = C
    return total


@pytest.mark.parametrize("variant,size", [("b0", (64, 96)), ("b2", (97, 131))])
def test_backbone_flops_match_hand_count(variant, size):
    total = fvcore_flops(create_model(f"mit_{variant}_backbone"), size)
    assert total == hand_count_backbone(variant, *size)


def test_flops_match_official_small_inputs():
    # Official code, fvcore, at odd and small inputs.
    assert fvcore_flops(create_model("mit_b0_seg_cityscapes"), (97, 131)) == 373_955_396
    assert fvcore_flops(create_model("mit_b0_seg_ade20k"), (97, 131)) == 408_281_064
    assert fvcore_flops(create_model("mit_b0_backbone"), (64, 96)) == 52_007_424


def test_segformer_b1_ade512_flops_match_official():
    """The published-setting count; it includes EncoderDecoder's final resize of the logits to 512x512
    (157,286,400 of fvcore's upsample_bilinear2d FLOPs; without it the official code counts 15,999,041,536)."""
    analysis = fvcore_analysis(create_model("mit_b1_seg_ade20k"), (512, 512))
    total = analysis.total()
    assert total == 16_156_327_936
    assert "decode_head.conv_seg" in analysis.uncalled_modules()


def test_seg_logits_at_input_size_and_conv_seg_unused():
    model = create_model("mit_b0_seg_ade20k").eval()
    calls = []
    model.decode_head.conv_seg.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 97, 131))
    assert out.shape == (1, 150, 97, 131)
    assert calls == []
    assert model.decode_head.conv_seg.in_channels == 128


def test_backbone_odd_size_maps():
    with torch.no_grad():
        maps = create_model("mit_b1_backbone").eval()(torch.randn(1, 3, 97, 131))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 25, 33), (1, 128, 13, 17), (1, 320, 7, 9), (1, 512, 4, 5)]


@pytest.mark.parametrize("size", [(64, 64), (97, 131)])
def test_classifier_forward(size):
    with torch.no_grad():
        assert create_model("mit_b0").eval()(torch.randn(1, 3, *size)).shape == (1, 1000)


def test_cityscapes_forward_shape():
    with torch.no_grad():
        assert create_model("mit_b0_seg_cityscapes").eval()(torch.randn(1, 3, 64, 96)).shape == (1, 19, 64, 96)


@pytest.mark.parametrize("name", ["mit_b0_seg_ade20k", "mit_b0"])
def test_state_dict_round_trip(name):
    assert_round_trip(name)