"""HRNetV2 against the official code's counts and state-dict layout.

The official parameter counts and fvcore totals are rows of hrvit_bench/data/official_counts.csv (every row is
held to our counts by tests/test_official.py); the state-dict digests below were measured on the official modules
(HRNet-Image-Classification@f760c98 cls_hrnet.py, HRNet-Semantic-Segmentation@0bbb288 seg_hrnet.py /
seg_hrnet_ocr.py with their W48 configs at widths 18/32/48), run outside this repository.
"""
import hashlib

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis

import hrvit_bench_models as models
from hrvit_bench.official import official_count
from hrvit_bench_models.hrnet import Bottleneck, HRNetOCR
from model_checks import assert_round_trip, fvcore_flops, meta_build, meta_macs, perturb_batch_norm

# (number of state-dict entries, sha256 of "key:shape" lines in order, first 16 hex digits)
OFFICIAL_STATE_DICT = {
    "hrnetv2_w18": (1956, "55067f18132e46cc"),
    "hrnetv2_w48": (1956, "733f5051a3b80770"),
    "hrnetv2_w18_seg_cityscapes": (1839, "e4c9c1fba3a1ed08"),
    "hrnetv2_w48_seg_ade20k": (1839, "1d825e373a437ba9"),
    "hrnetv2_w18_ocr_ade20k": (1890, "59d0bcbeb4404bdd"),
    "hrnetv2_w48_ocr_cityscapes": (1890, "43d9bc1697c79622"),
}


def test_registered_names():
    expected = {f"hrnetv2_{w}{suffix}" for w in ("w18", "w32", "w48")
                for suffix in ("", "_backbone", "_seg_ade20k", "_seg_cityscapes", "_ocr_ade20k", "_ocr_cityscapes")}
    assert set(models.list_models(family="hrnet")) == expected
    assert models.model_info("hrnetv2_w48_ocr_ade20k").num_classes == 150
    assert "aux" in models.model_info("hrnetv2_w48_ocr_cityscapes").notes


@pytest.mark.parametrize("name", sorted(OFFICIAL_STATE_DICT))
def test_state_dict_layout_matches_official(name):
    state = meta_build(name).state_dict()
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in state.items())
    assert (len(state), hashlib.sha256(lines.encode()).hexdigest()[:16]) == OFFICIAL_STATE_DICT[name]


def test_backbone_keys_are_top_level_in_seg_models():
    backbone = set(meta_build("hrnetv2_w32_backbone").state_dict())
    seg = set(meta_build("hrnetv2_w32_seg_ade20k").state_dict())
    assert backbone < seg
    assert {k.split(".")[0] for k in seg - backbone} == {"last_layer"}


@pytest.mark.slow
def test_w18_classifier_flops_match_official():
    analysis = FlopCountAnalysis(models.create_model("hrnetv2_w18").eval(), torch.zeros(1, 3, 224, 224))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    assert analysis.total() == official_count("hrnetv2_w18", (224, 224)).fvcore_macs
    # the README's 3.99 GFLOPs are conv + linear MACs / 2^30
    by_operator = analysis.by_operator()
    assert round((by_operator["conv"] + by_operator["linear"]) / 2**30, 2) == 3.99


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hrnetv2_w18_seg_cityscapes", "hrnetv2_w18_ocr_ade20k"])
def test_seg_flops_at_odd_size_match_official(name):
    size = (97, 131)
    info = models.model_info(name)
    # our forward adds the test-time bilinear resize of the logits, 4 flops per output element in fvcore
    resize = 4 * info.num_classes * size[0] * size[1]
    # plain fvcore does not count F.scaled_dot_product_attention: OCR's explicit matmuls; the meta engine counts both
    explicit = {"use_sdpa": False} if "_ocr_" in name else {}
    measured = fvcore_flops(models.create_model(name, **explicit), size)
    assert measured - resize == official_count(name, size).fvcore_macs
    assert meta_macs(name, size) == measured


@pytest.mark.slow
@pytest.mark.parametrize("size", [(64, 96), (97, 131)])
def test_backbone_maps(size):
    model = models.create_model("hrnetv2_w18_backbone").eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, *size))
    assert [m.shape[1] for m in maps] == [18, 36, 72, 144]
    def halve(n):  # a stride-2 3x3 conv with padding 1 rounds up
        return -(-n // 2)

    h, w = halve(halve(size[0])), halve(halve(size[1]))
    for i, m in enumerate(maps):
        if i:
            h, w = halve(h), halve(w)
        assert m.shape[2:] == (h, w)


@pytest.mark.slow
def test_maps_are_channels_last_on_cpu_only():
    """oneDNN is faster channels-last; on other devices the official layout is kept (cuDNN fp32 was slower)."""
    model = models.create_model("hrnetv2_w18_backbone").eval()
    with torch.no_grad():
        on_cpu = model(torch.randn(1, 3, 64, 64))
        on_meta = model.to("meta")(torch.randn(1, 3, 64, 64, device="meta"))
    assert all(m.is_contiguous(memory_format=torch.channels_last) and not m.is_contiguous() for m in on_cpu)
    assert all(m.is_contiguous() and not m.is_contiguous(memory_format=torch.channels_last) for m in on_meta)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hrnetv2_w18_seg_cityscapes", "hrnetv2_w18_seg_ade20k",
                                  "hrnetv2_w18_ocr_cityscapes", "hrnetv2_w18_ocr_ade20k"])
@pytest.mark.parametrize("size", [(64, 64), (97, 131)])
def test_seg_logits_at_input_size(name, size):
    model = models.create_model(name).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, *size))
    assert logits.shape == (1, models.model_info(name).num_classes, *size)
    assert torch.isfinite(logits).all()


