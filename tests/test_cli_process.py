"""The CLI as a real process meets it: `python -m`, pipes closed early, the terminal width, Ctrl-C."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import hrvit_bench_models as models
from hrvit_bench import __version__, output

CLI = f"{sys.executable} -m hrvit_bench"


def cli(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hrvit_bench", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)


@pytest.mark.parametrize("module", ["hrvit_bench", "hrvit_bench.cli"])
def test_python_dash_m_runs_the_cli(module):
    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"hrvit-bench {__version__}\n", "")
    done = subprocess.run([sys.executable, "-m", module, "list", "--family", "mit", "--json"], capture_output=True,
                          text=True)
    assert done.returncode == 0 and len(json.loads(done.stdout)) == len(models.list_models(family="mit"))


@pytest.mark.parametrize("pipeline", [
    "list | head -2",
    "list --json | head -1",  # ~90 kB: more than a pipe holds, so the write meets the closed pipe
    "list --csv | true",  # the reader leaves before the first byte
    "--help | head -3",  # typer writes the help in several pieces
    "params -m mit_b0 --depth 3 | head -1",
])
def test_a_reader_that_closes_the_pipe_early_is_no_failure(pipeline):
    command, reader = pipeline.split(" | ")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", f"{CLI} {command} | {reader}"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no "Exception ignored ... BrokenPipeError" at interpreter exit
    assert done.stdout.strip() or reader == "true"


def test_piped_output_takes_columns_from_the_environment(monkeypatch):
    for value, width in (("72", 72), (" 90 ", 90), ("0", 160), ("wide", 160), ("", 160)):
        monkeypatch.setenv("COLUMNS", value)
        assert output.piped_width() == width, value
    monkeypatch.delenv("COLUMNS")
    assert output.piped_width() == 160


def test_list_at_60_columns_keeps_every_name_whole():
    names = models.list_models()
    done = cli("list", env={"COLUMNS": "60"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(map(len, lines)) <= 60
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.split() and line.split()[0] in names}
    assert sorted(rows) == names  # every name whole, one per row
    assert all(cells[0] in ("cls", "seg", "backbone") for cells in rows.values())  # the task still fits
    assert "left out at 60 columns: dataset, classes, input, attention" in " ".join(done.stdout.split())


def test_piped_list_without_columns_is_160_wide_and_shows_every_column():
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run([sys.executable, "-m", "hrvit_bench", "list", "hrvit_b1_*"], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if line.lstrip().startswith("name"))
    assert header.split() == ["name", "task", "dataset", "classes", "input", "attention"]
    assert "left out" not in done.stdout
    assert max(map(len, done.stdout.splitlines())) <= 160


def _children(pid: int) -> list[str]:
    return open(f"/proc/{pid}/task/{pid}/children").read().split()


@pytest.mark.slow
@pytest.mark.parametrize("to", ["the main process", "the process group (Ctrl-C)"])
def test_sigint_while_the_report_counts_in_workers_is_one_line_and_exit_130(tmp_path, to):
    out = tmp_path / "reports"
    report = subprocess.Popen([sys.executable, "-m", "hrvit_bench", "report", "--out", str(out), "--jobs", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(_children(report.pid)) < 2:  # the counting pool has started
            assert report.poll() is None and time.monotonic() < deadline, report.communicate()
            time.sleep(0.1)
        time.sleep(0.5)  # the workers are counting
        if to == "the main process":
            os.kill(report.pid, signal.SIGINT)
        else:
            os.killpg(report.pid, signal.SIGINT)
        stdout, stderr = report.communicate(timeout=120)
    finally:
        if report.poll() is None:
            os.killpg(report.pid, signal.SIGKILL)
    assert (report.returncode, stderr) == (130, "error: interrupted\n")
    assert stdout == "" and not out.exists()  # nothing written: the previous report stays whole
