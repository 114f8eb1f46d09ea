"""`latency` and `profile`: the timed commands."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from .. import output, zoo
from ..conventions import CONVENTION_NAMES, DEFAULT
from ..errors import UsageError
from ..output import check_writable
from .common import (DEFAULT_MODELS, By, CsvOpt, JsonOpt, ModelOpt, RecordOpt, ShardOpt, ThreadsOpt, check_record,
                     command, emit, error, output_format, progress, shard_of, warn, write_record)


@command
def latency(
    model: ModelOpt = DEFAULT_MODELS,
    device: Annotated[str, typer.Option(help="cpu or cuda (cuda:N for another GPU).")] = "cpu",
    input: Annotated[
        Optional[str], typer.Option("--input", "-i", help="HxW, or a comma list to sweep; default: the model's own.")
    ] = None,
    batch_size: Annotated[
        str, typer.Option("--batch-size", "-b", help="Images per forward, or a comma list to sweep.")
    ] = "1",
    dtype: Annotated[str, typer.Option(help="fp32, fp16 or bf16 (weights and input).")] = "fp32",
    channels_last: Annotated[bool, typer.Option("--channels-last", help="NHWC memory format.")] = False,
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile (inductor), compiled in the warm-up.")
    ] = False,
    cuda_graphs: Annotated[
        bool, typer.Option("--cuda-graphs", help="Replay one captured CUDA graph per call.")
    ] = False,
    warmup: Annotated[int, typer.Option(help="Untimed calls before timing.")] = 5,
    iters: Annotated[
        Optional[int], typer.Option(help="Timed calls, or rounds with --interleave (default: --min-time 1).")
    ] = None,
    min_time: Annotated[
        Optional[float], typer.Option("--min-time", help="Time calls until this many seconds (at least 5 calls).")
    ] = None,
    threads: ThreadsOpt = None,
    cross_check: Annotated[
        bool, typer.Option("--cross-check", help="Also time with torch.utils.benchmark's blocked_autorange.")
    ] = False,
    interleave: Annotated[
        bool, typer.Option("--interleave", help="A/B: time the models in alternating rounds (order flipped every "
                           "round); medians with 95% bootstrap intervals and ratios to the first model.")
    ] = False,
    shard: ShardOpt = None,
    out: RecordOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
):
    """Latency per forward (median, p90, p99, IQR, CV), throughput, memory and achieved TFLOP/s, with the machine."""
    from .. import latency as harness

    output_format(as_json, as_csv)
    settings = harness.LatencySettings(
        device=device, dtype=dtype, channels_last=channels_last, compile=compile, cuda_graphs=cuda_graphs,
        warmup=warmup, iters=iters, min_time=min_time, threads=threads, cross_check=cross_check,
    )
    sizes, batch_sizes = harness.parse_sizes(input), harness.parse_batch_sizes(batch_size)
    names = [i.name for i in zoo.resolve(model)]
    zoo.require_image_input(names, "latency")
    if interleave and (shard or out):
        raise UsageError("--interleave is one machine's A/B comparison: it takes neither --shard nor --out "
                         "(use --json)")
    names, shard_info = shard_of(names, shard)
    check_record(out, "latency")

    if interleave:
        from ..latency.compare import interleaved

        if len(names) < 2:
            raise UsageError("--interleave compares two or more models; give another --model")
        if cross_check:
            raise UsageError("--cross-check times one model at a time; leave it out with --interleave")
        harness.preflight(settings)
        results = []
        with progress("interleaved rounds") as tick:
            for size in sizes:
                for b in batch_sizes:
                    results.append(interleaved(names, size, b, settings, warn=warn,
                                               progress=lambda done, total, label: tick(label)))
        for comparison in results:
            for message in comparison.warnings:
                warn(message)
        emit(results, as_json, as_csv)
        return
    with progress("latency") as tick:
        results = harness.run(names, sizes, batch_sizes, settings, warn=warn,
                              progress=lambda done, total, label: tick(f"latency {label} ({done}/{total})"))
    emit(results, as_json, as_csv)
    write_record(out, "latency", settings.to_dict() | {"input": input, "batch_size": batch_size}, results,
                  shard_info, device=str(settings.torch_device), dtype=settings.dtype)
    points = [p for r in results for p in r.points]
    if points and not any(p.status == "ok" for p in points):  # a table of OOMs is no measurement
        tried = "the one point" if len(points) == 1 else f"all {len(points)} points"
        error(f"nothing was measured: {tried} ran out of memory; try a smaller --batch-size or --input")
        raise typer.Exit(1)


@command
def profile(
    model: ModelOpt = DEFAULT_MODELS,
    input: Annotated[Optional[str], typer.Option("--input", "-i", help="HxW; default: the model's own.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per forward.")] = 1,
    device: Annotated[str, typer.Option(help="cpu or cuda (cuda:N for another GPU).")] = "cpu",
    dtype: Annotated[str, typer.Option(help="fp32, fp16 or bf16 (weights and input).")] = "fp32",
    channels_last: Annotated[bool, typer.Option("--channels-last", help="NHWC memory format.")] = False,
    by: Annotated[By, typer.Option(help="Rows by module (hooks) or by aten operator (torch.profiler).")] = By.module,
    depth: Annotated[int, typer.Option(min=0, help="Module depth of the rows (--by module).")] = 2,
    convention: Annotated[str, typer.Option(help=f"MAC convention of the count column: {', '.join(CONVENTION_NAMES)}.")
                          ] = DEFAULT.name,
    small_mflops: Annotated[
        Optional[float], typer.Option("--small-mflops", min=0, help="Small-ops view: module code under this many "
                                                                    "MFLOPs per call (default: 10).")
    ] = None,
    warmup: Annotated[int, typer.Option(help="Untimed plain calls before timing (and one of each instrumented).")] = 3,
    iters: Annotated[Optional[int], typer.Option(help="Rounds (default: --min-time 1).")] = None,
    min_time: Annotated[
        Optional[float], typer.Option("--min-time", help="Rounds until the plain calls take this many seconds "
                                                         "(at least 5).")
    ] = None,
    threads: ThreadsOpt = None,
    cpu_time: Annotated[
        bool, typer.Option("--cpu-time", help="With --threads 1 on a CPU: time on the thread's CPU clock, which leaves "
                                              "out the time a shared machine gives to other processes.")
    ] = False,
    plot: Annotated[Optional[str], typer.Option(help="Also write roofline.png and .svg to this folder.")] = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
):
    """Where the time goes beside where the FLOPs go: per module or operator, time share, MACs, achieved GFLOP/s."""
    from .. import latency as harness
    from .. import plots
    from ..conventions import Convention
    from ..profile import profile_models

    output_format(as_json, as_csv)
    if plot is not None and by == By.operator:
        raise UsageError("--plot draws modules on a roofline; leave out --by operator")
    chosen = Convention.parse(convention)
    settings = harness.LatencySettings(device=device, dtype=dtype, channels_last=channels_last, warmup=warmup,
                                       iters=iters, min_time=min_time, threads=threads)
    size = zoo.parse_size(input) if input else None
    names = [i.name for i in zoo.resolve(model)]
    zoo.require_image_input(names, "profile")
    if plot is not None:
        check_writable(plot, "--plot")

    with progress("profiling") as tick:
        results = profile_models(names, size, batch_size, settings, by=by.value, depth=depth, convention=chosen,
                                 small_mflops=small_mflops, clock="thread" if cpu_time else "wall", progress=tick,
                                 warn=warn)
    emit(results, as_json, as_csv)
    if plot is not None:
        written = output.write_files(plot, plots.roofline(results))
        listed = ", ".join(str(p) for p in written) or "no roofline: no module row had time, FLOPs and bytes"
        output.err_console.print(f"wrote {listed}", highlight=False, soft_wrap=True)


