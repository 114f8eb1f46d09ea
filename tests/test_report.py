"""`hrvit-bench report`: the files it writes, atomic writes, and the CI gate against the committed reports/.

The gate's baseline is the repository's own reports/ folder, made by an earlier run and committed: never a report
this process just produced.
"""
import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hrvit_bench import gate, output, zoo
from hrvit_bench.cli import app
from hrvit_bench.errors import UsageError
from hrvit_bench.official import load_official

runner = CliRunner()
COMMITTED = Path(__file__).resolve().parents[1] / "reports"
FILES = {"models.csv", "claims.csv", "claims.md", "report.json", "params_vs_flops.png", "params_vs_flops.svg",
         "claims.png", "claims.svg", "report.record.json"}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """One full report of the zoo, gated against the committed reports (its counts stay cached in this process)."""
    out = tmp_path_factory.mktemp("reports")
    result = runner.invoke(app, ["report", "--out", str(out), "--compare", str(COMMITTED)])
    assert result.exit_code == 0, result.output
    assert f"counts and verdicts match {COMMITTED} exactly" in result.output
    return out


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def doctored(tmp_path):
    """A copy of the committed reports to doctor."""
    copy = tmp_path / "baseline"
    shutil.copytree(COMMITTED, copy)
    return copy


def gate_run(tmp_path, baseline, *extra):
    return runner.invoke(app, ["report", "--out", str(tmp_path / "new"), "--compare", str(baseline), *extra])


@pytest.mark.slow
def test_report_writes_every_file(fresh):
    assert FILES <= {p.name for p in fresh.iterdir()}
    assert not [p for p in fresh.iterdir() if p.name.startswith(".")]  # no staging left behind
    rows = {(r["model"], r["input"]): r for r in read_rows(fresh / "models.csv")}
    # Official counts (fvcore on the official code): every table row at a model and input the report has.
    official = {(o.model, zoo.format_size(o.input)): o for o in load_official()}
    matched = official.keys() & rows.keys()
    assert {("hrvit_b1", "224x224"), ("mit_b1_seg_ade20k", "512x512"), ("hrnetv2_w18", "224x224")} <= matched
    for key in matched:
        assert int(rows[key]["params"]) == official[key].params, key
        if official[key].fvcore_macs is not None:
            assert int(rows[key]["macs_all"]) == official[key].our_macs, key
    assert int(rows[("mit_b1_seg_ade20k", "512x512")]["unused_params"]) == 128 * 150 + 150  # conv_seg
    data = json.loads((fresh / "report.json").read_text())
    assert data["environment"]["wall_time_s"] > 0 and data["environment"]["torch_version"]
    assert "| claim" in (fresh / "claims.md").read_text()


@pytest.mark.slow
def test_one_mac_more_fails_the_gate_naming_the_row(fresh, tmp_path, doctored):
    rows = read_rows(doctored / "models.csv")
    target = next(r for r in rows if r["model"] == "hrvit_b1" and r["input"] == "224x224")
    target["macs_all"] = str(int(target["macs_all"]) + 1)
    write_rows(doctored / "models.csv", rows)
    result = gate_run(tmp_path, doctored)
    assert result.exit_code == 1
    assert "hrvit_b1 @ 224x224: macs_all 2,811,051,009 -> 2,811,051,008 (-1" in result.output
    assert f"hrvit-bench report --out {doctored}" in result.output
    # --fail-on-change is for measured values only: it cannot loosen an exact count.
    assert gate_run(tmp_path, doctored, "--fail-on-change", "50%").exit_code == 1


@pytest.mark.slow
def test_a_flipped_verdict_fails_the_gate_naming_the_claim(fresh, tmp_path, doctored):
    rows = read_rows(doctored / "claims.csv")
    target = next(r for r in rows if r["key"] == "ade-b1-vs-mitb1/flops@512x512")
    assert target["verdict"] == "does not hold"
    target["verdict"] = "holds"
    write_rows(doctored / "claims.csv", rows)
    result = gate_run(tmp_path, doctored)
    assert result.exit_code == 1
    assert "claim ade-b1-vs-mitb1/flops@512x512: verdict 'holds' -> 'does not hold'" in result.output


