"""Start-up: help, the version and `list` answer without importing torch (nor pandas, numpy, fvcore, thop or
matplotlib). benchmarks/startup.md has the timings.

The command lines run one after another in one fresh interpreter, through the console entry point, and after each
the test looks at sys.modules: a heavy module is there for good once imported, so the first command line that
imports one is named, exactly as a fresh interpreter per command line would name it.
"""
import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "pandas", "numpy", "fvcore", "thop", "matplotlib")
COMMANDS = ("list", "params", "flops", "latency", "profile", "claims", "report", "merge")
LIGHT = [
    [], ["--help"], ["-h"], ["--version"],
    *([command, flag] for command in COMMANDS for flag in ("-h", "--help")),
    ["list"], ["list", "--json"], ["list", "--csv"], ["list", "hrvit_b1*", "--family", "hrvit", "--task", "seg"],
    ["list", "--task", "detection"],  # a usage error
]

PROBE = """
import json, sys
from hrvit_bench.cli import main
heavy, report = json.loads(sys.argv[1]), sys.argv[2]
seen = []
for args in json.loads(sys.argv[3]):
    sys.argv = ["hrvit-bench", *args]
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    sys.stdout.flush()
    seen.append([args, code, sorted(m for m in heavy if m in sys.modules)])
with open(report, "w") as out:
    json.dump(seen, out)
"""


def run_in_one_interpreter(tmp_path, command_lines):
    report = tmp_path / "imported.json"
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY), str(report), json.dumps(command_lines)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(report.read_text()), done


def test_help_version_and_list_import_nothing_heavy(tmp_path):
    seen, done = run_in_one_interpreter(tmp_path, LIGHT)
    assert [args for args, _, _ in seen] == LIGHT
    for args, code, imported in seen:
        assert code == (2 if "detection" in args else 0), args
        assert imported == [], f"hrvit-bench {' '.join(args)} imported {', '.join(imported)}"
    assert "Usage" in done.stdout and "hrvit_b1_seg_ade20k" in done.stdout
    [error] = done.stderr.strip().splitlines()
    assert error.startswith("error: unknown task 'detection'")


@pytest.mark.slow
def test_the_probe_sees_torch_once_a_command_builds_a_model(tmp_path):
    """The probe must report torch where a command needs it, or the test above proves nothing."""
    seen, _ = run_in_one_interpreter(tmp_path, [["list", "--json"], ["params", "-m", "mit_b0", "--json"]])
    assert [(code, "torch" in imported) for _, code, imported in seen] == [(0, False), (0, True)]
