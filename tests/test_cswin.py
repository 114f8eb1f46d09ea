"""CSWin-T/S/B against counts and key layouts of the official microsoft/CSWin-Transformer code.

Reference numbers were measured with fvcore on the official code (models/cswin.py for the classifier,
segmentation/backbone/cswin_transformer.py for the dense backbone, at f111ae2, run outside this repository
with shims for timm/einops/mmseg). No official CSWin + SegFormer code exists: those models are checked as
the official dense backbone plus the HRViT-configured SegFormer head counted by hand.
"""

import pytest
import torch
import torch.nn.functional as F

from hrvit_bench.official import official_count
from hrvit_bench_models import create_model, list_models, model_info
from hrvit_bench_models.cswin import CSWIN_CONFIGS, CSWinBlock, CSWinTransformer, LePEAttention
from model_checks import assert_round_trip, fvcore_flops, key_layout, meta_build, meta_macs, n_params

# sha256 (first 16 hex) of the sorted "key:shape" lines of the official state dict, and its number of entries.
OFFICIAL_CLS_LAYOUTS = {"t": ("24df181b8272fa30", 418), "s": ("ae7e385b22257aca", 656), "b": ("91aded48435fbadf", 656)}
OFFICIAL_DENSE_LAYOUTS = {
    "t": ("4406f390c583c1ea", 422), "s": ("f3818b8f73dbcd8d", 660), "b": ("86e55931457311f5", 660),
}
# CSWin-T built with img_size=112: stage 3's 7x7 map equals its stripe width, so it attends over the whole map.
OFFICIAL_CLS_T_112_LAYOUT = ("91395f2b94cf581f", 376)
HEAD_CHANNELS = {"t": 256, "s": 768, "b": 768}


def dims(variant):
    return [CSWIN_CONFIGS[variant]["embed_dim"] * 2 ** i for i in range(4)]


def test_registered_names():
    expected = {f"cswin_{v}{suffix}" for v in "tsb" for suffix in ("", "_backbone", "_seg_ade20k", "_seg_cityscapes")}
    assert set(list_models("cswin*")) == expected
    assert model_info("cswin_s_seg_ade20k").num_classes == 150
    assert model_info("cswin_b_seg_cityscapes").input_size == (1024, 1024)
    assert "No official CSWin+SegFormer code" in model_info("cswin_t_seg_ade20k").notes


@pytest.mark.parametrize("variant", "tsb")
@pytest.mark.parametrize("task,classes", [("seg_ade20k", 150), ("seg_cityscapes", 19)])
def test_seg_params_are_dense_backbone_plus_head(variant, task, classes):
    ch = HEAD_CHANNELS[variant]
    head = sum(c * ch + ch for c in dims(variant))  # per-scale 1x1 convs with bias, no BN (mlp_norm=False)
    head += 4 * ch * ch + 2 * ch  # fusion conv without bias, its BN
    head += ch * classes + classes  # classifier
    # The official dense backbone's count is a row of the official table (tests/test_official.py holds it).
    assert n_params(meta_build(f"cswin_{variant}_{task}")) == official_count(f"cswin_{variant}_backbone").params + head


@pytest.mark.parametrize("variant", "tsb")
def test_state_dict_layouts_match_official(variant):
    assert key_layout(meta_build(f"cswin_{variant}")) == OFFICIAL_CLS_LAYOUTS[variant]
    assert key_layout(meta_build(f"cswin_{variant}_backbone")) == OFFICIAL_DENSE_LAYOUTS[variant]


def test_classifier_branch_layout_follows_img_size():
    with torch.device("meta"):
        model = CSWinTransformer(**{k: v for k, v in CSWIN_CONFIGS["t"].items() if k != "head_channels"},
                                 img_size=112)
    assert key_layout(model) == OFFICIAL_CLS_T_112_LAYOUT
    assert len(model.stage3[0].attns) == 1 and len(model.stage2[0].attns) == 2


@pytest.mark.slow
def test_cls224_flops_match_official():
    # plain fvcore does not count F.scaled_dot_product_attention: the explicit matmuls; the meta engine counts both
    official = official_count("cswin_t", (224, 224)).fvcore_macs
    assert fvcore_flops(create_model("cswin_t", use_sdpa=False), (224, 224)) == official
    assert meta_macs("cswin_t", (224, 224)) == official


