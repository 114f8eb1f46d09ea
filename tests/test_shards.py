"""`--shard K/N`, result records and `hrvit-bench merge`, on toy models whose counts are known by hand.

The full round trip (three shards of `hrvit-bench report` merged, equal to one machine's report) takes about as
long as one report, so it runs in CI (.ci/run), not here.
"""
import csv
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import hrvit_bench_models as models
from hrvit_bench import records
from hrvit_bench.cli import app
from hrvit_bench.conventions import ALL_CONVENTIONS
from hrvit_bench.errors import UsageError
from hrvit_bench.merge import device_labels
from hrvit_bench.shards import Shard, fingerprint
from toy import ToyNet, toy_macs

runner = CliRunner()
CLASSES = {"toy_shard_a": 10, "toy_shard_b": 3, "toy_shard_c": 7, "toy_shard_d": 5, "toy_shard_e": 12}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def toys():
    """Five toy models that differ only in their classifier width, so each has its own hand-made count."""
    for name, classes in CLASSES.items():
        models.register_model(family="toy", variant=name[-1], task="classification", dataset="imagenet",
                              num_classes=classes, input_size=(16, 16), reference="hand arithmetic",
                              official_code="tests/toy.py", input_multiple=2, name=name)(
            lambda classes=classes, **overrides: ToyNet(num_classes=classes, **overrides))
    yield sorted(CLASSES)
    for name in CLASSES:
        models.unregister_model(name)


def flops_shards(tmp_path, n, *extra):
    paths = []
    for k in range(1, n + 1):
        result = run("flops", "-m", "toy_shard_*", "--no-cross-check", "--shard", f"{k}/{n}", "--out",
                     tmp_path / f"s{k}.json", "--json", *extra)
        assert result.exit_code == 0, result.output
        paths.append(tmp_path / f"s{k}.json")
    return paths


# ----------------------------------------------------------------------------------------------------------------
# Sharding.

@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.text(min_size=1, max_size=6), max_size=40), count=st.integers(1, 12),
       seed=st.randoms(use_true_random=False))
def test_shards_cover_every_item_exactly_once_whatever_the_order(items, count, seed):
    shuffled = list(items)
    seed.shuffle(shuffled)
    slices = [Shard(k, count).select(items) for k in range(1, count + 1)]
    # exactly once: the slices' lengths add up to the distinct items, and together they are all of them
    assert sum(len(s) for s in slices) == len(set(items))
    assert set().union(*map(set, slices)) == set(items)
    assert max(map(len, slices)) - min(map(len, slices)) <= 1  # balanced
    # stable: another machine with the items in another order cuts the same shards
    assert [Shard(k, count).select(shuffled) for k in range(1, count + 1)] == slices
    assert fingerprint(shuffled) == fingerprint(items)


def test_round_robin_by_hand():
    names = ["e", "a", "d", "b", "c", "a"]
    assert [Shard(k, 2).select(names) for k in (1, 2)] == [["a", "c", "e"], ["b", "d"]]
    assert Shard(3, 3).select(["x"]) == []  # more shards than items: the extra ones are empty


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "a/b", "3", "-1/2"])
def test_bad_shards_are_usage_errors(text):
    with pytest.raises(UsageError):
        Shard.parse(text)
    result = run("flops", "-m", "hrvit_b1", "--shard", text)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "--shard" in result.output


# ----------------------------------------------------------------------------------------------------------------
# Records.

def test_flops_record_carries_schema_settings_environment_shard_and_rows(toys, tmp_path):
    s1, s2 = flops_shards(tmp_path, 2)
    data = json.loads(s1.read_text())
    assert data["schema"] == records.SCHEMA and data["schema_version"] == records.VERSION
    assert data["command"] == "flops" and data["settings"]["engine"] == "meta"
    assert data["environment"]["torch_version"] and data["environment"]["device"] == "cpu"
    assert data["shard"]["index"] == 1 and data["shard"]["count"] == 2 and data["shard"]["work_items"] == 5
    assert data["shard"]["items"] == ["toy_shard_a", "toy_shard_c", "toy_shard_e"]
    assert [r["model"] for r in data["rows"]] == data["shard"]["items"]
    row = data["rows"][1]
    assert row["macs_by_operator"] == toy_macs(1, 16, 16, CLASSES["toy_shard_c"])


