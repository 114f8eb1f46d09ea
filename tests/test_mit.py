"""MiT-B0..B5 and the SegFormer head against counts and key layouts of the official NVlabs/SegFormer code.

Reference numbers were measured with fvcore on the official code (mmseg/models/backbones/mix_transformer.py,
decode_heads/segformer_head.py at 65fa8cf, run outside this repository with shims for timm/mmcv/mmseg).
Plain fvcore counts ``scaled_dot_product_attention`` as 0, so it counts builds with ``use_sdpa=False`` (the
official explicit matmuls); the project's meta engine counts the default SDPA builds.
"""

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis

from hrvit_bench.official import official_count
from hrvit_bench_models import create_model, list_models, model_info
from hrvit_bench_models.heads import ConvModule, SegformerHead
from hrvit_bench_models.mit import Block, EfficientSelfAttention, MIT_CONFIGS, SegFormerHead
from model_checks import (assert_round_trip, fvcore_analysis, fvcore_flops, key_layout, meta_build, meta_macs,
                          n_params, perturb_batch_norm)

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
    assert {model_info(name).attention for name in expected | set(list_models("hrnet_mit*"))} == {"sdpa"}
    assert model_info("mit_b5_seg_ade20k_640").input_size == (640, 640)
    assert model_info("mit_b2_seg_cityscapes").num_classes == 19
    assert "has no classifier" in model_info("mit_b0").notes


@pytest.mark.parametrize("variant", sorted(MIT_CONFIGS))
def test_our_classifier_is_the_official_backbone_plus_a_linear_head(variant):
    # The official parameter counts of every backbone and segmenter are rows of the official table
    # (tests/test_official.py holds them); the classifier head is ours: Linear(last width, 1000).
    width = MIT_CONFIGS[variant]["embed_dims"][-1]
    backbone = official_count(f"mit_{variant}_backbone").params
    assert n_params(meta_build(f"mit_{variant}")) == backbone + width * 1000 + 1000


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


@pytest.mark.slow
@pytest.mark.parametrize("variant,size", [("b0", (64, 96)), ("b2", (97, 131))])
def test_backbone_flops_match_hand_count(variant, size):
    expected = hand_count_backbone(variant, *size)
    assert fvcore_flops(create_model(f"mit_{variant}_backbone", use_sdpa=False), size) == expected
    assert meta_macs(f"mit_{variant}_backbone", size) == expected


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("mit_b0_seg_cityscapes", (97, 131)), ("mit_b0_seg_ade20k", (97, 131)),
                                       ("mit_b0_backbone", (64, 96))])
def test_flops_match_official_small_inputs(name, size):
    official = official_count(name, size).fvcore_macs  # fvcore on the official code at odd and small inputs
    assert fvcore_flops(create_model(name, use_sdpa=False), size) == official
    assert meta_macs(name, size) == official


@pytest.mark.slow
def test_segformer_b1_ade512_flops_match_official():
    """The published-setting count; it includes EncoderDecoder's final resize of the logits to 512x512
    (157,286,400 of fvcore's upsample_bilinear2d FLOPs; without it the official code counts 15,999,041,536)."""
    official = official_count("mit_b1_seg_ade20k", (512, 512)).fvcore_macs
    analysis = fvcore_analysis(create_model("mit_b1_seg_ade20k", use_sdpa=False), (512, 512))
    assert analysis.total() == official
    assert "decode_head.conv_seg" in analysis.uncalled_modules()
    assert meta_macs("mit_b1_seg_ade20k", (512, 512)) == official


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("size", [(64, 64), (97, 131)])
def test_classifier_forward(size):
    with torch.no_grad():
        assert create_model("mit_b0").eval()(torch.randn(1, 3, *size)).shape == (1, 1000)


def test_cityscapes_forward_shape():
    with torch.no_grad():
        assert create_model("mit_b0_seg_cityscapes").eval()(torch.randn(1, 3, 64, 96)).shape == (1, 19, 64, 96)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mit_b0_seg_ade20k", "mit_b0"])
