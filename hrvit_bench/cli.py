"""The `hrvit-bench` command line: thin wiring from options to the engine modules."""
from __future__ import annotations

import contextlib
import functools
import sys
import tempfile
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from . import __version__, output, zoo
from .conventions import CONVENTION_NAMES, DEFAULT, parse_conventions
from .errors import UsageError, first_line

app = typer.Typer(
    name="hrvit-bench",
    help="What a vision backbone costs: parameters, FLOPs under every convention, latency; HRViT's claims checked.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _State:
    debug = False


def _version(value: bool) -> None:
    if value:
        output.console.print(f"hrvit-bench {__version__}", highlight=False, soft_wrap=True)
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
):
    _State.debug = debug


def _error(message: str) -> None:
    from rich.markup import escape

    output.err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def command(fn=None, *, name: str | None = None):
    """Register a command whose usage errors print one line and exit 2; other errors one line and exit 1.

    With --debug the traceback comes first, and the exit codes stay the same."""
    if fn is None:
        return functools.partial(command, name=name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            if _State.debug:
                traceback.print_exc()
            _error(first_line(exc))
            raise typer.Exit(2) from None
        except Exception as exc:
            if hasattr(exc, "exit_code"):  # typer's own exits and usage errors
                raise
            if _State.debug:
                traceback.print_exc()
            _error(f"{type(exc).__name__}: {first_line(exc)}" + ("" if _State.debug else
                                                                " (run with --debug for the traceback)"))
            raise typer.Exit(1) from None

    return app.command(name)(wrapper)


class By(str, Enum):
    operator = "operator"
    module = "module"


class Engine(str, Enum):
    meta = "meta"
    fvcore = "fvcore"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


ModelOpt = Annotated[
    list[str], typer.Option("--model", "-m", help="Model name or glob pattern, or an outside model: timm:NAME, "
                                                  "torchvision:NAME, path/to/file.py:BUILDER, package.module:BUILDER; "
                                                  "repeatable. Default: hrvit_b1.")
]
DEFAULT_MODELS = ["hrvit_b1"]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of tables.")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="Print CSV on stdout instead of tables.")]
ConventionOpt = Annotated[
    Optional[list[str]],
    typer.Option(help=f"Convention(s) to report (default: all): {', '.join(CONVENTION_NAMES)}."),
]
JobsOpt = Annotated[
    Optional[int], typer.Option(min=1, help="Processes counting in parallel (default: cores, at most 4).")
]
ThreadsOpt = Annotated[
    Optional[int], typer.Option(help="CPU threads, pinned (default: torch's current count).")
]
ShardOpt = Annotated[
    Optional[str], typer.Option(help="K/N: only the K-th of N deterministic slices of the models (K from 1); "
                                     "join the N records with `hrvit-bench merge`.")
]
RecordOpt = Annotated[
    Optional[str], typer.Option("--out", help="Also write a versioned result record: FILE.json, or a folder "
                                              "(gets <command>.record.json).")
]
TASK_WORDS = {"cls": "classification", "seg": "segmentation", "classification": "classification",
              "segmentation": "segmentation", "backbone": "backbone"}


def _output_format(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")


def _emit(results: list, as_json: bool, as_csv: bool) -> None:
    """Tables, or JSON (always a list, one entry per result, whatever their number), or CSV rows."""
    if as_json:
        output.print_json([r.to_dict() for r in results])
    elif as_csv:
        output.print_csv(row for r in results for row in r.csv_rows())
    else:
        for r in results:
            output.print_tables(r.tables())


@contextlib.contextmanager
def _progress(description: str, total: int | None = None):
    """A transient progress bar on stderr (shown on a terminal, also when stdout is piped): yields tick(label)."""
    columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    if total:
        columns += [BarColumn(), MofNCompleteColumn()]
    # Off when stderr is not a terminal (CI logs, captured output): a live display there is only noise.
    with Progress(*columns, console=output.err_console, transient=True,
                  disable=not output.err_console.is_terminal) as bar:
        task = bar.add_task(description, total=total)

        def tick(label: str, advance: int = 0) -> None:
            bar.update(task, description=label, advance=advance)

        yield tick


def _shard(names: list[str], shard: str | None) -> tuple[list[str], dict | None]:
    """This shard's models (all without --shard), and what the record says about the shard."""
    from .shards import Shard

    if shard is None:
        return names, None
    chosen = Shard.parse(shard)
    mine = chosen.select(names)
    output.err_console.print(f"shard {chosen.label}: {len(mine)} of {len(set(names))} models"
                             + (f" ({', '.join(mine)})" if mine else ""), highlight=False, soft_wrap=True)
    return mine, chosen.to_dict(names)


def _check_record(out: str | None, command_name: str) -> None:
    if out is not None:
        from .records import check_target

        check_target(out, command_name)


def _write_record(out: str | None, command_name: str, settings: dict, results: list, shard: dict | None = None,
                  **environment) -> None:
    if out is not None:
        from .records import from_results

        path = from_results(command_name, settings, results, shard, **environment).write(out)
        output.err_console.print(f"wrote {path}", highlight=False, soft_wrap=True)


def _measure_each(infos, measure: Callable, verb: str) -> list:
    """``measure(info, tick)`` per model under one progress bar (single models included: a count can take
    seconds)."""
    results = []
    with _progress(verb, total=len(infos) if len(infos) > 1 else None) as tick:
        for info in infos:
            tick(f"{verb} {info.name}")
            results.append(measure(info, tick))
            tick(f"{verb} {info.name}", advance=1)
    return results


@command(name="list")
def list_models(
    pattern: Annotated[str, typer.Argument(help="Glob over model names.")] = "*",
    family: Annotated[
        Optional[str], typer.Option(help="Only this family (hrvit, mit, cswin, hrnet, hrnet_vit).")
    ] = None,
    task: Annotated[Optional[str], typer.Option(help="cls, seg or backbone (or classification, segmentation).")] = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
):
    """Every registered model with its metadata."""
    _output_format(as_json, as_csv)
    if task is not None and task.lower() not in TASK_WORDS:
        raise UsageError(f"unknown task {task!r}; valid: {', '.join(TASK_WORDS)}")
    families = sorted({zoo.info(n).family for n in zoo.names()})
    if family is not None and family not in families:
        raise UsageError(f"unknown family {family!r}; valid: {', '.join(families)}")
    infos = [zoo.info(n) for n in zoo.names(pattern, family=family, task=TASK_WORDS.get((task or "").lower()))]
    if not infos:
        raise UsageError(f"no model matches {pattern!r}" + (f" in family {family!r}" if family else "")
                         + (f" with task {task!r}" if task else ""))
    rows = [i.to_dict() for i in infos]
    if as_json:
        output.print_json(rows)
    elif as_csv:
        output.print_csv({k: (v if not isinstance(v, list) else repr(v)) for k, v in r.items()} for r in rows)
    else:
        from rich import box
        from rich.table import Table

        short_task = {"classification": "cls", "segmentation": "seg", "backbone": "backbone"}
        table = Table(title=f"{len(infos)} models", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        for col in ("name", "task", "dataset", "classes", "input", "attention"):
            table.add_column(col, no_wrap=True)
        for i in infos:
            table.add_row(i.name, short_task[i.task], i.dataset or "-", str(i.num_classes or "-"),
                          zoo.format_size(i.input_size), i.attention)
        output.console.print(table)
        output.console.print("sources, ablations, reconstructions and notes: hrvit-bench list --json", style="dim")


@command
def params(
    model: ModelOpt = DEFAULT_MODELS,
    depth: Annotated[int, typer.Option(min=0, help="Break down to modules this many levels deep.")] = 1,
    out: RecordOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
):
    """Exact parameter counts: total, trainable, by module, and those forward never uses."""
    from .cost import ParamReport

    _output_format(as_json, as_csv)
    infos = zoo.resolve(model)
    _check_record(out, "params")
    results = _measure_each(infos, lambda i, tick: ParamReport.measure(i.name, depth), "counting")
    _emit(results, as_json, as_csv)
    _write_record(out, "params", {"depth": depth}, results)


@command
def flops(
    model: ModelOpt = DEFAULT_MODELS,
    input: Annotated[Optional[str], typer.Option("--input", "-i", help="HxW; default: the model's own.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per forward.")] = 1,
    by: Annotated[By, typer.Option(help="Break down by operator or by module.")] = By.operator,
    depth: Annotated[int, typer.Option(min=0, help="Module depth for --by module.")] = 1,
    convention: ConventionOpt = None,
    engine: Annotated[
        Engine, typer.Option(help="meta: fvcore's rules on shapes alone (fast); fvcore: fvcore on real tensors.")
    ] = Engine.meta,
    cross_check: Annotated[bool, typer.Option(help="Also count with torch FlopCounterMode and thop.")] = True,
    shard: ShardOpt = None,
    out: RecordOpt = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when a known GEMM-like call (matmul, conv, attention, RNN, ...) "
                                            "went uncounted.")
    ] = False,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
):
    """MACs/FLOPs of one forward, under every convention, with cross-checks by other counters."""
    from .cost import FlopReport

    _output_format(as_json, as_csv)
    conventions = parse_conventions(convention)
    size = zoo.parse_size(input) if input else None
    infos = zoo.resolve(model)
    names, shard_info = _shard([i.name for i in infos], shard)
    infos = [i for i in infos if i.name in names]
    _check_record(out, "flops")
    shown = conventions[0] if convention else DEFAULT
    results = _measure_each(
        infos,
        lambda i, tick: FlopReport.measure(
            i.name, size, batch_size, engine.value, cross_check,
            conventions=conventions, shown=shown, by=by.value, depth=depth,
        ),
        "counting",
    )
    _emit(results, as_json, as_csv)
    _write_record(out, "flops", {"input": input, "batch_size": batch_size, "engine": engine.value, "cross_check":
                                 cross_check, "conventions": [c.name for c in conventions], "by": by.value,
                                 "depth": depth}, results, shard_info)
    incomplete = [r.count for r in results if not r.count.coverage.complete]
    if strict and incomplete:
        _error("--strict: known GEMM-like calls went uncounted: " + "; ".join(
            f"{c.model}: " + ", ".join(f"{op} {n}" for op, n in sorted(c.coverage.costly_uncounted.items()))
            for c in incomplete))
        raise typer.Exit(1)


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
    from . import latency as harness

    _output_format(as_json, as_csv)
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
    names, shard_info = _shard(names, shard)
    _check_record(out, "latency")

    def warn(message: str) -> None:
        output.err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)

    if interleave:
        from .latency.compare import interleaved

        if len(names) < 2:
            raise UsageError("--interleave compares two or more models; give another --model")
        if cross_check:
            raise UsageError("--cross-check times one model at a time; leave it out with --interleave")
        harness.preflight(settings)
        results = []
        with _progress("interleaved rounds") as tick:
            for size in sizes:
                for b in batch_sizes:
                    results.append(interleaved(names, size, b, settings, warn=warn,
                                               progress=lambda done, total, label: tick(label)))
        for comparison in results:
            for message in comparison.warnings:
                warn(message)
        _emit(results, as_json, as_csv)
        return
    with _progress("latency") as tick:
        results = harness.run(names, sizes, batch_sizes, settings, warn=warn,
                              progress=lambda done, total, label: tick(f"latency {label} ({done}/{total})"))
    _emit(results, as_json, as_csv)
    _write_record(out, "latency", settings.to_dict() | {"input": input, "batch_size": batch_size}, results,
                  shard_info, device=str(settings.torch_device), dtype=settings.dtype)


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
    from . import latency as harness
    from . import plots
    from .conventions import Convention
    from .profile import profile_models

    _output_format(as_json, as_csv)
    if plot is not None and by == By.operator:
        raise UsageError("--plot draws modules on a roofline; leave out --by operator")
    chosen = Convention.parse(convention)
    settings = harness.LatencySettings(device=device, dtype=dtype, channels_last=channels_last, warmup=warmup,
                                       iters=iters, min_time=min_time, threads=threads)
    size = zoo.parse_size(input) if input else None
    names = [i.name for i in zoo.resolve(model)]
    zoo.require_image_input(names, "profile")
    if plot is not None:
        _check_writable(plot)

    def warn(message: str) -> None:
        output.err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)

    with _progress("profiling") as tick:
        results = profile_models(names, size, batch_size, settings, by=by.value, depth=depth, convention=chosen,
                                 small_mflops=small_mflops, clock="thread" if cpu_time else "wall", progress=tick,
                                 warn=warn)
    _emit(results, as_json, as_csv)
    if plot is not None:
        written = output.write_files(plot, plots.roofline(results))
        listed = ", ".join(str(p) for p in written) or "no roofline: no module row had time, FLOPs and bytes"
        output.err_console.print(f"wrote {listed}", highlight=False, soft_wrap=True)


