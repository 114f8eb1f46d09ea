"""`claims`, `report` and `merge`: the claims, the gated report, and records joined from many machines."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import output
from ..conventions import parse_conventions
from ..errors import UsageError
from ..output import check_writable
from .common import (ConventionOpt, CsvOpt, Engine, JobsOpt, JsonOpt, LatencyOpt, RoundsOpt, ThreadsOpt,
                     announce_shard, command, error, latency_settings, output_format, progress)


@command
def claims(
    convention: ConventionOpt = None,
    claim: Annotated[Optional[list[str]], typer.Option("--claim", "-c", help="Claim id or glob; repeatable.")] = None,
    wide: Annotated[
        bool, typer.Option("--wide", help="The full table: every reason, published numbers, Table 6.")
    ] = False,
    latency: LatencyOpt = None,
    rounds: RoundsOpt = None,
    threads: ThreadsOpt = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when a claim does not hold (under some convention).")] = False,
    jobs: JobsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as one JSON object (not a list: "
                                          "claims, latency rows, summary) instead of tables.")] = False,
    as_csv: CsvOpt = False,
):
    """One verdict per claim of the HRViT paper, with what it rests on; latency verdicts with --latency."""
    from ..claims_report import ClaimsReport
    from ..count_cache import default_jobs

    output_format(as_json, as_csv)
    conventions = parse_conventions(convention)
    settings = latency_settings(latency, threads, rounds)
    with progress("counting") as tick:
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
    rounds: RoundsOpt = None,
    threads: ThreadsOpt = None,
    engine: Annotated[Engine, typer.Option(help="meta (fast, shape-only) or fvcore (real tensors).")] = Engine.meta,
    jobs: JobsOpt = None,
    shard: Annotated[
        Optional[str], typer.Option(help="K/N: count only the K-th of N slices of the models (K from 1) and write "
                                         "only report.record.json; `hrvit-bench merge` joins the N into a report.")
    ] = None,
):
    """Count every model at its paper resolutions, check the claims, write reports; gate on any changed count."""
    from .. import gate
    from .. import report as reporting
    from ..count_cache import default_jobs

    if shard is not None:
        if latency is None:
            latency_settings(None, threads, rounds)  # refuses --rounds and --threads, which would time nothing
        _report_shard(shard, out, compare, latency, engine, jobs)
        return
    tolerance = gate.parse_tolerance(fail_on_change) if fail_on_change is not None else None
    if tolerance is not None and compare is None:
        raise UsageError("--fail-on-change needs --compare")
    baseline = gate.Baseline.load(compare) if compare else None
    settings = latency_settings(latency, threads, rounds)
    check_writable(out)
    with progress("counting") as tick:
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
    from .. import report as reporting
    from ..count_cache import default_jobs
    from ..shards import Shard

    chosen = Shard.parse(shard)
    if Path(out).resolve() == Path("reports").resolve():
        raise UsageError("--shard writes one shard's record: give --out DIR (a folder of its own, not reports/, "
                         "which the gate reads)")
    if compare is not None or latency is not None:
        raise UsageError("--shard counts a slice of the models: --compare and --latency work on the merged report "
                         "(`hrvit-bench merge ... --out DIR`, then `hrvit-bench report`'s gate on DIR)")
    check_writable(out)
    announce_shard(chosen, reporting.work_list())  # on stderr, before counting, as flops and latency say theirs
    with progress("counting") as tick:
        record = reporting.count_record(engine.value, chosen, tick, jobs or default_jobs())
        path = record.write(out)
    output.console.print(f"counted {len(record.rows)} (model, input) rows of {len(record.shard['items'])} models in "
                         f"{record.wall_time_s:.1f} s; wrote {path}; join all {chosen.count} shards with "
                         "`hrvit-bench merge`", highlight=False, soft_wrap=True)


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
    from .. import merge as merging
    from ..records import collect

    output_format(as_json, as_csv)
    check_writable(out)
    records, others = collect(paths)
    try:
        result = merging.merge(records, reference)
    except merging.MergeConflict as exc:
        error(f"counts disagree: {exc}")
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