@pytest.mark.slow
def test_ocr_returns_main_logits():
    model = models.create_model("hrnetv2_w18_ocr_cityscapes").eval()
    assert isinstance(model, HRNetOCR)
    img = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        aux, main = model.forward_logits(img)
        out = model(img)
    assert aux.shape == main.shape == (1, 19, 16, 24)
    expected = F.interpolate(main, size=(64, 96), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(main, aux)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hrnetv2_w18", "hrnetv2_w18_seg_cityscapes", "hrnetv2_w18_ocr_ade20k"])
def test_state_dict_round_trip(name):
    assert_round_trip(name)

# An independent forward in the official code's form (seg_hrnet.py / seg_hrnet_ocr.py): contiguous NCHW maps,
# out-of-place sums in the official order, the object attention as explicit matmuls. Ours runs channels-last with
# in-place sums and SDPA; in float64 the two must agree to rounding.

def ref_block(block, x):
    out = F.relu(block.bn1(block.conv1(x)))
    if isinstance(block, Bottleneck):
        out = F.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    else:
        out = block.bn2(block.conv2(out))
    residual = x if block.downsample is None else block.downsample(x)
    return F.relu(out + residual)


def ref_layer(blocks, x):
    for block in blocks:
        x = ref_block(block, x)
    return x


def ref_exchange(unit, xs):
    xs = [ref_layer(branch, x) for branch, x in zip(unit.branches, xs)]
    if unit.fuse_layers is None:
        return xs
    outs = []
    for i, paths in enumerate(unit.fuse_layers):
        y = xs[0] if i == 0 else paths[0](xs[0])
        for j in range(1, len(xs)):
            if j == i:
                y = y + xs[j]
            elif j > i:
                y = y + F.interpolate(paths[j](xs[j]), size=xs[i].shape[2:], mode="bilinear",
                                      align_corners=unit.align_corners)
            else:
                y = y + paths[j](xs[j])
        outs.append(F.relu(y))
    return outs


def ref_backbone(model, x):
    x = F.relu(model.bn2(model.conv2(F.relu(model.bn1(model.conv1(x))))))
    ys = [ref_layer(model.layer1, x)]
    for index in range(1, model.num_stages + 1):
        transition = getattr(model, f"transition{index}")
        xs = [ys[min(i, len(ys) - 1)] if t is None else t(ys[min(i, len(ys) - 1)]) for i, t in enumerate(transition)]
        for unit in getattr(model, f"stage{index + 1}"):
            xs = ref_exchange(unit, xs)
        ys = xs
    return ys


def ref_ocr_logits(model, img):
    xs = ref_backbone(model, img)
    size = xs[0].shape[2:]
    feats = torch.cat([xs[0]] + [F.interpolate(x, size=size, mode="bilinear", align_corners=model.align_corners)
                                 for x in xs[1:]], 1)
    aux = model.aux_head(feats)
    feats = model.conv3x3_ocr(feats)
    B, C, H, W = feats.shape
    probs = F.softmax(aux.view(B, aux.shape[1], -1), dim=2)
    proxy = torch.matmul(probs, feats.view(B, C, -1).permute(0, 2, 1)).permute(0, 2, 1).unsqueeze(3)
    block = model.ocr_distri_head.object_context_block
    query = block.f_pixel(feats).view(B, block.key_channels, -1).permute(0, 2, 1)
    key = block.f_object(proxy).view(B, block.key_channels, -1)
    value = block.f_down(proxy).view(B, block.key_channels, -1).permute(0, 2, 1)
    sim = F.softmax(block.key_channels ** -0.5 * torch.matmul(query, key), dim=-1)
    context = torch.matmul(sim, value).permute(0, 2, 1).contiguous().view(B, block.key_channels, H, W)
    context = block.f_up(context)
    out = model.ocr_distri_head.conv_bn_dropout(torch.cat([context, feats], 1))
    return aux, model.cls_head(out)


@pytest.mark.slow
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_ocr_matches_the_official_form(use_sdpa):
    """Channels-last maps, in-place sums and fused attention change only rounding: float64 agrees to 1e-10."""
    torch.manual_seed(0)
    model = perturb_batch_norm(models.create_model("hrnetv2_w18_ocr_ade20k", use_sdpa=use_sdpa)).eval().double()
    img = torch.randn(1, 3, 97, 131, dtype=torch.float64)
    with torch.no_grad():
        aux, main = model.forward_logits(img)
        ref_aux, ref_main = ref_ocr_logits(model, img)
    assert main.is_contiguous(memory_format=torch.channels_last) and not main.is_contiguous()
    torch.testing.assert_close(aux, ref_aux, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(main, ref_main, atol=1e-10, rtol=1e-10)


@pytest.mark.slow
def test_ocr_sdpa_equals_explicit_in_float32():
    torch.manual_seed(0)
    fast = perturb_batch_norm(models.create_model("hrnetv2_w18_ocr_cityscapes")).eval()
    explicit = models.create_model("hrnetv2_w18_ocr_cityscapes", use_sdpa=False).eval()
    explicit.load_state_dict(fast.state_dict(), strict=True)
    img = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(fast(img), explicit(img), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hrnetv2_w18_ocr_ade20k", "hrnetv2_w18"])
def test_training_step_backpropagates(name):
    """Residual and fusion sums and the OCR ReLUs are in place; autograd must still see a valid graph."""
    torch.manual_seed(0)
    model = models.create_model(name).train()
    out = model(torch.randn(2, 3, 32, 32))
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