@pytest.mark.slow
def test_rows_the_baseline_lacks_fail_unless_allowed(fresh, tmp_path, doctored):
    rows = [r for r in read_rows(doctored / "models.csv") if r["model"] != "hrvit_b2"]
    write_rows(doctored / "models.csv", rows)
    result = gate_run(tmp_path, doctored)
    assert result.exit_code == 1 and "hrvit_b2 @ 224x224: new, not in the baseline" in result.output
    allowed = gate_run(tmp_path, doctored, "--allow-new")
    assert allowed.exit_code == 0 and "(allowed: --allow-new)" in allowed.output


@pytest.mark.slow
def test_a_csv_baseline_gets_advice_that_works(fresh, tmp_path):
    baseline = tmp_path / "my counts.csv"
    rows = read_rows(COMMITTED / "models.csv")
    rows[0]["params"] = str(int(rows[0]["params"]) + 1)
    write_rows(baseline, rows)
    result = gate_run(tmp_path, baseline)
    assert result.exit_code == 1 and "claim verdicts not compared" in result.output
    advice = result.output.split("baseline with `")[1].split("`")[0]
    subprocess.run(advice, shell=True, check=True)  # the command it prints works ...
    assert gate_run(tmp_path, baseline).exit_code == 0  # ... and makes the gate pass


@pytest.mark.parametrize("tolerance", ["nan", "inf", "-1%", "150%", "1.5", "half"])
def test_bad_tolerances_exit_2_before_counting(tmp_path, tolerance):
    result = runner.invoke(app, ["report", "--out", str(tmp_path / "new"), "--compare", str(COMMITTED),
                                 "--fail-on-change", tolerance])
    assert result.exit_code == 2 and "tolerance" in result.output
    assert not (tmp_path / "new").exists()


def test_tolerance_parsing_by_hand():
    assert gate.parse_tolerance("0.5%") == pytest.approx(0.005)
    assert gate.parse_tolerance("0.005") == pytest.approx(0.005)
    assert gate.parse_tolerance("100%") == 1.0 and gate.parse_tolerance("0") == 0.0


@pytest.mark.parametrize("bare, hint", [("5", "for 5% write 5% (or 0.05)"), ("1", "for 1% write 1%"),
                                        ("12.5", "for 12.5% write 12.5%")])
def test_a_bare_percentage_is_refused_with_the_sign_it_lacks(tmp_path, bare, hint):
    with pytest.raises(UsageError, match="read as a fraction") as refused:
        gate.parse_tolerance(bare)
    assert hint in str(refused.value)
    result = runner.invoke(app, ["report", "--out", str(tmp_path / "new"), "--compare", str(COMMITTED),
                                 "--fail-on-change", bare])
    assert result.exit_code == 2 and hint in result.output


@pytest.mark.parametrize("content", [None, "not,a,report\n1,2,3\n",
                                     "model,input,params,unused_params,macs_all,macs_gemm\nx,1x1,a,0,1,2\n"])
