"""timm and torchvision models held to the numbers timm itself publishes (hrvit_bench/data/timm_published.csv).

Runs only in the timm venv (README, "Any model"; `.ci/run` makes it): `HRVIT_BENCH_TIMM=1 python -m pytest
tests/test_outside_timm.py`. timm is imported unconditionally, so that run fails, never skips, where timm is missing.
"""
import json

import pytest
import timm  # noqa: F401  (a missing timm fails this file loudly)
import torchvision  # noqa: F401
from typer.testing import CliRunner

import hrvit_bench
from hrvit_bench.cli import app
from hrvit_bench.published import read_data

runner = CliRunner()
PUBLISHED = read_data("timm_published.csv")


@pytest.mark.parametrize("row", PUBLISHED, ids=[r["model"] for r in PUBLISHED])
def test_reproduces_timms_published_gmacs_and_params(row):
    """timm's benchmark CSVs: fvcore's total at batch 1, / 1e9 and rounded to 2 decimals; params / 1e6 likewise."""
    result = hrvit_bench.count(f"timm:{row['model']}")
    count = result.count
    height, width = (int(s) for s in row["input"].split("x"))
    assert count.input_shape == (1, 3, height, width)  # the default input is timm's pretrained_cfg input_size
    assert round(count.params / 1e6, 2) == float(row["param_count_m"])
    assert round(count.total() / 1e9, 2) == float(row["infer_gmacs"])
    attention = count.by_operator.get("scaled_dot_product_attention", 0)
    if row["attention"] == "sdpa":  # fvcore alone counts SDPA as 0 and would miss the published number
        assert attention > 0 and round((count.total() - attention) / 1e9, 2) != float(row["infer_gmacs"])
    else:
        assert attention == 0


def test_flops_command_prints_vit_b16_at_17_58_gmacs():
    result = runner.invoke(app, ["flops", "-m", "timm:vit_base_patch16_224", "--convention", "macs-all-1e9",
                                 "--no-cross-check"])
    assert result.exit_code == 0, result.output
    assert "timm:vit_base_patch16_224 @ 1x3x224x224" in result.stdout.replace("\n", " ")
    assert "17,582,740,224" in result.stdout and "17.583" in result.stdout


def test_torchvision_resnet50_matches_the_published_architecture():
    """torchvision's docs publish 25,557,032 parameters for resnet50; timm's CSV 4.11 GMACs for the same network."""
    data = json.loads(runner.invoke(app, ["flops", "-m", "torchvision:resnet50", "--json", "--no-cross-check"]).stdout)
    [row] = data
    assert row["model"] == "torchvision:resnet50" and row["input"] == "1x3x224x224"
    assert row["params"] == 25_557_032
    assert round(row["flops"]["macs-all-1e9"]["count"] / 1e9, 2) == 4.11


def test_meta_engine_equals_fvcore_on_real_tensors():
    meta = hrvit_bench.count("timm:resnet18", (1, 3, 64, 64))
    real = hrvit_bench.count("timm:resnet18", (1, 3, 64, 64), engine="fvcore")
    assert meta.count.by_operator == real.count.by_operator


def test_torchvision_segmentation_builds_without_fetching_backbone_weights(monkeypatch):
    """get_model(name, weights=None) alone still loads weights_backbone (ImageNet resnet50) for FCN."""
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    result = runner.invoke(app, ["params", "-m", "torchvision:fcn_resnet50", "--json"])
    assert result.exit_code == 0, result.output
    # resnet50 without its fc (25,557,032 - 2048 x 1000 - 1000) and FCNHead(2048 -> 21): conv 3x3 2048->512, BN,
    # conv 1x1 512->21 with bias
    backbone = 25_557_032 - 2048 * 1000 - 1000
    head = 2048 * 512 * 9 + 2 * 512 + 512 * 21 + 21
    assert json.loads(result.stdout)[0]["params"] == backbone + head


def test_a_detection_count_is_the_same_every_run_and_says_it_depends_on_values():
    counts = [hrvit_bench.count("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn").count for _ in range(2)]
    assert counts[0].by_operator == counts[1].by_operator  # the random weights are seeded
    assert counts[0].engine == "fvcore" and any(note.startswith("data-dependent:") for note in counts[0].notes)


def test_a_video_model_takes_a_clip_and_input_frames_x_height_x_width():
    """r3d_18 at its weights' 112x112 crop and 16 frames; at 8 frames every layer before the pooled fc (512 -> 400)
    sees half the frames, so the count less the fc halves exactly."""
    clip = hrvit_bench.count("torchvision:r3d_18").count
    assert clip.input_shape == (1, 3, 16, 112, 112)
    result = runner.invoke(app, ["flops", "-m", "torchvision:r3d_18", "-i", "8x112x112", "--json", "--no-cross-check"])
    assert result.exit_code == 0, result.output
    [half] = json.loads(result.stdout)
    fc = 512 * 400
    assert half["input"] == "1x3x8x112x112"
    assert clip.total() - fc == 2 * (half["flops"]["macs-all-1e9"]["count"] - fc)


@pytest.mark.parametrize("spec, message", [
    ("timm:resnet5", "unknown timm model 'resnet5'; close matches: resnet50"),
    ("torchvision:resnet5", "unknown torchvision model 'resnet5'; close matches: resnet50"),
])
def test_unknown_names_list_close_matches(spec, message):
    result = runner.invoke(app, ["flops", "-m", spec])
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
