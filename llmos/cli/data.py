"""`llmos data ...`: import, show, list, clean, split and augment datasets (in-process, tenant "default")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from llmos.cli.common import RichProgress, console, err, human_bytes, print_json, runtime
from llmos.cli.tables import ago, count, new_table
from llmos.data import (
    AugmentOptions,
    CleanOptions,
    DatasetInfo,
    DatasetPreview,
    Datasets,
    ImportOptions,
    SplitOptions,
    Task,
    validated,
)
from llmos.errors import InvalidInput

app = typer.Typer(help="Import, clean, split and augment datasets.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _registry() -> Datasets:
    return Datasets.of(runtime(builtins=False))


def _mapping(pairs: list[str]) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for pair in pairs:
        field, eq, column = pair.partition("=")
        if not eq or not field.strip() or not column.strip():
            raise InvalidInput(f"--map {pair!r}: expected FIELD=COLUMN, e.g. text=sentence or label=0")
        out[field.strip()] = column.strip()
    return out or None


@app.command("import")
def import_(
    path: Path,
    name: Annotated[str, typer.Argument(help="dataset name; importing again makes the next version")],
    task: Annotated[Optional[str], typer.Option(help="classify, tag or sft (default: inferred)")] = None,
    map_: Annotated[list[str], typer.Option("--map", help="FIELD=COLUMN (name or 0-based position); repeat")] = [],
    format_: Annotated[Optional[str], typer.Option("--format", help="csv, tsv, jsonl, json or conll")] = None,
    header: Annotated[Optional[bool], typer.Option("--header/--no-header", help="CSV/TSV first row")] = None,
    encoding: Annotated[str, typer.Option(help="text encoding of the file")] = "utf-8",
    split: Annotated[Optional[str], typer.Option(help="put every row in this split (train/validation/test)")] = None,
    append: Annotated[bool, typer.Option("--append", help="add the rows to the latest version")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="read and preview only; register nothing")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a CSV, TSV, JSONL, JSON or CoNLL file as a dataset version."""
    opts = validated(ImportOptions, task=task, mapping=_mapping(map_), format=format_, header=header,
                     encoding=encoding, split=split, append=append)
    datasets = _registry()
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    if dry_run:
        preview = datasets.preview_file(path, opts)
        return print_json(preview.model_dump(mode="json")) if as_json else _print_preview(preview)
    info = datasets.import_file(path, name, opts, progress=RichProgress())
    _report(datasets, info, as_json, f"imported [bold]{info.ref}[/bold] from {path.name}")


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME (latest version) or NAME@VERSION")],
    rows: Annotated[int, typer.Option(help="preview rows to show")] = 5,
    split: Annotated[Optional[str], typer.Option(help="preview this split")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a dataset version: source, mapping, counts, lineage and the first rows."""
    datasets = _registry()
    info = datasets.get(ref)
    first = _take(datasets.rows(info.ref, split=split), rows)
    preview = [r.model_dump(mode="json", exclude_defaults=True) for r in first]
    if as_json:
        return print_json({**info.model_dump(mode="json"), "preview": preview})
    _print_info(info)
    _print_rows(info.task, preview)


@app.command("list")
def list_(all_versions: Annotated[bool, typer.Option("--all", help="every version, not just the latest")] = False,
          as_json: JsonOpt = False) -> None:
    """List datasets (the latest version of each); `data show` gives a version's size, parent and source."""
    infos = _registry().list(all_versions=all_versions)
    if as_json:
        return print_json([i.model_dump(mode="json") for i in infos])
    table = new_table("NAME", "TASK", "ROWS", "SPLITS", "LABELS", "CREATED", wrap=["NAME", "SPLITS"])
    for i in infos:
        splits = "/".join(count(n) for n in i.counts.splits.values()) or "-"
        table.add_row(i.ref, i.task.value, count(i.counts.rows), splits, str(len(i.labels) or "-"),
                      ago(i.created_at))
    console.print(table)


@app.command()
def clean(
    ref: str,
    normalize: Annotated[str, typer.Option(help="Unicode form: NFC, NFKC or none")] = "NFC",
    near_threshold: Annotated[float, typer.Option(help="Jaccard similarity that counts as a near duplicate")] = 0.8,
    near_dups: Annotated[bool, typer.Option("--near-dups/--no-near-dups", help="remove near duplicates")] = True,
    exact_dups: Annotated[bool, typer.Option("--exact-dups/--keep-exact-dups", help="remove exact duplicates")] = True,
    keep_empty: Annotated[bool, typer.Option("--keep-empty", help="keep rows with no text")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Normalise text and remove empty rows and duplicates: a new version."""
    opts = validated(CleanOptions, normalize=normalize, near_threshold=near_threshold, near_duplicates=near_dups,
                     exact_duplicates=exact_dups, drop_empty=not keep_empty)
    datasets = _registry()
    info = datasets.clean(ref, opts, progress=RichProgress())
    rep = info.derivation.report if info.derivation else {}
    _report(datasets, info, as_json, f"cleaned into [bold]{info.ref}[/bold]: {rep.get('rows_in', 0):,} -> "
            f"{rep.get('rows_out', 0):,} rows (empty {rep.get('empty', 0)}, exact duplicates "
            f"{rep.get('exact_duplicates', 0)}, near duplicates {rep.get('near_duplicates', 0)}, label conflicts "
            f"{rep.get('label_conflicts', 0)})")


@app.command()
def split(
    ref: str,
    validation: Annotated[float, typer.Option(help="share of rows for validation")] = 0.1,
    test: Annotated[float, typer.Option(help="share of rows for test")] = 0.1,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same split)")] = 0,
    stratify: Annotated[bool, typer.Option("--stratify/--no-stratify", help="keep label proportions")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Assign every row to train / validation / test: a new version."""
    opts = validated(SplitOptions, validation=validation, test=test, seed=seed, stratify=stratify)
    datasets = _registry()
    info = datasets.split(ref, opts, progress=RichProgress())
    counts = ", ".join(f"{k} {v:,}" for k, v in info.counts.splits.items())
    stratified = (info.derivation.report.get("stratified") if info.derivation else False)
    _report(datasets, info, as_json, f"split into [bold]{info.ref}[/bold]: {counts}"
            f"{' (stratified)' if stratified else ''}")


@app.command()
def augment(
    ref: str,
    copies: Annotated[int, typer.Option(help="new rows made from each training row")] = 1,
    ops: Annotated[str, typer.Option(help="comma-separated: swap, delete, insert")] = "swap,delete,insert",
    rate: Annotated[float, typer.Option(help="share of a row's words each operation changes")] = 0.1,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    field: Annotated[list[str], typer.Option(help="sft only: instruction and/or input; repeat")] = [],
    as_json: JsonOpt = False,
) -> None:
    """Add EDA-style variants (word swap / deletion / insertion) of training rows: a new version."""
    opts = validated(AugmentOptions, copies=copies, ops=[o.strip() for o in ops.split(",") if o.strip()], rate=rate,
                     seed=seed, fields=field)
    datasets = _registry()
    info = datasets.augment(ref, opts, progress=RichProgress())
    added = info.derivation.report.get("added", 0) if info.derivation else 0
    _report(datasets, info, as_json, f"augmented into [bold]{info.ref}[/bold]: {added:,} rows added, "
            f"{info.counts.rows:,} in all")


# -- output --------------------------------------------------------------------------------------
def _take(rows: Any, n: int) -> list[Any]:
    out = []
    for row in rows:
        if len(out) >= n:
            break
        out.append(row)
    return out


def _report(datasets: Datasets, info: DatasetInfo, as_json: bool, message: str) -> None:
    for warning in info.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if as_json:
        return print_json({**info.model_dump(mode="json"), "preview": datasets.preview(info.ref)})
    console.print(message, highlight=False)
    _print_rows(info.task, datasets.preview(info.ref))


def _print_info(info: DatasetInfo) -> None:
    src = info.source
    lines = {"dataset": info.ref, "task": info.task.value, "rows": f"{info.counts.rows:,}",
             "splits": ", ".join(f"{k} {v:,}" for k, v in info.counts.splits.items()) or "not split",
             "labels": ", ".join(f"{k} ({v:,})" for k, v in list(info.counts.labels.items())[:20]) or "-",
             "source": f"{src.file} ({src.format}{', no header' if src.header is False else ''})",
             "mapping": ", ".join(f"{k}={v}" for k, v in src.mapping.items()),
             "digest": info.digest, "size": human_bytes(info.size_bytes), "parent": info.parent or "-"}
    if info.derivation:
        lines["made by"] = f"{info.derivation.operation} {info.derivation.params}"
    for key, value in lines.items():
        console.print(f"[bold]{key:>9}[/bold]  {value}", highlight=False)


def _print_preview(preview: DatasetPreview) -> None:
    console.print(f"{preview.file}: {preview.source.format}, {preview.rows:,} rows, task {preview.task.value}, mapping "
                  f"{', '.join(f'{k}={v}' for k, v in preview.source.mapping.items())}", highlight=False)
    if preview.labels:
        console.print(f"labels ({len(preview.labels)}): {', '.join(preview.labels[:20])}", highlight=False)
    for warning in preview.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    _print_rows(preview.task, preview.preview)


def _print_rows(task: Task, rows: list[dict[str, Any]]) -> None:
    cols = {Task.classify: ["text", "label"], Task.tag: ["tokens"], Task.sft: ["instruction", "input", "output"]}[task]
    if any("messages" in r for r in rows):
        cols = ["messages"]
    has_split = any("split" in r for r in rows)
    headers = [c.upper() for c in cols + (["split"] if has_split else [])]
    table = new_table(*headers, wrap=[h for h in headers if h != "SPLIT"])
    table.show_lines = True  # wrapped rows stay apart
    for r in rows:
        cells = [_cell(task, c, r) for c in cols] + ([r.get("split", "")] if has_split else [])
        table.add_row(*cells)
    console.print(table)


def _cell(task: Task, column: str, row: dict[str, Any]) -> str:
    if column == "tokens":
        return " ".join(f"{tok}/{tag}" if tag != "O" else tok for tok, tag in zip(row["tokens"], row["tags"]))
    if column == "messages":
        return " | ".join(f"{m['role']}: {m['content']}" for m in row["messages"])[:300]
    text = str(row.get(column, ""))
    return text if len(text) <= 200 else text[:199] + "…"
