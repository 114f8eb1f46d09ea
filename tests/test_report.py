"""`hrvit-bench report`: the files it writes, atomic writes, and the CI gate failing on a doctored baseline."""
import csv
import json

import pytest
from typer.testing import CliRunner

from hrvit_bench import output
from hrvit_bench import report as reporting
from hrvit_bench.cli import app

runner = CliRunner()
FILES = {"models.csv", "claims.csv", "claims.md", "report.json", "params_vs_flops.png", "params_vs_flops.svg",
         "claims.png", "claims.svg"}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """One full report of the zoo (its counts are cached for the rest of this process)."""
    out = tmp_path_factory.mktemp("reports")
    result = runner.invoke(app, ["report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def read_models(path):
    with open(path / "models.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_report_writes_every_file(baseline):
    assert FILES <= {p.name for p in baseline.iterdir()}
    assert not [p for p in baseline.iterdir() if p.name.startswith(".")]  # no staging left behind
    rows = {(r["model"], r["input"]): r for r in read_models(baseline)}
    # Official counts (fvcore on the official code) at paper resolutions.
    assert int(rows[("hrvit_b1", "224x224")]["macs_all"]) == 2_811_051_008
    assert int(rows[("mit_b1_seg_ade20k", "512x512")]["macs_all"]) == 16_156_327_936
    assert int(rows[("hrnetv2_w18", "224x224")]["params"]) == 21_299_004
    assert int(rows[("mit_b1_seg_ade20k", "512x512")]["unused_params"]) == 128 * 150 + 150  # conv_seg
    data = json.loads((baseline / "report.json").read_text())
    assert data["environment"]["wall_time_s"] > 0 and data["environment"]["torch_version"]
    assert "| claim" in (baseline / "claims.md").read_text()


def test_gate_passes_on_its_own_baseline(baseline, tmp_path):
    result = runner.invoke(app, ["report", "--out", str(tmp_path), "--compare", str(baseline)])
    assert result.exit_code == 0, result.output
    assert "counts match" in result.output


def test_gate_fails_on_a_doctored_baseline_naming_the_row(baseline, tmp_path):
    doctored = tmp_path / "doctored"
    doctored.mkdir()
    rows = read_models(baseline)
    target = next(r for r in rows if r["model"] == "hrvit_b1" and r["input"] == "224x224")
    target["macs_all"] = str(int(int(target["macs_all"]) * 1.01))  # 1% off: beyond 0.5%
    with open(doctored / "models.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    args = ["report", "--out", str(tmp_path / "new"), "--compare", str(doctored), "--fail-on-change", "0.5%"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "hrvit_b1 @ 224x224: macs_all" in result.output
    assert "1 count(s) moved" in result.output
    # Within a looser tolerance the same baseline passes.
    assert runner.invoke(app, [*args[:-1], "2%"]).exit_code == 0


@pytest.mark.parametrize("content", [None, "not,a,report\n1,2,3\n", "model,input,params,macs_all,macs_gemm\nx,1x1,a,b,c\n"])
def test_missing_or_malformed_baseline_is_a_usage_error(tmp_path, content):
    if content is not None:
        (tmp_path / "models.csv").write_text(content)
    result = runner.invoke(app, ["report", "--out", str(tmp_path / "new"), "--compare", str(tmp_path)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()  # it stopped before counting anything


def test_bad_tolerance_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["report", "--out", str(tmp_path), "--fail-on-change", "half"])
    assert result.exit_code == 2 and "tolerance" in result.output


def test_an_interrupted_write_leaves_the_previous_files_whole(tmp_path):
    output.write_files(tmp_path, {"a.csv": "old a\n", "b.csv": "old b\n"})

    class Interrupted(bytes):
        """Raises while the staging copy is written, after a.csv was staged."""

    files = {"a.csv": "new a\n", "b.csv": Interrupted()}
    original = output.Path.write_bytes

    def write_bytes(self, data):
        if isinstance(data, Interrupted):
            raise KeyboardInterrupt
        return original(self, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(output.Path, "write_bytes", write_bytes)
        with pytest.raises(KeyboardInterrupt):
            output.write_files(tmp_path, files)
    assert (tmp_path / "a.csv").read_text() == "old a\n"
    assert (tmp_path / "b.csv").read_text() == "old b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]


def test_tolerance_parsing():
    assert reporting.parse_tolerance("0.5%") == pytest.approx(0.005)
    assert reporting.parse_tolerance("0.005") == pytest.approx(0.005)


def test_claims_strict_exits_1_when_a_measurable_claim_fails(baseline):
    # Counts are cached by the report above; the committed claims include ones that do not hold.
    result = runner.invoke(app, ["claims", "--strict", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert any(c["verdict"] == "does not hold" for c in data["claims"])
    assert runner.invoke(app, ["claims", "--json"]).exit_code == 0


def test_report_latency_rows_and_plot(toy_model, monkeypatch):
    from hrvit_bench import claims as claims_module
    from hrvit_bench import plots

    toy_claim = claims_module.Claim(
        id="toy", metric="params", kind="change", pairs=((toy_model, toy_model),), input=(32, 48), stated="0%",
        stated_pct=0.0, tolerance_pp=1.0, low_pct=None, high_pct=None, source="test", note="")
    monkeypatch.setattr(reporting, "load_claims", lambda: [toy_claim])
    rows = reporting.measure_claim_latency("cpu", iters=3)
    assert [(r["model"], r["input"], r["status"]) for r in rows] == [(toy_model, "32x48", "ok")]
    assert rows[0]["median_ms"] > 0 and rows[0]["gmacs"] > 0

    class WithLatency:
        latency = rows

    figures = plots.latency_vs_flops(WithLatency())
    assert set(figures) == {"latency_vs_flops.png", "latency_vs_flops.svg"}
    assert figures["latency_vs_flops.png"].startswith(b"\x89PNG")
