"""The CLI as a user meets it: exit codes, one-line errors, and the key numbers in --json."""
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from hrvit_bench import __version__, cli, output
from hrvit_bench.cli import app
from hrvit_bench.official import official_count
from toy import TOY_PARAMS, TOY_UNUSED, toy_macs

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


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
    [data] = json.loads(result.stdout)  # a list, even for one model
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
    assert lines[0] == "model,input,engine,params,convention,count,giga,gemm_calls_uncounted"
    assert len(lines) == 3 and all(line.endswith(",0") for line in lines[1:])


def test_params_json_by_module(toy_model):
    result = run("params", "--model", toy_model, "--depth", "1", "--json")
    assert result.exit_code == 0, result.output
    [data] = json.loads(result.stdout)
    assert data["params"] == TOY_PARAMS
    assert data["by_module"]["conv"] == 8 * 3 * 9 + 8
    assert data["uncalled_modules"] == ["never_called"]
    assert data["unused_parameter_names"] == ["never_called.bias", "never_called.weight"]


def test_hrvit_b1_cls224_official_numbers():
    result = run("flops", "--model", "hrvit_b1", "--json", "--no-cross-check")
    assert result.exit_code == 0, result.output
    [data] = json.loads(result.stdout)
    official = official_count("hrvit_b1", "224x224")  # official code, counted with fvcore
    assert data["params"] == official.params
    assert data["flops"]["macs-all-1e9"]["count"] == official.fvcore_macs
    assert data["flops"]["flops-all-1e9"]["count"] == 2 * official.fvcore_macs


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


def test_debug_shows_the_traceback_and_keeps_exit_2():
    result = run("--debug", "flops", "--model", "nope")
    assert result.exit_code == 2
    assert "Traceback" in result.output and result.output.strip().splitlines()[-1].startswith("error: unknown model")


def test_version_and_short_help():
    result = run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"hrvit-bench {__version__}"
    for args in (("-h",), ("flops", "-h")):
        result = run(*args)
        assert result.exit_code == 0 and "Usage" in result.output


def test_no_arguments_prints_help_without_an_error(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["hrvit-bench"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    captured = capsys.readouterr()
    assert exit_.value.code == 0
    assert "Usage" in captured.out and "error:" not in captured.out + captured.err


def test_parser_errors_through_main_are_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["hrvit-bench", "flops", "--bogus"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("error:") and "--bogus" in line


def test_json_and_csv_together_are_refused():
    for command in ("list", "params", "flops", "claims"):
        result = run(command, "--json", "--csv")
        assert result.exit_code == 2 and "not both" in result.output, command


@pytest.mark.parametrize("word, task", [("cls", "classification"), ("seg", "segmentation"),
                                        ("backbone", "backbone"), ("segmentation", "segmentation")])
def test_list_task_accepts_the_words_the_table_prints(word, task):
    result = run("list", "--task", word, "--json")
    assert result.exit_code == 0, result.output
    assert {r["task"] for r in json.loads(result.stdout)} == {task}


@pytest.mark.parametrize("args, valid", [(("--task", "detection"), "cls, seg"),
                                         (("--family", "resnet"), "cswin, hrnet")])
def test_list_bad_values_name_the_valid_ones(args, valid):
    result = run("list", *args)
    assert result.exit_code == 2 and valid in result.output


@pytest.mark.parametrize("args", [("flops", "-m", "nope"), ("latency", "--threads", "0"), ("list", "--task", "x"),
                                  ("report", "--fail-on-change", "nan", "--compare", "reports")])
def test_errors_have_no_blank_first_line(args):
    result = run(*args)
    assert result.exit_code == 2
    assert result.output.splitlines()[0].startswith("error: ")


def test_progress_is_shown_for_a_single_model_on_a_terminal(monkeypatch, toy_model):
    terminal = Console(file=io.StringIO(), force_terminal=True, width=100)
    monkeypatch.setattr(output, "err_console", terminal)
    result = run("flops", "--model", toy_model, "--json")
    assert result.exit_code == 0
    json.loads(result.stdout)  # stdout stays clean JSON
    assert f"counting {toy_model}" in terminal.file.getvalue()


def test_models_import_under_their_own_name_beside_another_models_package(tmp_path):
    """A wheel installs hrvit_bench and hrvit_bench_models, never a top-level `models`; another package's
    `models` first on the path leaves the CLI working."""
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir)], check=True)
    [wheel] = wheel_dir.glob("*.whl")
    top = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {"hrvit_bench", "hrvit_bench_models"} <= top and "models" not in top
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True)
    (site / "models").mkdir()
    (site / "models" / "__init__.py").write_text("raise ImportError('another project\'s models package')\n")
    code = ("import sys, hrvit_bench; sys.argv = ['hrvit-bench', 'list', '--family', 'hrvit', '--json']; "
            "print(hrvit_bench.__file__, file=sys.stderr); from hrvit_bench.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(str(site))  # the installed wheel ran, not the checkout
    assert len(json.loads(done.stdout)) == 27


@pytest.mark.parametrize("args", [("claims", "--rounds", "3"), ("claims", "--threads", "1"),
                                  ("report", "--rounds", "3", "--threads", "1"),
                                  ("report", "--shard", "1/2", "--rounds", "3")])
def test_timing_options_without_latency_are_refused_before_counting(monkeypatch, tmp_path, args):
    from hrvit_bench import count_cache

    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be counted")

    monkeypatch.setattr(count_cache.CountCache, "prefetch", refuse)
    result = run(*args, *(["--out", str(tmp_path / "out")] if args[0] == "report" else []))
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    given = " and ".join(a for a in args if a in ("--rounds", "--threads"))
    assert line.startswith(f"error: {given} set") and "add --latency cpu" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["claims", "report"])
def test_latency_on_a_missing_device_is_one_line_exit_2_before_counting(monkeypatch, tmp_path, command):
    import torch

    from hrvit_bench import count_cache

    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be counted")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(count_cache.CountCache, "prefetch", refuse)
    extra = ["--out", str(tmp_path / "out")] if command == "report" else []
    result = run(command, "--latency", "cuda", *extra)
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: --latency cuda:")
    assert not (tmp_path / "out").exists()
