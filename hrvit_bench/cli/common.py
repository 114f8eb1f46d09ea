"""What every command shares: the Typer app, the error wrapper, the common options, output and progress."""
from __future__ import annotations

import contextlib
import functools
import os
import select
import stat
import sys
import traceback
from enum import Enum
from typing import Annotated, Callable, Optional

import typer

from .. import __version__, output
from ..conventions import CONVENTION_NAMES
from ..errors import UsageError, first_line

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


def warn(message: str) -> None:
    output.err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def error(message: str) -> None:
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
        except BrokenPipeError:  # before typer, which would exit 1
            _reader_gone()
            raise typer.Exit(0) from None
        except KeyboardInterrupt:  # workers of a pool ignore SIGINT: the parent says it once
            error("interrupted")
            raise typer.Exit(130) from None
        except UsageError as exc:
            if _State.debug:
                traceback.print_exc()
            error(first_line(exc))
            raise typer.Exit(2) from None
        except Exception as exc:
            if hasattr(exc, "exit_code"):  # typer's own exits and usage errors
                raise
            if _State.debug:
                traceback.print_exc()
            error(f"{type(exc).__name__}: {first_line(exc)}" + ("" if _State.debug else
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


def output_format(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")


def emit(results: list, as_json: bool, as_csv: bool) -> None:
    """Tables, or JSON (always a list, one entry per result, whatever their number), or CSV rows."""
    if as_json:
        output.print_json([r.to_dict() for r in results])
    elif as_csv:
        output.print_csv(row for r in results for row in r.csv_rows())
    else:
        for r in results:
            output.print_tables(r.tables())


@contextlib.contextmanager
def progress(description: str, total: int | None = None):
    """A transient progress bar on stderr (shown on a terminal, also when stdout is piped): yields tick(label)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

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


def shard_of(names: list[str], shard: str | None) -> tuple[list[str], dict | None]:
    """This shard's models (all without --shard), and what the record says about the shard."""
    from ..shards import Shard

    if shard is None:
        return names, None
    chosen = Shard.parse(shard)
    return announce_shard(chosen, names), chosen.to_dict(names)


def announce_shard(chosen, names: list[str]) -> list[str]:
    """The shard's models, said on stderr before any work ("shard 1/3: 2 of 4 models (a, b)")."""
    mine = chosen.select(names)
    output.err_console.print(f"shard {chosen.label}: {len(mine)} of {len(set(names))} models"
                             + (f" ({', '.join(mine)})" if mine else ""), highlight=False, soft_wrap=True)
    return mine


def check_record(out: str | None, command_name: str) -> None:
    if out is not None:
        from ..records import check_target

        check_target(out, command_name)


def write_record(out: str | None, command_name: str, settings: dict, results: list, shard: dict | None = None,
                  **environment) -> None:
    if out is not None:
        from ..records import from_results

        path = from_results(command_name, settings, results, shard, **environment).write(out)
        output.err_console.print(f"wrote {path}", highlight=False, soft_wrap=True)


def measure_each(infos, measure: Callable, verb: str) -> list:
    """``measure(info, tick)`` per model under one progress bar (single models included: a count can take
    seconds)."""
    results = []
    with progress(verb, total=len(infos) if len(infos) > 1 else None) as tick:
        for info in infos:
            tick(f"{verb} {info.name}")
            results.append(measure(info, tick))
            tick(f"{verb} {info.name}", advance=1)
    return results



def latency_settings(device: Device | None, threads: int | None, rounds: int | None):
    """Settings for the claims' latency rows, checked before anything is counted or built. --rounds and --threads
    shape the timing alone, so without --latency they are refused rather than ignored."""
    if device is None:
        given = [option for option, value in (("--rounds", rounds), ("--threads", threads)) if value is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} {'sets' if len(given) == 1 else 'set'} how --latency times, "
                             f"but nothing is timed without it: add --latency cpu (or cuda), or leave "
                             f"{' and '.join(given)} out")
        return None
    from ..latency import LatencySettings, preflight

    try:
        settings = LatencySettings(device=device.value, warmup=2 if device == Device.cpu else 10,
                                   iters=DEFAULT_ROUNDS if rounds is None else rounds, threads=threads)
        preflight(settings)
    except UsageError as exc:  # the settings speak of --device; here the user wrote --latency
        raise UsageError(str(exc).replace("--device", "--latency")) from None
    return settings


LatencyOpt = Annotated[
    Optional[Device], typer.Option(help="Also time every comparison, interleaved (slow on a CPU; never gated).")
]
DEFAULT_ROUNDS = 10
RoundsOpt = Annotated[
    Optional[int], typer.Option("--rounds", min=2, help=f"With --latency: interleaved rounds per timed pair "
                                                        f"(default: {DEFAULT_ROUNDS}).")
]

def _reader_gone() -> None:
    """stdout's reader closed the pipe (``hrvit-bench list | head -2``) and has what it wanted. stdout now points
    at /dev/null, so the interpreter's last flush cannot fail again ("Note on SIGPIPE" in Python's signal docs)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _pipe_of_stdout() -> int | None:
    """A second descriptor of stdout when it is a pipe, to ask later whether its reader has gone."""
    try:
        return os.dup(1) if stat.S_ISFIFO(os.fstat(1).st_mode) and hasattr(select, "poll") else None
    except OSError:
        return None


def _no_reader(fd: int | None) -> bool:
    if fd is None:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(event & select.POLLERR for _, event in poller.poll(0))  # a pipe with no reader left


def main() -> None:
    """Console entry point: the parser's own usage errors also become one line and exit code 2; a reader that
    closes the pipe early ends the run quietly with exit code 0."""
    pipe = _pipe_of_stdout()
    try:
        code = _run()
        sys.stdout.flush()  # here, not at interpreter exit, where a broken pipe could only be reported
    except BrokenPipeError:
        _reader_gone()
        code = 0
    except SystemExit as exc:  # help text meeting a closed pipe: typer and rich exit 1 themselves
        code = 0 if exc.code == 1 and _no_reader(pipe) else exc.code
    finally:
        if pipe is not None:
            os.close(pipe)
    sys.exit(code)


def _run() -> int:
    if len(sys.argv) == 1:  # help, not an error
        app(["--help"], prog_name="hrvit-bench", standalone_mode=False)
        return 0
    try:
        code = app(standalone_mode=False, prog_name="hrvit-bench")
    except typer.Abort:
        return 130
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not the parser's: a command already reported it, or a bug
            raise
        message = exc.format_message().strip()
        if message:
            error(message.splitlines()[0])
        return getattr(exc, "exit_code", 2)
    return code if isinstance(code, int) else 0