def test_report_count_rows_round_trip_under_every_convention(toy_model):
    from hrvit_bench.count_cache import CountCache
    from hrvit_bench.counting import MacCount

    count = CountCache("meta", {}).get(toy_model, (20, 30))
    again = MacCount.from_dict(json.loads(json.dumps(count.to_dict())))
    macs = toy_macs(1, 20, 30)
    for convention in ALL_CONVENTIONS:
        assert again.total(convention) == count.total(convention)
    assert again.total(ALL_CONVENTIONS[0]) == sum(macs.values())
    assert (again.params, again.unused_params) == (count.params, count.unused_params)
    assert again.input_shape == (1, 3, 20, 30) and again.coverage == count.coverage


@pytest.mark.parametrize("version, word", [(0, "older"), (records.VERSION + 1, "newer"), ("1", "no integer")])
def test_other_schema_versions_are_refused_in_one_line(toys, tmp_path, version, word):
    [path] = flops_shards(tmp_path, 1)
    data = json.loads(path.read_text())
    data["schema_version"] = version
    path.write_text(json.dumps(data))
    result = run("merge", path, "--out", tmp_path / "m")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and word in result.output and str(path) in result.output


def test_files_that_are_not_records_are_refused(tmp_path):
    (tmp_path / "x.json").write_text('{"models": []}')
    (tmp_path / "y.json").write_text("not json")
    for name, says in (("x.json", "not an hrvit-bench record"), ("y.json", "is not JSON")):
        result = run("merge", tmp_path / name, "--out", tmp_path / "m")
        assert result.exit_code == 2 and says in result.output
    result = run("merge", tmp_path, "--out", tmp_path / "m")  # a folder without a *.record.json
    assert result.exit_code == 2 and "no hrvit-bench record" in result.output


# ----------------------------------------------------------------------------------------------------------------
# Merge.

def test_merged_flops_shards_equal_the_single_run_and_hand_arithmetic(toys, tmp_path):
    shards = flops_shards(tmp_path, 3)
    whole = run("flops", "-m", "toy_shard_*", "--no-cross-check", "--out", tmp_path / "whole", "--json")
    assert whole.exit_code == 0, whole.output
    assert (tmp_path / "whole" / "flops.record.json").is_file()
    merged = run("merge", *shards, "--out", tmp_path / "m")
    assert merged.exit_code == 0, merged.output
    single = run("merge", tmp_path / "whole", "--out", tmp_path / "w")
    assert single.exit_code == 0, single.output
    assert (tmp_path / "m" / "flops.csv").read_text() == (tmp_path / "w" / "flops.csv").read_text()
    rows = {r["model"]: r for r in read_csv(tmp_path / "m" / "flops.csv")}
    assert sorted(rows) == toys
    for name, classes in CLASSES.items():
        assert int(rows[name]["macs_all"]) == sum(toy_macs(1, 16, 16, classes).values())
    both = run("merge", *shards, tmp_path / "whole", "--out", tmp_path / "b")  # overlapping records that agree
    assert both.exit_code == 0, both.output


