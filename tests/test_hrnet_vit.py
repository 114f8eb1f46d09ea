"""Naive HRNet-ViT (HRNet-MiT): no official code exists, so its pieces are held to hand arithmetic and its
scaling to HRViT's published numbers."""
import pytest
import torch

import hrvit_bench_models as models
from hrvit_bench_models.hrnet_vit import MiTBranch
from model_checks import assert_round_trip, meta_build, meta_macs, n_params

# HRViT README, ADE20K 512x512 with the SegFormer head: params (M) per variant
HRVIT_ADE_PARAMS = {"b1": 8.2, "b2": 20.8, "b3": 28.7}


def mit_blockn_params(c, sr, mlp_ratio=4):
    """One MiT block from its formula: two LayerNorms, q/kv/proj Linears, the spatial-reduction conv + its
    LayerNorm when sr > 1, and the Mix-FFN (fc1, depthwise 3x3, fc2)."""
    hidden = mlp_ratio * c
    attn = (c * c + c) + (2 * c * c + 2 * c) + (c * c + c)
    if sr > 1:
        attn += c * c * sr * sr + c + 2 * c
    ffn = (c * hidden + hidden) + (9 * hidden + hidden) + (hidden * c + c)
    return 2 * c + attn + 2 * c + ffn


def test_registered_names():
    expected = {f"hrnet_mit_{v}_{t}" for v in ("b1", "b2", "b3")
                for t in ("backbone", "seg_ade20k", "seg_cityscapes")}
    assert set(models.list_models(family="hrnet_vit")) == expected
    for name in expected:
        assert "mlp ratio 4" in models.model_info(name).notes


def test_branch_stack_matches_hand_arithmetic():
    # b1, stage 3, branch 2 (1/16): 128 channels, 6 blocks, sr 2, then the stack's LayerNorm
    stage3 = meta_build("hrnet_mit_b1_backbone").stage3
    branch = stage3[0].branches[2]
    assert isinstance(branch, MiTBranch) and len(branch.blocks) == 6
    assert n_params(branch) == 6 * mit_blockn_params(128, sr=2) + 2 * 128
    # the 1/4 branch: 32 channels, one block, sr 8
    assert n_params(stage3[0].branches[0]) == mit_blockn_params(32, sr=8) + 2 * 32


def test_fusion_layers_match_hand_arithmetic():
    fuse = meta_build("hrnet_mit_b1_backbone").stage4[0].fuse_layers
    conv_bn = lambda k, cin, cout: k * k * cin * cout + 2 * cout  # noqa: E731  (no conv bias; BN weight + bias)
    # 1/4 (32 ch) -> 1/32 (256 ch): two stride-2 3x3 convs keeping 32 channels, a third one to 256
    assert n_params(fuse[3][0]) == 2 * conv_bn(3, 32, 32) + conv_bn(3, 32, 256)
    # 1/32 -> 1/4: 1x1 conv + BN, then a parameter-free upsampling
    assert n_params(fuse[0][3]) == conv_bn(1, 256, 32)
    assert fuse[2][2] is None


def test_heads_follow_hrvit():
    model = meta_build("hrnet_mit_b3_seg_ade20k")
    head = model.decode_head
    assert head.in_channels == [64, 128, 256, 512] and head.channels == 768
    # no BN/ReLU on the per-scale projections (HRViT's configs), fused by a bias-free 1x1 conv + BN
    expected = sum(c * 768 + 768 for c in head.in_channels) + 4 * 768 * 768 + 2 * 768 + 768 * 150 + 150
    assert n_params(head) == expected


@pytest.mark.parametrize("variant", ["b1", "b2", "b3"])
def test_heads_per_branch(variant):
    stage4 = meta_build(f"hrnet_mit_{variant}_backbone").stage4[0]
    heads = [branch.blocks[0].attn.num_heads for branch in stage4.branches]
    sr = [branch.blocks[0].attn.sr_ratio for branch in stage4.branches]
    assert heads == {"b1": [1, 2, 4, 8], "b2": [2, 4, 10, 16], "b3": [2, 4, 8, 16]}[variant]
    assert sr == [8, 4, 2, 1]


@pytest.mark.slow
@pytest.mark.parametrize("size", [(64, 64), (97, 131)])
def test_backbone_and_seg_forward(size):
    torch.manual_seed(0)
    model = models.create_model("hrnet_mit_b1_seg_ade20k").eval()
    img = torch.randn(1, 3, *size)
    with torch.no_grad():
        maps = model.backbone(img)
        logits = model(img)
    assert [m.shape[1] for m in maps] == [32, 64, 128, 256]
    h, w = size
    for i, m in enumerate(maps):  # stride-2 3x3 convs with padding 1 round up: two in the stem, one per branch
        for _ in range(2 if i == 0 else 1):
            h, w = -(-h // 2), -(-w // 2)
        assert m.shape[2:] == (h, w)
    assert logits.shape == (1, 150, *size)
    assert torch.isfinite(logits).all()


@pytest.mark.slow
def test_cityscapes_model():
    model = models.create_model("hrnet_mit_b1_seg_cityscapes").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 19, 64, 96)
    assert models.model_info("hrnet_mit_b1_seg_cityscapes").input_size == (1024, 1024)


@pytest.mark.slow
def test_state_dict_round_trip():
    assert_round_trip("hrnet_mit_b1_seg_cityscapes")


def test_params_grow_faster_than_hrvit():
    ours = {v: n_params(meta_build(f"hrnet_mit_{v}_seg_ade20k")) / 1e6 for v in ("b1", "b2", "b3")}
    assert ours["b1"] < ours["b2"] < ours["b3"]
    # every variant costs more than HRViT's, and the gap widens with size
    gaps = [ours[v] / HRVIT_ADE_PARAMS[v] for v in ("b1", "b2", "b3")]
    assert all(g > 1 for g in gaps)
    assert ours["b3"] / ours["b1"] > HRVIT_ADE_PARAMS["b3"] / HRVIT_ADE_PARAMS["b1"]


@pytest.mark.slow
def test_backbone_flops_grow_faster_than_hrvit():
    size = (128, 128)
    ours = meta_macs("hrnet_mit_b3_backbone", size) / meta_macs("hrnet_mit_b1_backbone", size)
    hrvit = meta_macs("hrvit_b3_backbone", size) / meta_macs("hrvit_b1_backbone", size)
    assert ours > 1.2 * hrvit
