"""Where results go (issue 20, items 7, 8 and 13): CSV cells as the values are, and the one check that an output
can be written, which names the option and refuses what it cannot do before any work."""
import json

import pytest
from typer.testing import CliRunner

from hrvit_bench import output
from hrvit_bench.cli import app
from hrvit_bench.errors import UsageError

runner = CliRunner()


def test_csv_keeps_integers_where_a_column_has_gaps():
    text = output.csv_text([{"calls": 1, "params": None, "ms": 1.5}, {"calls": 2, "params": 38500, "ms": 0.25}])
    assert text.splitlines() == ["calls,params,ms", "1,,1.5", "2,38500,0.25"]


def test_list_csv_writes_sizes_as_the_table_does():
    rows = runner.invoke(app, ["list", "hrvit_b1_seg_ade20k", "--csv"]).stdout.strip().splitlines()
    header, row = rows[0].split(","), rows[1].split(",")
    assert row[header.index("input_size")] == "512x512" and row[header.index("paper_inputs")] == "512x512"


def test_profile_csv_and_json_count_calls_in_integers(toy_model, monkeypatch):
    from hrvit_bench import roofline

    monkeypatch.setattr(roofline, "measure", lambda settings, env, **kw: roofline.Roofline(
        "test CPU", "fp32", 1, 100.0, 10.0, 8, 64))
    args = ["profile", "-m", toy_model, "--depth", "1", "--iters", "2", "--warmup", "0", "--threads", "1"]
    lines = runner.invoke(app, [*args, "--csv"]).stdout.strip().splitlines()
    header = lines[0].split(",")
    conv = next(line.split(",") for line in lines[1:] if line.split(",")[header.index("name")] == "conv")
    assert conv[header.index("calls")] == "1" and conv[header.index("params")] == str(8 * 3 * 9 + 8)
    [data] = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert data["input"] == "1x3x32x48"
    assert next(r for r in data["rows"] if r["name"] == "conv")["calls"] == 1


def test_flops_json_names_the_input_as_csv_and_records_do(toy_model, tmp_path):
    result = runner.invoke(app, ["flops", "-m", toy_model, "-b", "2", "--json", "--no-cross-check",
                                 "--out", str(tmp_path / "flops.json")])
    assert result.exit_code == 0, result.output
    [data] = json.loads(result.stdout)
    assert data["input"] == "2x3x32x48" and "input_shape" not in data
    record = json.loads((tmp_path / "flops.json").read_text())
    assert record["schema_version"] == 2 and record["rows"][0]["input"] == "2x3x32x48"


# --------------------------------------------------------------------------------------------------------------
# The one writable check.


def test_profile_plot_into_a_folder_that_cannot_exist_names_plot(toy_model, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(app, ["profile", "-m", toy_model, "--plot", str(blocker / "figures")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: cannot write to --plot {blocker / 'figures'}: Not a directory"


@pytest.mark.parametrize("command", [["flops"], ["params"]])
def test_out_with_a_file_name_that_is_not_json_is_refused_and_nothing_is_made(toy_model, tmp_path, monkeypatch,
                                                                               command):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*command, "-m", toy_model, "--out", "result.txt"])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: --out takes a FILE.json or a folder: result.txt would become a folder "
                                     "named result.txt (create the folder first if that is what you mean)")
    assert list(tmp_path.iterdir()) == []


def test_out_takes_a_json_file_or_a_folder(toy_model, tmp_path):
    as_file = runner.invoke(app, ["params", "-m", toy_model, "--out", str(tmp_path / "p.json")])
    as_folder = runner.invoke(app, ["params", "-m", toy_model, "--out", str(tmp_path / "records")])
    assert as_file.exit_code == as_folder.exit_code == 0
    assert (tmp_path / "p.json").is_file() and (tmp_path / "records" / "params.record.json").is_file()


def test_a_folder_option_refuses_a_file_name_and_an_existing_file(tmp_path):
    with pytest.raises(UsageError, match="--out takes a folder: .*report.txt would become a folder named report.txt"):
        output.check_writable(tmp_path / "report.txt")
    (tmp_path / "made").write_text("")
    with pytest.raises(UsageError, match="is a file; --out takes a folder"):
        output.check_writable(tmp_path / "made")
    (tmp_path / "dots.v2").mkdir()
    output.check_writable(tmp_path / "dots.v2")  # an existing folder is a folder, whatever its name
    output.check_writable(tmp_path / "new" / "deeper")  # made when written, not now
    assert not (tmp_path / "new").exists()
