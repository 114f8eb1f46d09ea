"""How much faster the meta engine counts an outside model than fvcore on real tensors, and whether they agree.

For each timm model of hrvit_bench/data/timm_published.csv, at its published input (224x224 but for two) and batch 1:
the meta engine (build on the
meta device, count on shapes) against fvcore itself (build on the CPU with real weights, trace real tensors), each
the median of --repeats runs after one untimed warm-up count. Needs the timm venv (README, "Any model").

    . .venv-timm/bin/activate && python benchmarks/outside_counting.py > benchmarks/outside_counting.md
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from hrvit_bench import counting, zoo
from hrvit_bench.published import read_data

def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure(spec: str, size: tuple[int, int], engine: str, repeats: int) -> tuple[float, float, dict]:
    """Median build seconds, median count seconds, and the counts by operator."""
    device = "meta" if engine == "meta" else "cpu"
    builds, counts, result = [], [], None
    for _ in range(repeats):
        build_s, model = timed(lambda: zoo.build(spec, device))
        count_s, result = timed(lambda: counting.count(model, (1, 3, *size), engine=engine, name=spec))
        builds.append(build_s)
        counts.append(count_s)
    return statistics.median(builds), statistics.median(counts), result.by_operator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    plans = [(f"timm:{row['model']}", zoo.parse_size(row["input"])) for row in read_data("timm_published.csv")]
    for spec, _ in plans:
        zoo.resolve([spec])  # import timm and check every spec before timing anything
    measure("timm:resnet18", (224, 224), "meta", 1)  # warm torch's lazily built meta kernels and fvcore's imports
    measure("timm:resnet18", (224, 224), "fvcore", 1)
    rows, ratios = [], []
    for spec, size in plans:
        meta_build, meta_count, meta_ops = measure(spec, size, "meta", args.repeats)
        real_build, real_count, real_ops = measure(spec, size, "fvcore", args.repeats)
        ratio = real_count / meta_count
        ratios.append(ratio)
        rows.append(f"| {spec} | {zoo.format_size(size)} | {meta_build:.3f} | {meta_count:.3f} | {real_build:.3f} | "
                    f"{real_count:.3f} | "
                    f"{ratio:.1f}x | {(real_build + real_count) / (meta_build + meta_count):.1f}x | "
                    f"{'yes' if meta_ops == real_ops else 'NO'} | {sum(meta_ops.values()):,} |")
    print("# Counting outside models: meta engine against fvcore on real tensors\n")
    print("timm models of `hrvit_bench/data/timm_published.csv` at batch 1 and the published input; seconds, "
          f"median of {args.repeats} runs after a warm-up. *count*: `count_macs` alone; *build*: `zoo.build` "
          "(meta: no memory, no weight init; CPU: real weights). Equal: the two engines' MACs by operator are "
          "identical.\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared with other work), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f} at the end. "
          "Produced by `python benchmarks/outside_counting.py` in the timm venv.\n")
    print("| model | input | meta build s | meta count s | CPU build s | fvcore count s | count speed-up | "
          "build+count speed-up | equal | MACs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    print("\n".join(rows))
    print(f"\nCount speed-up: smallest {min(ratios):.1f}x, median {statistics.median(ratios):.1f}x.")


if __name__ == "__main__":
    main()
