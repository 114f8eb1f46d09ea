"""Start-up: help, the version and `list` answer without importing torch (nor pandas, numpy, fvcore, thop or
matplotlib), each checked in a fresh interpreter, as a shell runs them. benchmarks/startup.md has the timings."""
import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "pandas", "numpy", "fvcore", "thop", "matplotlib")
COMMANDS = ("list", "params", "flops", "latency", "profile", "claims", "report", "merge")

# The command runs through the console entry point in-process; an atexit hook reports what was imported.
PROBE = """
import atexit, json, sys
heavy, report = json.loads(sys.argv[1]), sys.argv[2]
def imported():
    with open(report, "w") as out:
        json.dump(sorted(m for m in heavy if m in sys.modules), out)
atexit.register(imported)
sys.argv = ["hrvit-bench", *json.loads(sys.argv[3])]
from hrvit_bench.cli import main
main()
"""


def heavy_imports(tmp_path, args) -> tuple[list[str], subprocess.CompletedProcess]:
    report = tmp_path / "imported.json"
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY), str(report), json.dumps(args)],
                          capture_output=True, text=True)
    return json.loads(report.read_text()), done


@pytest.mark.parametrize("args", [
    [], ["--help"], ["-h"], ["--version"],
    *([command, flag] for command in COMMANDS for flag in ("-h", "--help")),
    ["list"], ["list", "--json"], ["list", "--csv"], ["list", "hrvit_b1*", "--family", "hrvit", "--task", "seg"],
    ["list", "--task", "detection"],
], ids=lambda args: " ".join(args) or "(no arguments)")
def test_help_version_and_list_import_nothing_heavy(tmp_path, args):
    imported, done = heavy_imports(tmp_path, args)
    assert done.returncode == (2 if "detection" in args else 0), done.stderr
    assert done.stdout.strip() or done.stderr.startswith("error:")
    assert imported == []


def test_the_probe_sees_torch_when_a_command_needs_it(tmp_path):
    """The same probe on a command that builds a model: it must report torch, or the test above proves nothing."""
    imported, done = heavy_imports(tmp_path, ["params", "-m", "mit_b0", "--json"])
    assert done.returncode == 0, done.stderr
    assert "torch" in imported and json.loads(done.stdout)[0]["params"] > 0
