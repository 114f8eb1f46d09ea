"""Does hrvit-bench's latency harness agree with torch.utils.benchmark?

For every model, input size and dtype, one run times the same callable (same model, input, dtype and threads)
with hrvit-bench's harness (``latency.time_calls``: warm-up, then per-call samples, their median) and with
``torch.utils.benchmark.Timer.blocked_autorange`` (the median of block means), for the same time budget, and
prints both medians and their ratio. They should agree within --tolerance (3%); the exit status is 1 when any
row does not.

On a shared machine the load changes from one second to the next (here the same call took 150 ms, then 200 ms
a few seconds later), so two harnesses run one after the other measure two different machines. Each repeat
therefore splits the time budget into --rounds interleaved rounds, alternating which harness goes first, and
pools each harness's rounds: our samples into one median, Timer's measurements with ``Measurement.merge``.

    python benchmarks/latency_agreement.py --threads 1          # CPU: hrvit_b1 at 224x224, fp32, 3 repeats
    python benchmarks/latency_agreement.py --device cuda        # GPU: HRViT-b1/b2/b3, MiT-B1/B2 segmentation
                                                                # at 512x512 and 1024x1024, fp32 and bf16 (~5 min)

On CUDA the harness synchronises before every call (a sample is one request's latency) while Timer runs
several calls per block when a call is short and synchronises once per block, so a launch-bound model can
come out faster under Timer: a disagreement there is information, not necessarily a bug.
On a shared machine, run when the load is low; each row records the 1-minute load average when it ran.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.benchmark import Measurement

from hrvit_bench import latency, zoo
from hrvit_bench.environment import Environment
from hrvit_bench.errors import UsageError
from hrvit_bench.latency import LatencyStats
from hrvit_bench.latency.sweep import random_input

GPU_MODELS = "hrvit_b1_seg_ade20k,hrvit_b2_seg_ade20k,hrvit_b3_seg_ade20k,mit_b1_seg_ade20k,mit_b2_seg_ade20k"
GPU_INPUTS = "512x512,1024x1024"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--models", help=f"comma list (default: hrvit_b1 on cpu; {GPU_MODELS} on cuda)")
    parser.add_argument("--inputs", help=f"comma list of HxW (default: the model's own on cpu; {GPU_INPUTS} on cuda)")
    parser.add_argument("--dtypes", help="comma list of fp32, fp16, bf16 (default: fp32 on cpu; fp32,bf16 on cuda)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, help="pinned CPU threads (default: torch's current count)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--min-time", type=float,
                        help="seconds of timed calls per repeat, for each harness (default: 12 on cpu, 2 on cuda)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, help="interleaved rounds per repeat, pooled (default: 12 cpu, 4 cuda)")
    parser.add_argument("--tolerance", type=float, default=0.03, help="largest |ours / Timer - 1| that agrees")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.models = (args.models or (GPU_MODELS if cuda else "hrvit_b1")).split(",")
    args.inputs = latency.parse_sizes(args.inputs or (GPU_INPUTS if cuda else None))
    args.dtypes = (args.dtypes or ("fp32,bf16" if cuda else "fp32")).split(",")
    args.min_time = args.min_time or (2.0 if cuda else 12.0)
    args.rounds = args.rounds or (4 if cuda else 12)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rows, environment = [], None
    for dtype in args.dtypes:
        settings = latency.LatencySettings(
            device=args.device, dtype=dtype, warmup=args.warmup, min_time=args.min_time, threads=args.threads,
        )
        latency.preflight(settings)
        with latency.pinned(settings):
            environment = environment or Environment.capture(settings.torch_device, dtype)
            for name in args.models:
                info = zoo.info(name)
                model = latency.prepare(zoo.build(name, device=settings.device), settings)
                for size in args.inputs:
                    shape = zoo.input_shape(info, size, args.batch_size)
                    for repeat in range(1, args.repeats + 1):
                        row = {"model": name, "input": f"{shape[2]}x{shape[3]}", "batch_size": shape[0],
                               "dtype": dtype, "threads": settings.threads, "repeat": repeat, "rounds": args.rounds}
                        row.update(measure_pair(model, shape, settings, args.rounds))
                        row["load_1min"] = round(os.getloadavg()[0], 2)
                        rows.append(row)
                del model
                if settings.torch_device.type == "cuda":
                    torch.cuda.empty_cache()
    failed = [r for r in rows if r["ratio"] is not None and abs(r["ratio"] - 1) > args.tolerance]
    if args.json:
        print(json.dumps({"environment": environment.to_dict(), "tolerance": args.tolerance, "rows": rows}, indent=2))
    else:
        show(rows, environment, args.tolerance)
    return 1 if failed else 0


def measure_pair(model, shape, settings: latency.LatencySettings, rounds: int) -> dict:
    """Both medians of one callable over interleaved rounds; an out-of-memory gives status "oom" and no numbers."""
    device = settings.torch_device
    budget = settings.min_time / rounds
    samples, measurements = [], []
    try:
        with torch.inference_mode():
            x = random_input(shape, settings)
            step = latency.make_step(model, x, settings)
            for i in range(rounds):
                for harness in ("ours", "timer") if i % 2 == 0 else ("timer", "ours"):
                    if harness == "ours":
                        warmup = settings.warmup if i == 0 else 0
                        samples += latency.time_calls(step, device, warmup, min_time=budget)
                    else:
                        measurements.append(latency.reference_timing(step, settings.threads, budget))
    except Exception as exc:
        if not latency.is_out_of_memory(exc):
            raise
        return {"status": "oom", "ours_median_ms": None, "ours_samples": None, "timer_median_ms": None,
                "ratio": None}
    stats = LatencyStats.from_samples(samples)
    [merged] = Measurement.merge(measurements)
    timer_ms = merged.median * 1e3
    return {"status": "ok", "ours_median_ms": stats.median_ms, "ours_samples": stats.n, "timer_median_ms": timer_ms,
            "timer_blocks": len(merged.times), "ratio": stats.median_ms / timer_ms}


def show(rows: list[dict], environment: Environment, tolerance: float) -> None:
    table = Table(title="hrvit-bench harness vs torch.utils.benchmark Timer.blocked_autorange (medians)",
                  caption=environment.summary())
    for col in ("model", "input", "dtype", "threads", "repeat", "ours ms", "n", "Timer ms", "blocks", "ours/Timer",
                f"within {tolerance:.0%}", "load"):
        table.add_column(col, justify="left" if col in ("model", "input", "dtype") else "right")
    for r in rows:
        if r["status"] != "ok":
            table.add_row(r["model"], r["input"], r["dtype"], str(r["threads"]), str(r["repeat"]),
                          r["status"].upper(), "", "", "", "", "", f"{r['load_1min']:.2f}")
            continue
        agree = abs(r["ratio"] - 1) <= tolerance
        table.add_row(
            r["model"], r["input"], r["dtype"], str(r["threads"]), str(r["repeat"]), f"{r['ours_median_ms']:.3f}",
            str(r["ours_samples"]), f"{r['timer_median_ms']:.3f}", str(r["timer_blocks"]), f"{r['ratio']:.4f}",
            "yes" if agree else "[red]NO[/red]", f"{r['load_1min']:.2f}",
        )
    Console(width=None if sys.stdout.isatty() else 140).print(table)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
