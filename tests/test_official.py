"""Every row of the official table (hrvit_bench/data/official_counts.csv, counted on the official code by
benchmarks/official_counts.py) against hrvit-bench's own models, exactly.

Parameters come from a meta build of the registered default; MACs from the meta engine on the default build
(fvcore's rules on shapes, held equal to fvcore itself by tests/test_engines.py), so large inputs cost nothing.
The default builds run scaled_dot_product_attention, which the meta engine counts as fvcore counts the official
explicit matmuls. The one adjustment is the note's: where the official forward returns 1/4-resolution logits
(HRNet's segmenters), our final resize to the input is added to the official total (OfficialCount.our_macs).
"""
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from hrvit_bench import counting, zoo
from hrvit_bench.official import RESIZE_NOT_COUNTED, OfficialCount, load_official, official_count
from model_checks import meta_build, n_params

ROWS = load_official()
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "official_counts.py"


def row_id(row: OfficialCount) -> str:
    return f"{row.model}@{zoo.format_size(row.input)}"


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_params_match_official(row):
    assert n_params(meta_build(row.model)) == row.params


@pytest.mark.slow
@pytest.mark.parametrize("row", [r for r in ROWS if r.fvcore_macs is not None], ids=row_id)
def test_macs_match_official(row):
    macs = counting.count(zoo.build(row.model, device="meta"), (1, 3, *row.input), engine="meta").total()
    assert macs == row.our_macs


def test_rows_are_unique_registered_and_sourced():
    keys = [(r.model, r.input) for r in ROWS]
    assert len(keys) == len(set(keys))
    for row in ROWS:
        info = zoo.info(row.model)  # registered
        assert row.task == info.task, row
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}:\S+", row.source), row.source
        repo_commit = row.source.split(":")[0]
        assert repo_commit in info.official_code, (row.model, info.official_code)
        assert row.params > 0 and (row.fvcore_macs is None or row.fvcore_macs > 0)


def test_a_model_has_one_parameter_count():
    params = {}
    for row in ROWS:
        assert params.setdefault(row.model, row.params) == row.params, row.model


def test_resize_adjustment_only_on_hrnet_segmenters():
    adjusted = {r.model for r in ROWS if RESIZE_NOT_COUNTED in r.note}
    assert adjusted and all(re.fullmatch(r"hrnetv2_w\d+_(seg|ocr)_\w+", m) for m in adjusted)
    row = official_count("hrnetv2_w18_seg_cityscapes", "97x131")
    assert row.our_macs - row.fvcore_macs == 4 * 19 * 97 * 131


def test_lookup():
    assert official_count("hrvit_b1_seg_cityscapes", "1024x1024") == official_count("hrvit_b1_seg_cityscapes",
                                                                                     (1024, 1024))
    assert official_count("hrvit_b1_seg_cityscapes").input == (512, 512)  # the first row: smallest input
    with pytest.raises(KeyError):
        official_count("hrvit_b1_seg_cityscapes", "640x640")
    with pytest.raises(KeyError):
        official_count("cswin_t_seg_ade20k")  # no official code exists


@pytest.fixture(scope="module")
def script():
    """benchmarks/official_counts.py as a module (it puts benchmarks/ on sys.path for its stand-ins)."""
    spec = importlib.util.spec_from_file_location("official_counts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_rearrange_standin_moves_every_element_where_einops_would(script):
    """HRViT's pattern, checked element by element against the index arithmetic the pattern spells."""
    B, H, h, b, W, d = 2, 3, 2, 2, 5, 4
    x = torch.arange(B * H * h * b * W * d).reshape(B, H, h, b * W, d)
    out = script.shims.rearrange(x, "B H h (b W) d -> B (H b) W (h d)", b=b)
    assert out.shape == (B, H * b, W, h * d)
    for n, i, k, j, w, e in ((n, i, k, j, w, e) for n in range(B) for i in range(H) for k in range(h)
                             for j in range(b) for w in range(W) for e in range(d)):
        assert out[n, i * b + j, w, k * d + e] == x[n, i, k, j * W + w, e]
    with pytest.raises(ValueError):
        script.shims.rearrange(x, "B H h (b W) d -> B (H b) W (h d)", b=3)  # 10 is no multiple of 3


def test_config_merge_follows_mmcv(script):
    base = {"model": {"type": "EncoderDecoder", "backbone": {"type": "x", "depth": 2}, "head": {"a": 1, "b": 2}}}
    child = {"model": {"backbone": {"depth": 3}, "head": {"_delete_": True, "c": 3}}, "lr": 0.1}
    assert script._merge(base, child) == {
        "model": {"type": "EncoderDecoder", "backbone": {"type": "x", "depth": 3}, "head": {"c": 3}}, "lr": 0.1}


def test_standins_leave_nothing_behind(script):
    with script.shims.standins():
        from timm.models.layers import DropPath  # noqa: F401
        import mmseg.models.builder  # noqa: F401
    assert not any(name.split(".")[0] in {"timm", "mmseg", "mmcv", "einops"} for name in sys.modules)
