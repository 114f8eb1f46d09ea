"""`list`, `params` and `flops`: the registry and the counts."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from .. import output, zoo
from ..conventions import DEFAULT, parse_conventions
from ..errors import UsageError
from .common import (DEFAULT_MODELS, TASK_WORDS, By, ConventionOpt, CsvOpt, Engine, JsonOpt, ModelOpt, RecordOpt,
                     ShardOpt, check_record, command, emit, error, measure_each, output_format, shard_of,
                     write_record)


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
    output_format(as_json, as_csv)
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
        output.print_csv({k: (zoo.format_size(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows)
    else:
        table, left_out = _list_table(infos, output.console.width)
        output.console.print(table)
        if left_out:
            output.console.print(f"left out at {output.console.width} columns: {', '.join(left_out)} (a wider "
                                 "terminal or COLUMNS shows them)", style="dim", highlight=False)
        output.console.print("sources, ablations, reconstructions and notes: hrvit-bench list --json", style="dim")


def _list_table(infos, width: int):
    """The list as a table no wider than ``width``: names are never cut, so where the columns do not fit, the last
    ones are left out (and named) rather than squeezed into ellipses."""
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    short_task = {"classification": "cls", "segmentation": "seg", "backbone": "backbone"}
    cells = {"name": [i.name for i in infos], "task": [short_task[i.task] for i in infos],
             "dataset": [i.dataset or "-" for i in infos], "classes": [str(i.num_classes or "-") for i in infos],
             "input": [zoo.format_size(i.input_size) for i in infos], "attention": [i.attention for i in infos]}
    columns = list(cells)
    while True:
        table = Table(title=f"{len(infos)} models", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        for column in columns:  # a name wider than the whole width folds onto a second line, whole
            table.add_column(column, no_wrap=column != "name", overflow="fold")
        for row in zip(*(cells[c] for c in columns)):
            table.add_row(*row)
        natural = Measurement.get(output.console, output.console.options.update_width(10**4), table).maximum
        if len(columns) == 1 or natural <= width:
            return table, [c for c in cells if c not in columns]
        columns.pop()


@command
def params(
    model: ModelOpt = DEFAULT_MODELS,
    depth: Annotated[int, typer.Option(min=0, help="Break down to modules this many levels deep.")] = 1,
    out: RecordOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
):
    """Exact parameter counts: total, trainable, by module, and those forward never uses."""
    from ..cost import ParamReport

    output_format(as_json, as_csv)
    infos = zoo.resolve(model)
    check_record(out, "params")
    results = measure_each(infos, lambda i, tick: ParamReport.measure(i.name, depth), "counting")
    emit(results, as_json, as_csv)
    write_record(out, "params", {"depth": depth}, results)


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
    from ..cost import FlopReport

    output_format(as_json, as_csv)
    conventions = parse_conventions(convention)
    size = zoo.parse_size(input) if input else None
    infos = zoo.resolve(model)
    names, shard_info = shard_of([i.name for i in infos], shard)
    infos = [i for i in infos if i.name in names]
    check_record(out, "flops")
    shown = conventions[0] if convention else DEFAULT
    results = measure_each(
        infos,
        lambda i, tick: FlopReport.measure(
            i.name, size, batch_size, engine.value, cross_check,
            conventions=conventions, shown=shown, by=by.value, depth=depth,
        ),
        "counting",
    )
    emit(results, as_json, as_csv)
    write_record(out, "flops", {"input": input, "batch_size": batch_size, "engine": engine.value, "cross_check":
                                 cross_check, "conventions": [c.name for c in conventions], "by": by.value,
                                 "depth": depth}, results, shard_info)
    incomplete = [r.count for r in results if not r.count.coverage.complete]
    if strict and incomplete:
        error("--strict: known GEMM-like calls went uncounted: " + "; ".join(
            f"{c.model}: " + ", ".join(f"{op} {n}" for op, n in sorted(c.coverage.costly_uncounted.items()))
            for c in incomplete))
        raise typer.Exit(1)