@pytest.mark.slow
def test_dense_flops_match_official_at_odd_size():
    # 97x131 gives maps 24x33, 12x17, 6x9, 3x5: stripes of 2 and 7 need zero-padding.
    official = official_count("cswin_t_backbone", (97, 131)).fvcore_macs
    assert fvcore_flops(create_model("cswin_t_backbone", use_sdpa=False), (97, 131)) == official
    assert meta_macs("cswin_t_backbone", (97, 131)) == official


@pytest.mark.slow
def test_seg_flops_are_backbone_plus_head_by_hand():
    """fvcore's rules: conv = multiply-adds, bilinear resize = 4 per output element, BN (eval) = 2 per element."""
    H, W, ch, classes = 97, 131, HEAD_CHANNELS["t"], 150
    sizes = [(24, 33), (12, 17), (6, 9), (3, 5)]
    quarter = sizes[0][0] * sizes[0][1]
    head = sum(h * w * c * ch for (h, w), c in zip(sizes, dims("t")))  # per-scale 1x1 convs
    head += 4 * 4 * quarter * ch  # every scale (the first one too) resized to 1/4
    head += quarter * 4 * ch * ch + 2 * quarter * ch  # fusion conv, BN
    head += quarter * ch * classes + 4 * H * W * classes  # classifier, final resize to the input
    backbone = official_count("cswin_t_backbone", (H, W)).fvcore_macs
    assert fvcore_flops(create_model("cswin_t_seg_ade20k", use_sdpa=False), (H, W)) == backbone + head


@pytest.mark.slow
@pytest.mark.parametrize("size", [(64, 64), (97, 131)])
def test_classifier_forward(size):
    with torch.no_grad():
        assert create_model("cswin_t").eval()(torch.randn(1, 3, *size)).shape == (1, 1000)


@pytest.mark.slow
def test_dense_backbone_odd_size_maps():
    with torch.no_grad():
        maps = create_model("cswin_t_backbone").eval()(torch.randn(1, 3, 97, 131))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 24, 33), (1, 128, 12, 17), (1, 256, 6, 9), (1, 512, 3, 5)]
    assert all(torch.isfinite(m).all() for m in maps)


@pytest.mark.slow
@pytest.mark.parametrize("name,size,classes", [
    ("cswin_t_seg_ade20k", (97, 131), 150),
    ("cswin_t_seg_cityscapes", (64, 96), 19),
])
def test_seg_logits_at_input_size(name, size, classes):
    with torch.no_grad():
        assert create_model(name).eval()(torch.randn(1, 3, *size)).shape == (1, classes, *size)


def attend(attn, q, k, v):
    """Run ``attn`` on (B, C, H, W) maps (it reads and writes (B, H, W, C) token maps)."""
    q, k, v = (t.permute(0, 2, 3, 1) for t in (q, k, v))
    out = q.new_empty(q.shape)
    attn(q, k, v, out)
    return out.permute(0, 3, 1, 2)