def test_state_dict_round_trip(name):
    assert_round_trip(name)


def explicit_attention(attn, x, H, W):
    """The official Attention.forward, written out from the module's weights."""
    B, N, C = x.shape
    heads = attn.num_heads
    q = F.linear(x, attn.q.weight, attn.q.bias).reshape(B, N, heads, C // heads).permute(0, 2, 1, 3)
    if attn.sr_ratio > 1:
        x = x.permute(0, 2, 1).reshape(B, C, H, W)
        x = F.conv2d(x, attn.sr.weight, attn.sr.bias, stride=attn.sr_ratio).reshape(B, C, -1).permute(0, 2, 1)
        x = F.layer_norm(x, (C,), attn.norm.weight, attn.norm.bias, attn.norm.eps)
    kv = F.linear(x, attn.kv.weight, attn.kv.bias).reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
    w = (q @ kv[0].transpose(-2, -1) * (C // heads) ** -0.5).softmax(dim=-1)
    return F.linear((w @ kv[1]).transpose(1, 2).reshape(B, N, C), attn.proj.weight, attn.proj.bias)


@pytest.mark.parametrize("use_sdpa", [True, False])
@pytest.mark.parametrize("dim,heads,sr", [(64, 1, 8), (128, 2, 4), (160, 5, 2), (64, 2, 1)])
def test_attention_equals_official_form(use_sdpa, dim, heads, sr):
    torch.manual_seed(0)
    attn = EfficientSelfAttention(dim, heads, sr_ratio=sr, use_sdpa=use_sdpa).eval()
    H, W = 16, 24
    x = torch.randn(2, H * W, dim)
    with torch.no_grad():
        assert (attn(x, H, W) - explicit_attention(attn, x, H, W)).abs().max() < 1e-5


def test_sdpa_backbone_equals_explicit():
    torch.manual_seed(0)
    fast = create_model("mit_b0_backbone").eval()
    explicit = create_model("mit_b0_backbone", use_sdpa=False).eval()
    explicit.load_state_dict(fast.state_dict(), strict=True)
    assert all(not m.use_sdpa for m in explicit.modules() if isinstance(m, EfficientSelfAttention))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(fast(x), explicit(x)):
            assert (a - b).abs().max() < 1e-5


def test_conv_module_concat_form():
    """forward_concat(xs) is forward(cat(xs)), here with a padded 3x3 conv and a bias (no norm)."""
    torch.manual_seed(0)
    module = ConvModule(7 + 5 + 4, 6, kernel_size=3, padding=1, norm=False).eval()
    xs = [torch.randn(2, c, 9, 11) for c in (7, 5, 4)]
    with torch.no_grad():
        reference = F.relu(F.conv2d(torch.cat(xs, dim=1), module.conv.weight, module.conv.bias, padding=1))
        assert (module.forward_concat(xs) - reference).abs().max() < 1e-5


def fuse_by_concat(fusion, maps):
    """The official fusion: concatenate, 1x1 conv, BN (running statistics), ReLU, from the module's weights."""
    x = F.conv2d(torch.cat(maps, dim=1), fusion.conv.weight)
    bn = fusion.bn
    return F.relu(F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))


FEATURE_SHAPES = [(32, 24, 20), (64, 12, 10), (160, 6, 5), (256, 3, 3)]  # odd sizes: real resizes


def features():
    return [torch.randn(1, c, h, w) for c, h, w in FEATURE_SHAPES]


def test_segformer_head_equals_concat_form():
    """NVlabs' head (deepest scale first in the concatenation), rebuilt by hand from the module's weights."""
    torch.manual_seed(0)
    head = perturb_batch_norm(SegFormerHead([c for c, _, _ in FEATURE_SHAPES], embed_dim=48, num_classes=7)).eval()
    feats = features()
    size = feats[0].shape[2:]
    with torch.no_grad():
        embedded = []
        for i in reversed(range(4)):
            proj = getattr(head, f"linear_c{i + 1}").proj
            x = feats[i].flatten(2).transpose(1, 2) @ proj.weight.T + proj.bias
            x = x.transpose(1, 2).reshape(1, 48, *feats[i].shape[2:])
            embedded.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False) if i else x)
        reference = F.conv2d(fuse_by_concat(head.linear_fuse, embedded), head.linear_pred.weight, head.linear_pred.bias)
        assert (head(feats) - reference).abs().max() < 1e-5