def _latency_settings(device: Device | None, threads: int | None, rounds: int):
    """Settings for the claims' latency rows, checked before anything is counted or built."""
    if device is None:
        return None
    from .latency import LatencySettings, preflight

    try:
        settings = LatencySettings(device=device.value, warmup=2 if device == Device.cpu else 10, iters=rounds,
                                   threads=threads)
        preflight(settings)
    except UsageError as exc:  # the settings speak of --device; here the user wrote --latency
        raise UsageError(str(exc).replace("--device", "--latency")) from None
    return settings


LatencyOpt = Annotated[
    Optional[Device], typer.Option(help="Also time every comparison, interleaved (slow on a CPU; never gated).")
]
RoundsOpt = Annotated[int, typer.Option("--rounds", min=2, help="Interleaved rounds per timed pair.")]


@command
def claims(
    convention: ConventionOpt = None,
    claim: Annotated[Optional[list[str]], typer.Option("--claim", "-c", help="Claim id or glob; repeatable.")] = None,
    wide: Annotated[
        bool, typer.Option("--wide", help="The full table: every reason, published numbers, Table 6.")
    ] = False,
    latency: LatencyOpt = None,
    rounds: RoundsOpt = 10,
    threads: ThreadsOpt = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when a claim does not hold (under some convention).")] = False,
    jobs: JobsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as one JSON object (not a list: "
                                          "claims, latency rows, summary) instead of tables.")] = False,
    as_csv: CsvOpt = False,
):
    """One verdict per claim of the HRViT paper, with what it rests on; latency verdicts with --latency."""
    from .claims_report import ClaimsReport
    from .count_cache import default_jobs

    _output_format(as_json, as_csv)
    conventions = parse_conventions(convention)
    settings = _latency_settings(latency, threads, rounds)
    with _progress("counting") as tick:
        report = ClaimsReport.measure(conventions, progress=tick, jobs=jobs or default_jobs(), latency=settings,
                                      ids=claim)
    report.wide = wide
    if as_json:
        output.print_json(report.to_dict())
    elif as_csv:
        output.print_csv(report.csv_rows())
    else:
        output.print_tables(report.tables())
    if strict and report.failed:
        output.err_console.print(f"{len(report.failed)} claim row(s) do not hold", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _check_writable(folder: str) -> None:
    """Fail before counting, not after minutes of work, when the report cannot be written; create nothing yet, so
    a run refused later leaves no empty folder behind."""
    nearest = Path(folder).absolute()
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    try:
        if not nearest.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        with tempfile.TemporaryFile(dir=nearest):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to --out {folder}: {exc.strerror or first_line(exc)}") from None


@command
def report(
    out: Annotated[
        str, typer.Option(help="Folder to write models.csv, claims.csv/.md, report.json, plots.")
    ] = "reports",
    compare: Annotated[
        Optional[str], typer.Option(help="Baseline folder (or a models.csv) to compare with: exact counts and "
                                         "claim verdicts; any change fails.")
    ] = None,
    fail_on_change: Annotated[
        Optional[str], typer.Option(help="Tolerance for measured values (latency ratios) with --compare, e.g. 5%. "
                                         "Counts are always compared exactly.")
    ] = None,
    allow_new: Annotated[
        bool, typer.Option("--allow-new", help="Rows the baseline lacks are notes, not failures.")
    ] = False,
    latency: LatencyOpt = None,
    rounds: RoundsOpt = 10,
    threads: ThreadsOpt = None,
    engine: Annotated[Engine, typer.Option(help="meta (fast, shape-only) or fvcore (real tensors).")] = Engine.meta,
    jobs: JobsOpt = None,
    shard: Annotated[
        Optional[str], typer.Option(help="K/N: count only the K-th of N slices of the models (K from 1) and write "
                                         "only report.record.json; `hrvit-bench merge` joins the N into a report.")
    ] = None,
):
    """Count every model at its paper resolutions, check the claims, write reports; gate on any changed count."""
    from . import gate
    from . import report as reporting
    from .count_cache import default_jobs

    if shard is not None:
        _report_shard(shard, out, compare, latency, engine, jobs)
        return
    tolerance = gate.parse_tolerance(fail_on_change) if fail_on_change is not None else None
    if tolerance is not None and compare is None:
        raise UsageError("--fail-on-change needs --compare")
    baseline = gate.Baseline.load(compare) if compare else None
    settings = _latency_settings(latency, threads, rounds)
    _check_writable(out)
    with _progress("counting") as tick:
        result = reporting.Report.measure(engine.value, tick, settings, jobs or default_jobs())
        tick("writing")
        written = result.write(out)
        record = reporting.count_record(engine.value, None)  # the counts just made, kept for `merge`
        record.wall_time_s = round(result.wall_time_s, 2)
        record.settings["latency"] = latency.value if latency else None  # merge says it keeps only the counts
        written.append(record.write(out))
    checked = sum(r.equals_official is not None for r in result.rows)
    output.console.print(f"wrote {len(written)} files to {out}/ in {result.wall_time_s:.1f} s: {len(result.rows)} "
                         f"model rows ({checked} counted on the official code too); {result.claims.summary()}",
                         highlight=False, soft_wrap=True)
    for row in result.unlike_official:
        output.err_console.print(f"[red]unlike the official code:[/red] {row.model} @ {row.input}: params "
                                 f"{row.params:,} (official {row.official_params:,}), MACs {row.macs_all:,} "
                                 f"(official {row.official_macs_all})", highlight=False, soft_wrap=True)
    if result.unlike_official:
        raise typer.Exit(1)
    if baseline is None:
        return
    verdict = gate.compare(baseline, result.exact_counts(), result.verdicts(), result.latency_ratios(), tolerance,
                           allow_new)
    for note in verdict.notes:
        output.console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if verdict.failures:
        for change in verdict.failures:
            output.err_console.print(f"[red]changed:[/red] {change.describe()}", highlight=False, soft_wrap=True)
        output.err_console.print(
            f"{len(verdict.failures)} change(s) from {compare}; if intended, make the new report the baseline with "
            f"`{baseline.regenerate_command(out)}` and commit it", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    what = "counts and verdicts match" if baseline.verdicts is not None else "counts match"
    latency_note = f"; latency within {fail_on_change}" if tolerance is not None and result.latency_ratios() else ""
    output.console.print(f"{what} {compare} exactly{latency_note}", highlight=False, soft_wrap=True)


def _report_shard(shard: str, out: str, compare: str | None, latency, engine: Engine, jobs: int | None) -> None:
    from . import report as reporting
    from .count_cache import default_jobs
    from .shards import Shard

    chosen = Shard.parse(shard)
    if Path(out).resolve() == Path("reports").resolve():
        raise UsageError("--shard writes one shard's record: give --out DIR (a folder of its own, not reports/, "
                         "which the gate reads)")
    if compare is not None or latency is not None:
        raise UsageError("--shard counts a slice of the models: --compare and --latency work on the merged report "
                         "(`hrvit-bench merge ... --out DIR`, then `hrvit-bench report`'s gate on DIR)")
    _check_writable(out)
    with _progress("counting") as tick:
        record = reporting.count_record(engine.value, chosen, tick, jobs or default_jobs())
        path = record.write(out)
    models = record.shard["items"]
    output.console.print(f"shard {chosen.label}: counted {len(record.rows)} (model, input) rows of {len(models)} of "
                         f"{record.shard['work_items']} models in {record.wall_time_s:.1f} s; wrote {path}. Join "
                         f"all {chosen.count} with `hrvit-bench merge`", highlight=False, soft_wrap=True)


@command
def merge(
    paths: Annotated[list[str], typer.Argument(help="Record files, or folders to search for *.record.json.")],
    out: Annotated[str, typer.Option(help="Folder for the merged files.")] = "merged",
    reference: Annotated[
        Optional[str], typer.Option(help="Latency: the device the ratios divide by (a part of its name; default: "
                                         "the first record's).")
    ] = None,
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the table across devices as CSV.")] = False,
):
    """Join records from shards and machines: exact counts must agree; latency becomes a table across devices."""
    from . import merge as merging
    from .records import collect

    _output_format(as_json, as_csv)
    _check_writable(out)
    records, others = collect(paths)
    try:
        result = merging.merge(records, reference)
    except merging.MergeConflict as exc:
        _error(f"counts disagree: {exc}")
        raise typer.Exit(1) from None
    if as_csv and result.cross_device is None:
        raise UsageError("--csv prints the table across devices: give latency records, or leave out --csv")
    output.write_files(out, result.files)
    if as_json:
        output.print_json(result.to_dict() | {"not_read": others})
    elif as_csv:
        output.print_csv(result.cross_device.flat_rows())
    else:
        for line in result.lines(out, others):
            output.console.print(line, highlight=False, soft_wrap=True)


def main() -> None:
    """Console entry point: the parser's own usage errors also become one line and exit code 2."""
    if len(sys.argv) == 1:  # help, not an error
        app(["--help"], prog_name="hrvit-bench", standalone_mode=False)
        sys.exit(0)
    try:
        code = app(standalone_mode=False, prog_name="hrvit-bench")
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not the parser's: a command already reported it, or a bug
            raise
        message = exc.format_message().strip()
        if message:
            _error(message.splitlines()[0])
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