def reference_attention(attn, q, k, v, win_h, win_w):
    """The official dense code's steps on (B, C, H, W) maps: pad evenly, cut (B * windows, C, win_h, win_w) windows,
    LePE conv per window, explicit attention, stitch back, crop."""
    B, C, H, W = q.shape
    pad_h, pad_w = -H % win_h, -W % win_w
    top, left = pad_h // 2, pad_w // 2
    q, k, v = (F.pad(t, (left, pad_w - left, top, pad_h - top)) for t in (q, k, v))
    Hp, Wp = H + pad_h, W + pad_w

    def windows(t):
        t = t.reshape(B, C, Hp // win_h, win_h, Wp // win_w, win_w).permute(0, 2, 4, 1, 3, 5)
        return t.reshape(-1, C, win_h, win_w)

    def heads(t):  # (B', C, h, w) -> (B', heads, h * w, C // heads)
        return t.reshape(t.shape[0], attn.num_heads, C // attn.num_heads, -1).transpose(-2, -1)

    q, k, v = windows(q), windows(k), windows(v)
    lepe = heads(attn.get_v(v))
    weights = ((heads(q) * attn.scale) @ heads(k).transpose(-2, -1)).softmax(dim=-1)
    out = (weights @ heads(v) + lepe).transpose(-2, -1).reshape(-1, C, win_h, win_w)
    out = out.reshape(B, Hp // win_h, Wp // win_w, C, win_h, win_w).permute(0, 3, 1, 4, 2, 5).reshape(B, C, Hp, Wp)
    return out[:, :, top:top + H, left:left + W]


@pytest.mark.parametrize("use_sdpa", [True, False])
@pytest.mark.parametrize("stripe", ["vertical", "horizontal", None])
@pytest.mark.parametrize("size", [(14, 21), (12, 9)])  # tiled by 7-wide stripes; padded (2 and 5 zero lines)
def test_attention_matches_the_official_windowing(stripe, size, use_sdpa):
    torch.manual_seed(0)
    attn = LePEAttention(64, 4, split_size=7, stripe=stripe, use_sdpa=use_sdpa).eval()
    q, k, v = (torch.randn(2, 64, *size) for _ in range(3))
    H, W = size
    window = {"vertical": (H, 7), "horizontal": (7, W), None: (H, W)}[stripe]
    with torch.no_grad():
        torch.testing.assert_close(attend(attn, q, k, v), reference_attention(attn, q, k, v, *window),
                                   atol=1e-5, rtol=1e-5)


def test_stripes_zero_pad_evenly_like_the_official_dense_code():
    """12 rows in stripes of 7: one zero row on top and one below (top = pad // 2), then cropped back."""
    torch.manual_seed(0)
    attn = LePEAttention(32, 2, split_size=7, stripe="horizontal").eval()
    q, k, v = (torch.randn(1, 32, 12, 9) for _ in range(3))
    with torch.no_grad():
        out = attend(attn, q, k, v)
        by_hand = attend(attn, *(F.pad(t, (0, 0, 1, 1)) for t in (q, k, v)))[:, :, 1:13]
        pad_below = attend(attn, *(F.pad(t, (0, 0, 0, 2)) for t in (q, k, v)))[:, :, :12]
    assert out.shape == (1, 32, 12, 9)
    torch.testing.assert_close(out, by_hand, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(out, pad_below, atol=1e-3)  # where the zeros go matters


@pytest.mark.parametrize("whole_map", [False, True])
def test_block_matches_the_official_token_form(whole_map):
    """The official block on (B, H*W, C) tokens: LN, qkv, each half of the channels through its own stripes,
    concatenated, projection, residual; MLP, residual. Ours works on a (B, H, W, C) map and sums in place."""
    torch.manual_seed(0)
    block = CSWinBlock(64, 4, split_size=2, whole_map=whole_map).eval()
    B, H, W, C = 2, 6, 5, 64
    x = torch.randn(B, H * W, C)
    with torch.no_grad():
        q, k, v = block.qkv(block.norm1(x)).reshape(B, H, W, 3, C).permute(3, 0, 4, 1, 2)
        halves = [slice(0, C)] if whole_map else [slice(0, C // 2), slice(C // 2, C)]
        windows = [(H, W)] if whole_map else [(H, 2), (2, W)]
        attended = torch.cat([reference_attention(attn, q[:, part], k[:, part], v[:, part], *window)
                              for attn, part, window in zip(block.attns, halves, windows)], dim=1)
        y = x + block.proj(attended.flatten(2).transpose(1, 2))
        expected = y + block.mlp(block.norm2(y))
        out = block(x.reshape(B, H, W, C))
    torch.testing.assert_close(out.reshape(B, H * W, C), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("cswin_t_backbone", (97, 131)), ("cswin_t", (64, 64))])
def test_sdpa_equals_explicit(name, size):
    torch.manual_seed(0)
    fast = create_model(name).eval()
    explicit = create_model(name, use_sdpa=False).eval()
    explicit.load_state_dict(fast.state_dict(), strict=True)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        outs = fast(x), explicit(x)
    for a, b in zip(*(o if isinstance(o, list) else [o] for o in outs)):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_dense_maps_are_channels_last_views_of_the_token_maps():
    with torch.no_grad():
        maps = create_model("cswin_t_backbone").eval()(torch.randn(1, 3, 64, 64))
    assert all(m.is_contiguous(memory_format=torch.channels_last) for m in maps)


@pytest.mark.slow
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_training_step_backpropagates(use_sdpa):
    """Residual sums and the LePE + attention sum are in place; autograd must still see a valid graph."""
    torch.manual_seed(0)
    model = create_model("cswin_t_backbone", drop_path_rate=0.1, use_sdpa=use_sdpa).train()
    sum(m.square().mean() for m in model(torch.randn(2, 3, 60, 44))).backward()  # pads the 7-wide stripes
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cswin_t_seg_ade20k", "cswin_t"])
def test_state_dict_round_trip(name):
    assert_round_trip(name)