def test_an_empty_shard_still_counts_toward_completeness(toys, tmp_path):
    shards = flops_shards(tmp_path, 7)  # five models, seven shards: 6/7 and 7/7 are empty
    assert json.loads(shards[6].read_text())["rows"] == []
    result = run("merge", *shards, "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert len(read_csv(tmp_path / "m" / "flops.csv")) == 5


def test_a_missing_shard_fails_naming_it(toys, tmp_path):
    s1, s2, s3 = flops_shards(tmp_path, 3)
    result = run("merge", s1, s3, "--out", tmp_path / "m")
    assert result.exit_code == 2
    assert "missing shard 2/3" in result.output and str(s1) in result.output and str(s3) in result.output
    assert not (tmp_path / "m" / "flops.csv").exists()


def test_shards_of_different_work_lists_are_refused(toys, tmp_path):
    s1, _ = flops_shards(tmp_path, 2)
    other = run("flops", "-m", "toy_shard_[abc]", "--no-cross-check", "--shard", "2/2", "--out", tmp_path / "o.json")
    assert other.exit_code == 0, other.output
    result = run("merge", s1, tmp_path / "o.json", "--out", tmp_path / "m")
    assert result.exit_code == 2 and "cut differently" in result.output


def test_conflicting_counts_fail_naming_both_sources(toys, tmp_path):
    shards = flops_shards(tmp_path, 2)
    doctored = tmp_path / "doctored.json"
    data = json.loads(shards[0].read_text())
    data["shard"] = None
    data["rows"][0]["macs_by_operator"]["conv"] += 1
    doctored.write_text(json.dumps(data))
    result = run("merge", *shards, doctored, "--out", tmp_path / "m")
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "counts disagree" in line and "toy_shard_a" in line
    assert str(shards[0]) in line and str(doctored) in line


def test_report_records_that_lack_counts_are_refused(tmp_path):
    record = records.Record("report", {"engine": "meta"}, [], {"device": "cpu"})
    path = record.write(tmp_path)
    result = run("merge", path, "--out", tmp_path / "m")
    assert result.exit_code == 2 and "lack" in result.output and "counts a report needs" in result.output


def test_report_shard_names_its_models_on_stderr_as_flops_does(tmp_path):
    result = run("report", "--shard", "2/40", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    [record] = tmp_path.iterdir()
    mine = json.loads(record.read_text())["shard"]["items"]
    total = len(set(models.list_models()))
    assert result.stderr.splitlines()[0] == f"shard 2/40: {len(mine)} of {total} models ({', '.join(mine)})"
    assert "shard 2/40" not in result.stdout  # stdout: what was counted and written
    assert result.stdout.startswith(f"counted {len(json.loads(record.read_text())['rows'])} (model, input) rows of "
                                    f"{len(mine)} models") and str(record) in result.stdout


def test_report_shard_refuses_the_gate(tmp_path):
    result = run("report", "--shard", "1/3", "--out", tmp_path, "--compare", "reports")
    assert result.exit_code == 2 and "--shard" in result.output


def test_report_shard_needs_a_folder_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    for args in ([], ["--out", "reports"]):
        result = run("report", "--shard", "1/3", *args)
        assert result.exit_code == 2 and "--out DIR" in result.output, result.output
    assert list((tmp_path / "reports").iterdir()) == []


@pytest.mark.slow
def test_latency_from_two_setups_gives_one_cross_device_table_and_plot(toys, tmp_path):
    common = ["latency", "-m", "toy_shard_a", "-m", "toy_shard_b", "--iters", "5", "--warmup", "1", "--threads", "1",
              "--csv"]
    for k in (1, 2):
        result = run(*common, "--shard", f"{k}/2", "--out", tmp_path / "plain")
        assert result.exit_code == 0, result.output
    result = run(*common, "--channels-last", "--out", tmp_path / "nhwc.json")
    assert result.exit_code == 0, result.output
    merged = run("merge", tmp_path / "plain", tmp_path / "nhwc.json", "--out", tmp_path / "m",
                 "--reference", "channels-last")
    assert merged.exit_code == 0, merged.output
    out = tmp_path / "m"
    assert {"cross_device.csv", "cross_device.md", "latency.csv", "latency_vs_flops_by_device.png",
            "latency_vs_flops_by_device.svg", "merge.json"} <= {p.name for p in out.iterdir()}
    rows = read_csv(out / "cross_device.csv")
    assert [r["model"] for r in rows] == ["toy_shard_a", "toy_shard_b"]
    plain, nhwc = [c for c in rows[0] if c.startswith("median_ms[")]
    assert "channels-last" in nhwc and "channels-last" not in plain
    ratio = f"ratio[{plain[10:-1]} / {nhwc[10:-1]}]"
    for r in rows:
        assert float(r[ratio]) == pytest.approx(float(r[plain]) / float(r[nhwc]))
        assert float(r["gmacs"]) == pytest.approx(sum(toy_macs(1, 16, 16, CLASSES[r["model"]]).values()) / 1e9)
    assert len(read_csv(out / "latency.csv")) == 4  # two models on two setups, each row kept
    printed = run("merge", tmp_path / "plain", tmp_path / "nhwc.json", "--out", tmp_path / "m2", "--csv",
                  "--reference", "channels-last")
    assert printed.exit_code == 0 and printed.stdout == (out / "cross_device.csv").read_text()


@pytest.mark.slow
def test_timing_the_same_point_twice_on_one_device_is_refused(toys, tmp_path):
    common = ["latency", "-m", "toy_shard_a", "--iters", "5", "--warmup", "1", "--threads", "1", "--csv", "--out"]
    for name in ("a.json", "b.json"):
        assert run(*common, tmp_path / name).exit_code == 0
    result = run("merge", tmp_path / "a.json", tmp_path / "b.json", "--out", tmp_path / "m")
    assert result.exit_code == 2 and "timed twice" in result.output


def test_device_labels_name_only_what_differs():
    cpu1 = ("AMD EPYC", "cpu", "fp32", 1, False, False, False)
    cpu4 = ("AMD EPYC", "cpu", "fp32", 4, False, False, False)
    gpu = ("NVIDIA H100", "cuda", "fp32", 16, False, False, False)
    gpu_bf16 = ("NVIDIA H100", "cuda", "bf16", 16, False, False, False)
    assert device_labels([cpu1, cpu4]) == {cpu1: "AMD EPYC, 1 thread", cpu4: "AMD EPYC, 4 threads"}
    assert device_labels([gpu, gpu_bf16]) == {gpu: "NVIDIA H100, fp32", gpu_bf16: "NVIDIA H100, bf16"}
    assert device_labels([gpu]) == {gpu: "NVIDIA H100"}


def test_params_records_merge_into_params_csv(toy_model, tmp_path):
    from toy import TOY_PARAMS, TOY_UNUSED

    result = run("params", "-m", toy_model, "--json", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "params.record.json").read_text())["rows"][0]["params"] == TOY_PARAMS
    merged = run("merge", tmp_path / "params.record.json", tmp_path, "--out", tmp_path / "m")  # the same file twice
    assert merged.exit_code == 0, merged.output
    [row] = read_csv(tmp_path / "m" / "params.csv")
    assert (int(row["params"]), int(row["unused_params"])) == (TOY_PARAMS, TOY_UNUSED)


def _record(tmp_path, command, rows):
    path = tmp_path / f"{command}.record.json"
    path.write_text(json.dumps({"schema": records.SCHEMA, "schema_version": records.VERSION, "command": command,
                                "settings": {}, "environment": {}, "rows": rows}))
    return path


def _point(**stats):
    return {"input_size": [16, 16], "batch_size": 1, "status": "ok", "latency_ms": {"n": 5, **stats}}


@pytest.mark.parametrize("command, rows, problem", [
    ("flops", [{"foo": 1}], "row 1: model is missing"),
    ("params", [{"foo": 1}], "row 1: model is missing"),
    ("report", [{"foo": 1}], "row 1: model is missing"),
    ("latency", [{"foo": 1}], "row 1: model is missing"),
    ("latency", ["junk"], "row 1: the row is str, not an object"),
    ("params", [{"model": "m", "params": "many", "trainable_params": 1, "unused_params": 0}],
     "row 1 (m): params is 'many', not an integer"),
    ("params", [{"model": "m", "params": True, "trainable_params": 1, "unused_params": 0}],
     "row 1 (m): params is True, not an integer"),
    ("latency", [{"model": "m", "points": [_point(median_ms=3.5)]},
                 {"model": "n", "points": [_point(median_ms="fast")]}],
     "row 2 (n): point 1: latency_ms.median_ms is 'fast', not a number"),
    ("latency", [{"model": "m", "points": [{"input_size": [16, 16], "status": "ok"}]}],
     "row 1 (m): point 1: batch_size is missing"),
])
def test_records_with_malformed_rows_are_refused_naming_file_row_and_field(tmp_path, command, rows, problem):
    path = _record(tmp_path, command, rows)
    result = run("merge", path, "--out", tmp_path / "m")
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert line == f"error: {path}: malformed record: {problem}"
    assert not (tmp_path / "m").exists()


def test_an_out_of_memory_point_without_statistics_is_a_wellformed_row(tmp_path):
    oom = {"input_size": [16, 16], "batch_size": 8, "status": "oom", "latency_ms": None, "flops": None}
    records.check_rows("latency", [{"model": "m", "points": [_point(median_ms=2.0, p90_ms=None), oom]}], "x.json")