def test_missing_or_malformed_baseline_is_a_usage_error(tmp_path, content):
    if content is not None:
        (tmp_path / "models.csv").write_text(content)
    result = runner.invoke(app, ["report", "--out", str(tmp_path / "new"), "--compare", str(tmp_path)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()  # it stopped before counting anything


def test_a_baseline_folder_without_claims_csv_is_a_usage_error(tmp_path):
    """Verdicts are half the gate: a folder that lacks them must not pass with a note."""
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    shutil.copy(COMMITTED / "models.csv", baseline / "models.csv")
    result = runner.invoke(app, ["report", "--out", str(tmp_path / "new"), "--compare", str(baseline)])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "no claims.csv" in line and f"--compare {baseline / 'models.csv'}" in line
    assert not (tmp_path / "new").exists()  # refused before counting anything


def test_unwritable_out_is_refused_before_counting(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["report", "--out", str(blocker / "reports")])
    assert result.exit_code == 2 and "cannot write to --out" in result.output


def test_gate_compare_by_hand():
    base = gate.Baseline(Path("b"), {"m @ 1x1": {c: 10 for c in gate.EXACT}}, {"c/params@1x1": "holds"},
                         {"c/latency@1x1": 0.80})
    same = gate.compare(base, {"m @ 1x1": {c: 10 for c in gate.EXACT}}, {"c/params@1x1": "holds"}, {})
    assert same.failures == []
    moved = gate.compare(base, {"m @ 1x1": {**{c: 10 for c in gate.EXACT}, "params": 11}}, {"c/params@1x1": "holds"},
                         {})
    assert [(f.kind, f.column, f.before, f.after) for f in moved.failures] == [("moved", "params", 10, 11)]
    latency = {"c/latency@1x1": 0.85}  # 6.25% slower ratio
    kept = {"m @ 1x1": {c: 10 for c in gate.EXACT}}
    assert gate.compare(base, kept, {"c/params@1x1": "holds"}, latency).failures == []  # no tolerance: not gated
    assert gate.compare(base, kept, {"c/params@1x1": "holds"}, latency, 0.10).failures == []
    [late] = gate.compare(base, kept, {"c/params@1x1": "holds"}, latency, 0.05).failures
    assert late.kind == "latency" and "+6.2%" in late.describe()
    gone = gate.compare(base, {}, {}, {})
    assert {f.kind for f in gone.failures} == {"missing"}


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


@pytest.mark.slow
def test_claims_strict_exits_1_when_a_claim_does_not_hold(fresh):
    # Counts are cached by the report above; the committed claims include ones that do not hold.
    result = runner.invoke(app, ["claims", "--strict", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert any(h["verdict"] == "does not hold" for h in data["headlines"])
    assert runner.invoke(app, ["claims", "--json"]).exit_code == 0


@pytest.mark.slow
def test_a_count_unlike_the_official_code_fails_the_report_naming_it(fresh, tmp_path, monkeypatch):
    from hrvit_bench import report as reporting
    from hrvit_bench.official import OfficialCount

    rows = list(load_official())
    i = next(i for i, r in enumerate(rows) if r.model == "hrvit_b1" and r.fvcore_macs)
    rows[i] = OfficialCount(**{**rows[i].__dict__, "fvcore_macs": rows[i].fvcore_macs + 1})
    monkeypatch.setattr(reporting, "load_official", lambda: tuple(rows))
    result = runner.invoke(app, ["report", "--out", str(tmp_path / "new")])
    assert result.exit_code == 1
    assert "unlike the official code: hrvit_b1 @ 224x224" in result.output
    new = {r["model"] + " @ " + r["input"]: r for r in read_rows(tmp_path / "new" / "models.csv")}
    assert new["hrvit_b1 @ 224x224"]["equals_official"] == "False"
    assert new["hrvit_b2 @ 224x224"]["equals_official"] == "True"


@pytest.mark.slow
def test_merged_report_shards_equal_the_one_machine_report(fresh, tmp_path):
    """Three shards of the report, merged, give the files the one-machine report wrote (the counts are cached by
    the report above, so the shards cost little here; merge rebuilds every number from the records alone)."""
    shards = []
    for k in (1, 2, 3):
        result = runner.invoke(app, ["report", "--shard", f"{k}/3", "--out", str(tmp_path / f"s{k}")])
        assert result.exit_code == 0, result.output
        assert f"shard {k}/3" in result.output
        [record] = (tmp_path / f"s{k}").iterdir()
        assert record.name == f"report.shard-{k}-of-3.record.json"
        shards.append(json.loads(record.read_text()))
    models = [set(s["shard"]["items"]) for s in shards]
    assert not (models[0] & models[1] or models[0] & models[2] or models[1] & models[2])
    assert sum(map(len, models)) == shards[0]["shard"]["work_items"] == len({r["model"] for s in shards
                                                                             for r in s["rows"]})
    result = runner.invoke(app, ["merge", *(str(tmp_path / f"s{k}") for k in (1, 2, 3)), "--out",
                                 str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    for name in ("models.csv", "claims.csv", "claims.md"):
        assert (tmp_path / "m" / name).read_bytes() == (fresh / name).read_bytes(), name
    # the one-machine report's own record agrees with the shards' (a row covered twice must agree exactly)
    both = runner.invoke(app, ["merge", str(fresh), str(tmp_path / "s1"), str(tmp_path / "s2"),
                               str(tmp_path / "s3"), "--out", str(tmp_path / "b")])
    assert both.exit_code == 0, both.output
    assert "not a record, not read" in both.output and "report.json" in both.output