@pytest.mark.parametrize("mlp_norm", [False, True])  # HRViT's setting, and mmseg's default
def test_hrvit_segformer_head_equals_concat_form(mlp_norm):
    """The HRViT repository's head (used by HRViT, CSWin, HRNet-MiT), rebuilt by hand from the module's weights."""
    torch.manual_seed(0)
    head = SegformerHead([c for c, _, _ in FEATURE_SHAPES], 48, 7, mlp_norm=mlp_norm, mlp_act=mlp_norm)
    head = perturb_batch_norm(head).eval()
    feats = features()
    with torch.no_grad():
        outs = []
        for conv, x in zip(head.convs, feats):
            y = conv.conv(x) if not mlp_norm else F.relu(conv.bn(conv.conv(x)))
            outs.append(F.interpolate(y, size=feats[0].shape[2:], mode="bilinear", align_corners=False))
        reference = F.conv2d(fuse_by_concat(head.fusion_conv, outs), head.conv_seg.weight, head.conv_seg.bias)
        assert (head(feats) - reference).abs().max() < 1e-5


@pytest.mark.parametrize("head_class", [SegFormerHead, SegformerHead])
def test_head_fvcore_count_is_the_concat_forms(head_class):
    """fvcore counts the fusion conv's slices as the whole conv's MACs: the hand count of the concat form."""
    widths, E, classes = [c for c, _, _ in FEATURE_SHAPES], 48, 7
    head = head_class(widths, E, classes).eval()
    _, H, W = FEATURE_SHAPES[0]
    embeds = sum(E * c * h * w for c, h, w in FEATURE_SHAPES)
    resizes = 4 * E * H * W * (3 if head_class is SegFormerHead else 4)  # HRViT's head resizes the 1/4 map too
    norms = 0 if head_class is SegFormerHead else 2 * E * sum(h * w for _, h, w in FEATURE_SHAPES)  # eval BN
    fusion = E * 4 * E * H * W + 2 * E * H * W  # conv + eval BN
    with torch.no_grad():
        analysis = FlopCountAnalysis(head, (features(),))
        analysis.unsupported_ops_warnings(False)
        assert analysis.total() == embeds + resizes + norms + fusion + classes * E * H * W


def test_block_training_step_matches_out_of_place_sums():
    """The block sums in place; outputs and gradients must be those of the plain x + f(x) form."""
    torch.manual_seed(0)
    block = Block(64, 2, sr_ratio=2).train()
    H, W = 8, 6
    x = torch.randn(2, H * W, 64, requires_grad=True)
    out = block(x, H, W)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in block.parameters()] + [x.grad.clone()]
    block.zero_grad()
    x.grad = None
    y = x + block.attn(block.norm1(x), H, W)
    reference = y + block.mlp(block.norm2(y), H, W)
    reference.square().sum().backward()
    torch.testing.assert_close(out, reference)
    for got, expected in zip(grads, [p.grad for p in block.parameters()] + [x.grad]):
        torch.testing.assert_close(got, expected)


@pytest.mark.slow
def test_segmenter_training_step_backpropagates():
    """Drop path on, in-place sums and the split fusion: every used parameter gets a finite gradient."""
    model = create_model("mit_b0_seg_ade20k", drop_path_rate=0.1).train()
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    for name, p in model.named_parameters():
        if name.startswith("decode_head.conv_seg"):
            assert p.grad is None  # never used, as in the official code
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
