"""The `hrvit-bench` command line: thin wiring from options to the engine modules."""
from __future__ import annotations

import functools
import sys
from enum import Enum
from typing import Annotated, Optional

import typer
from rich.progress import Progress

from . import output, zoo
from .conventions import CONVENTION_NAMES, DEFAULT, parse_conventions
from .errors import UsageError

app = typer.Typer(
    name="hrvit-bench",
    help="What a vision backbone costs: parameters, FLOPs under every convention, latency; HRViT's claims checked.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class _State:
    debug = False


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False):
    _State.debug = debug


def command(fn=None, *, name: str | None = None):
    """Register a command whose usage errors print one line and exit 2; other errors one line and exit 1."""
    if fn is None:
        return functools.partial(command, name=name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            if _State.debug:
                raise
            output.err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            if hasattr(exc, "exit_code"):  # typer/click's own exits and usage errors
                raise
            if _State.debug:
                raise
            output.err_console.print(
                f"[red]error:[/red] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return app.command(name)(wrapper)


class By(str, Enum):
    operator = "operator"
    module = "module"


class Engine(str, Enum):
    meta = "meta"
    fvcore = "fvcore"


ModelOpt = Annotated[
    list[str], typer.Option("--model", "-m", help="Model name or glob pattern; repeatable. Default: hrvit_b1.")
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


def _emit(results: list, as_json: bool, as_csv: bool) -> None:
    if as_json:
        data = [r.to_dict() for r in results]
        output.print_json(data[0] if len(data) == 1 else data)
    elif as_csv:
        output.print_csv(row for r in results for row in r.csv_rows())
    else:
        for r in results:
            output.print_tables(r.tables())


def _measure_each(infos, measure, quiet: bool) -> list:
    """Run ``measure(info)`` per model, with a progress bar (on stderr) when there are several."""
    if len(infos) == 1 or quiet:
        return [measure(info) for info in infos]
    results = []
    with Progress(console=output.err_console, transient=True) as progress:
        task = progress.add_task("counting", total=len(infos))
        for info in infos:
            progress.update(task, description=info.name)
            results.append(measure(info))
            progress.advance(task)
    return results


@command(name="list")
def list_models(
    pattern: Annotated[str, typer.Argument(help="Glob over model names.")] = "*",
    family: Annotated[Optional[str], typer.Option(help="Only this family (hrvit, mit, cswin, hrnet, hrnet_vit).")] = None,
    task: Annotated[Optional[str], typer.Option(help="classification, segmentation or backbone.")] = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
):
    """Every registered model with its metadata."""
    infos = [zoo.info(n) for n in zoo.names(pattern, family=family, task=task)]
    if not infos:
        raise UsageError(f"no model matches {pattern!r}" + (f" in family {family!r}" if family else ""))
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
        for col in ("name", "task", "dataset", "classes", "input"):
            table.add_column(col, no_wrap=True)
        for i in infos:
            table.add_row(i.name, short_task[i.task], i.dataset or "-", str(i.num_classes or "-"),
                          zoo.format_size(i.input_size))
        output.console.print(table)
        output.console.print("sources of published numbers, ablations and notes: hrvit-bench list --json", style="dim")


@command
def params(
    model: ModelOpt = DEFAULT_MODELS,
    depth: Annotated[int, typer.Option(min=0, help="Break down to modules this many levels deep.")] = 1,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
):
    """Exact parameter counts: total, trainable, by module, and those forward never uses."""
    from .cost import ParamReport

    infos = zoo.resolve(model)
    results = _measure_each(infos, lambda i: ParamReport.measure(i.name, depth), as_json or as_csv)
    _emit(results, as_json, as_csv)


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
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
):
    """MACs/FLOPs of one forward, under every convention, with cross-checks by other counters."""
    from .cost import FlopReport

    conventions = parse_conventions(convention)
    size = zoo.parse_size(input) if input else None
    infos = zoo.resolve(model)
    shown = conventions[0] if convention else DEFAULT
    results = _measure_each(
        infos,
        lambda i: FlopReport.measure(
            i.name, size, batch_size, engine.value, cross_check,
            conventions=conventions, shown=shown, by=by.value, depth=depth,
        ),
        as_json or as_csv,
    )
    _emit(results, as_json, as_csv)


@command
def latency(
    model: ModelOpt = DEFAULT_MODELS,
    device: Annotated[str, typer.Option(help="cpu or cuda (cuda:N for another GPU).")] = "cpu",
    input: Annotated[
        Optional[str], typer.Option("--input", "-i", help="HxW, or a comma list to sweep; default: the model's own.")
    ] = None,
    batch_size: Annotated[str, typer.Option("--batch-size", "-b", help="Images per forward, or a comma list to sweep.")] = "1",
    dtype: Annotated[str, typer.Option(help="fp32, fp16 or bf16 (weights and input).")] = "fp32",
    channels_last: Annotated[bool, typer.Option("--channels-last", help="NHWC memory format.")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile (inductor), compiled in the warm-up.")] = False,
    cuda_graphs: Annotated[bool, typer.Option("--cuda-graphs", help="Replay one captured CUDA graph per call.")] = False,
    warmup: Annotated[int, typer.Option(help="Untimed calls before timing.")] = 5,
    iters: Annotated[Optional[int], typer.Option(help="Timed calls (default: --min-time 1).")] = None,
    min_time: Annotated[
        Optional[float], typer.Option("--min-time", help="Time calls until this many seconds (at least 5 calls).")
    ] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads, pinned (default: torch's current count).")] = None,
    cross_check: Annotated[
        bool, typer.Option("--cross-check", help="Also time with torch.utils.benchmark's blocked_autorange.")
    ] = False,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
):
    """Latency per forward (median, p90, p99, IQR, CV), throughput, memory and achieved TFLOP/s, with the machine."""
    from . import latency as harness

    settings = harness.LatencySettings(
        device=device, dtype=dtype, channels_last=channels_last, compile=compile, cuda_graphs=cuda_graphs,
        warmup=warmup, iters=iters, min_time=min_time, threads=threads, cross_check=cross_check,
    )
    sizes, batch_sizes = harness.parse_sizes(input), harness.parse_batch_sizes(batch_size)
    names = [i.name for i in zoo.resolve(model)]

    def warn(message: str) -> None:
        output.err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)

    if as_json or as_csv:
        results = harness.run(names, sizes, batch_sizes, settings, warn=warn)
    else:
        with Progress(console=output.err_console, transient=True) as bar:
            task = bar.add_task("latency", total=None)
            results = harness.run(
                names, sizes, batch_sizes, settings, warn=warn,
                progress=lambda done, total, label: bar.update(task, completed=done, total=total, description=label),
            )
    _emit(results, as_json, as_csv)


class Latency(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


def _progress_callback(progress, task):
    def tick(label: str) -> None:
        progress.update(task, description=label)

    return tick


@command
def claims(
    convention: ConventionOpt = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when a measurable claim does not hold.")] = False,
    jobs: JobsOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
):
    """Every claim of the HRViT paper with the measured change and a verdict, under every convention."""
    from .claims import ClaimsReport
    from .count_cache import default_jobs

    conventions = parse_conventions(convention)
    jobs = jobs or default_jobs()
    if as_json or as_csv:
        report = ClaimsReport.measure(conventions, jobs=jobs)
    else:
        with Progress(console=output.err_console, transient=True) as progress:
            task = progress.add_task("counting", total=None)
            report = ClaimsReport.measure(conventions, progress=_progress_callback(progress, task), jobs=jobs)
    _emit([report], as_json, as_csv)
    if strict and report.failed:
        output.err_console.print(f"{len(report.failed)} measurable claim result(s) do not hold", highlight=False)
        raise typer.Exit(1)


@command
def report(
    out: Annotated[str, typer.Option(help="Folder to write models.csv, claims.csv/.md, report.json, plots.")] = "reports",
    compare: Annotated[
        Optional[str], typer.Option(help="Baseline folder (or models.csv) to compare the new counts with.")
    ] = None,
    fail_on_change: Annotated[str, typer.Option(help="Tolerance for --compare, e.g. 0.5% or 0.005.")] = "0.5%",
    latency: Annotated[
        Optional[Latency], typer.Option(help="Also time every model a claim compares (slow on a CPU).")
    ] = None,
    engine: Annotated[Engine, typer.Option(help="meta (fast, shape-only) or fvcore (real tensors).")] = Engine.meta,
    jobs: JobsOpt = None,
):
    """Count every model at its paper resolutions, check the claims, write reports; gate on changed counts."""
    from . import report as reporting
    from .count_cache import default_jobs

    tolerance = reporting.parse_tolerance(fail_on_change)
    baseline = reporting.load_baseline(compare) if compare else None
    if latency == Latency.cuda:
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--latency cuda needs a CUDA GPU, and torch sees none on this machine")
    with Progress(console=output.err_console, transient=True) as progress:
        task = progress.add_task("counting", total=None)
        result = reporting.Report.measure(engine.value, _progress_callback(progress, task),
                                          latency.value if latency else None, jobs or default_jobs())
        progress.update(task, description="writing")
        written = result.write(out)
    holds = sum(r.verdict == "holds" for r in result.claims.results)
    fails = len(result.claims.failed)
    output.console.print(
        f"wrote {len(written)} files to {out}/ in {result.wall_time_s:.1f} s: {len(result.rows)} model rows; "
        f"claim results: {holds} hold, {fails} do not hold", highlight=False)
    if baseline is not None:
        failures, notes = reporting.compare(baseline, result.rows, tolerance)
        for note in notes:
            output.console.print(f"note: {note.describe()}", highlight=False)
        if failures:
            for change in failures:
                output.err_console.print(f"[red]changed:[/red] {change.describe()}", highlight=False)
            output.err_console.print(
                f"{len(failures)} count(s) moved beyond {fail_on_change} from {compare}; if intended, "
                f"regenerate the baseline with `hrvit-bench report --out {compare}` and commit it", highlight=False)
            raise typer.Exit(1)
        output.console.print(f"counts match {compare} within {fail_on_change}", highlight=False)


def main() -> None:
    """Console entry point: click's own usage errors also become one line and exit code 2."""
    try:
        code = app(standalone_mode=False, prog_name="hrvit-bench")
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not click's: a command already reported it, or a bug
            raise
        output.err_console.print(f"[red]error:[/red] {exc.format_message()}", highlight=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
