"""How fast the light commands start: `--help`, `--version`, `-h`, `list`, against `python -c "import torch"`.

Every round runs each command line once, in a fresh interpreter, the order flipped every round (as `latency
--interleave` does), so a shared machine's changing load falls on all of them alike; each gets the median wall time
of its rounds and its ratio to torch's import in the same rounds. The CPU time (user + system, of the process and
its children) is also given: on a busy machine it is what the command costs, where wall time also holds the waits
for a core. The CLI runs through its console entry point,
``hrvit_bench.cli.main``; ``--tree DIR`` puts another checkout's code first on the path (``before`` below: the
commit before the start-up work, ``git archive b07cb05 hrvit_bench models``, models/ renamed hrvit_bench_models).

    python benchmarks/startup.py --rounds 15 > benchmarks/startup.md
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CLI = "import sys; from hrvit_bench.cli import main; sys.argv[0] = 'hrvit-bench'; main()"
COMMANDS = [["--help"], ["--version"], ["flops", "-h"], ["latency", "--help"], ["list"], ["list", "--json"],
            ["list", "--csv"], ["list", "hrvit_b1*", "--task", "seg"]]
TORCH = 'python -c "import torch"'


def lines(tree: str | None) -> dict[str, list[str]]:
    out = {TORCH: [sys.executable, "-c", "import torch"], 'python -c "pass"': [sys.executable, "-c", "pass"]}
    for args in COMMANDS:
        out["hrvit-bench " + " ".join(args)] = [sys.executable, "-c", CLI, *args]
    return out


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tree", help="a checkout to run instead of the installed hrvit-bench")
    args = parser.parse_args()
    env = dict(os.environ, **({"PYTHONPATH": args.tree} if args.tree else {}))
    commands = lines(args.tree)
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    load_before = os.getloadavg()
    cwd = tempfile.mkdtemp()  # not the checkout: `python -c` puts the working directory first on the path
    for round_ in range(args.rounds):
        order = list(commands) if round_ % 2 == 0 else list(reversed(commands))
        for name in order:
            used = _children_cpu_s()
            start = time.perf_counter()
            subprocess.run(commands[name], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=True)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(_children_cpu_s() - used)
    load_after = os.getloadavg()
    torch_s, torch_cpu = statistics.median(times[TORCH]), statistics.median(cpu[TORCH])
    print(f"| command | wall s (median) | wall s (min) | wall / torch's | CPU s (median) | CPU / torch's |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, samples in times.items():
        median, busy = statistics.median(samples), statistics.median(cpu[name])
        print(f"| `{name}` | {median:.3f} | {min(samples):.3f} | {median / torch_s:.2f}x | {busy:.3f} | "
              f"{busy / torch_cpu:.2f}x |")
    print(f"\n{args.rounds} interleaved rounds; {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after.")


if __name__ == "__main__":
    main()
