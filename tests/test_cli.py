"""The CLI as a user meets it: exit codes, one-line errors, and the key numbers in --json."""
import json

import pytest
from typer.testing import CliRunner

from hrvit_bench.cli import app
from toy import TOY_PARAMS, TOY_UNUSED, toy_macs

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_list_json_shows_the_toy_model(toy_model):
    result = run("list", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows[toy_model]["family"] == "toy"
    assert rows["hrvit_b1"]["task"] == "classification"


def test_flops_json_of_the_toy_model(toy_model):
    result = run("flops", "--model", toy_model, "--input", "20x30", "--batch-size", "3", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    macs = toy_macs(3, 20, 30)
    assert data["params"] == TOY_PARAMS
    assert data["unused_params"] == TOY_UNUSED
    assert data["macs_by_operator"] == macs
    assert data["flops"]["macs-all-1e9"]["count"] == sum(macs.values())
    assert data["flops"]["flops-gemm-2^30"]["count"] == 2 * (macs["conv"] + macs["linear"])
    assert data["flops"]["flops-gemm-2^30"]["giga"] == pytest.approx(2 * (macs["conv"] + macs["linear"]) / 2**30)
    counters = {c["counter"]: c for c in data["cross_checks"]}
    assert counters["torch FlopCounterMode"]["macs"] == macs["conv"] + macs["linear"]


def test_flops_csv_has_a_row_per_convention(toy_model):
    result = run("flops", "--model", toy_model, "--csv", "--convention", "macs-all-1e9", "--convention", "flops-all-1e9")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "model,input,engine,params,convention,count,giga"
    assert len(lines) == 3


def test_params_json_by_module(toy_model):
    result = run("params", "--model", toy_model, "--depth", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["params"] == TOY_PARAMS
    assert data["by_module"]["conv"] == 8 * 3 * 9 + 8
    assert data["uncalled_modules"] == ["never_called"]
    assert data["unused_parameter_names"] == ["never_called.bias", "never_called.weight"]


def test_hrvit_b1_cls224_official_numbers():
    result = run("flops", "--model", "hrvit_b1", "--json", "--no-cross-check")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["params"] == 19_685_152  # official code, counted with fvcore
    assert data["flops"]["macs-all-1e9"]["count"] == 2_811_051_008
    assert data["flops"]["flops-all-1e9"]["count"] == 2 * 2_811_051_008


@pytest.mark.parametrize(
    "args, message",
    [
        (("flops", "--model", "hrvit_b11"), "did you mean"),
        (("flops", "--model", "hrvit_b1", "--input", "12by5"), "HxW"),
        (("flops", "--model", "hrvit_b1", "--input", "0x224"), "positive"),
        (("flops", "--model", "hrvit_b1", "--input", "16x16"), "at least 32"),
        (("flops", "--model", "hrvit_b1", "--batch-size", "0"), "batch size"),
        (("flops", "--model", "hrvit_b1", "--convention", "gflops"), "macs-all-1e9"),
        (("params", "--model", "nope*"), "no model matches"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    result = run("--debug", "flops", "--model", "nope")
    assert result.exit_code != 0
    assert result.exception is not None
