"""`llmos train` (a fine-tuning job on the daemon) and `llmos eval` (an evaluation report: an `evaluate`
job on the daemon when one runs, in-process otherwise)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from llmos.cli.common import console, err, print_json, runtime
from llmos.cli.jobs import _follow, _print_job
from llmos.client import Client
from llmos.errors import ExitCode, InvalidInput, Unavailable

Url = Annotated[Optional[str], typer.Option("--url", help="daemon URL (default: from settings)")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _params(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as JSON when they parse (numbers, lists), else as text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise InvalidInput(f"--param {pair!r}: expected KEY=VALUE, e.g. warmup_ratio=0.1 or lora_r=8")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def train(
    base: Annotated[str, typer.Argument(help="model to fine-tune (name or name:tag)")],
    dataset: Annotated[str, typer.Argument(help="dataset (name or name@version)")],
    task: Annotated[Optional[str], typer.Option(help="classify, tag or sft (default: the dataset's)")] = None,
    method: Annotated[Optional[str], typer.Option(help="full, lora, prompt or prefix (default: full; "
                                                  "lora for sft)")] = None,
    name: Annotated[Optional[str], typer.Option(help="result name[:tag] (default: BASE-DATASET, as v1, v2...)")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="passes over the training rows")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="learning rate")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="rows per step")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="tokens per row (longer rows are cut)")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="stop after this many steps")] = None,
    param: Annotated[list[str], typer.Option("--param", "-p", help="any other hyperparameter, KEY=VALUE; "
                                             "repeat")] = [],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="show live progress until the job ends; "
                                         "exit code 1 unless it succeeds")] = False,
    url: Url = None,
    as_json: Json = False,
) -> None:
    """Fine-tune BASE on DATASET as a background job of the daemon."""
    hp = {k: v for k, v in dict(epochs=epochs, learning_rate=lr, batch_size=batch_size, max_length=max_length,
                                max_steps=max_steps).items() if v is not None}
    hp.update(_params(param))
    client = Client(url)
    job = client.fine_tune(base, dataset, task=task, method=method, hyperparameters=hp, name=name)
    if as_json and not follow:
        print_json(job)
        return
    plan = job.get("plan", {})
    rows = ", ".join(f"{k} {v}" for k, v in plan.get("rows", {}).items())
    console.print(f"queued [bold]{job['id']}[/bold]: {plan.get('task')} / {plan.get('method')} on "
                  f"{plan.get('dataset')} ({rows}) -> {plan.get('output')}", highlight=False)
    for warning in plan.get("warnings", []):
        err.print(f"[yellow]note:[/yellow] {warning}", highlight=False)
    if follow:
        done = _follow(client, job["id"], 0.5)
        _print_job(done)
        raise typer.Exit(ExitCode.OK if done["state"] == "succeeded" else ExitCode.FAILURE)
    console.print(f"follow it with: llmos jobs show {job['id']} --follow", highlight=False)


def eval_(
    model: Annotated[str, typer.Argument(help="model to evaluate")],
    dataset: Annotated[str, typer.Argument(help="dataset (name or name@version)")],
    split: Annotated[Optional[str], typer.Option(help="split to score (default: test, else validation, else "
                                                 "all rows)")] = None,
    max_rows: Annotated[Optional[int], typer.Option(help="score at most this many rows")] = None,
    local: Annotated[bool, typer.Option("--local", help="score here even when a daemon runs")] = False,
    url: Url = None,
    as_json: Json = False,
) -> None:
    """Evaluate a stored model on a dataset split and print its report: as an `evaluate` job of the
    daemon when one runs (under its memory budget, yielding to traffic), else here."""
    report = None if local else _eval_on_daemon(model, dataset, split, max_rows, url)
    if report is None:
        from llmos.data import Datasets
        from llmos.prompt_tasks.evaluate import evaluate_stored_task
        from llmos.train.config import Hyperparameters

        rt = runtime()
        hp = Hyperparameters(max_eval_rows=max_rows)
        report = evaluate_stored_task(rt.store.registry, Datasets.of(rt), model, dataset, split, hp).to_json()
    if as_json:
        print_json(report)
        return
    _print_report(report)


def _eval_on_daemon(model: str, dataset: str, split: str | None, max_rows: int | None,
                    url: str | None) -> dict[str, Any] | None:
    """The report of an ``evaluate`` job on the daemon; None when no daemon answers."""
    client = Client(url)
    try:
        client.health()
    except Unavailable:
        return None
    job = client.evaluate(model, dataset, split=split, max_rows=max_rows)
    done = _follow(client, job["id"], 0.5)
    if done["state"] != "succeeded":
        _print_job(done)
        raise typer.Exit(ExitCode.FAILURE)
    by_split = next(iter(done["result"]["reports"].values()))
    return dict(next(iter(by_split.values())))


def _print_report(report: dict[str, Any]) -> None:
    console.print(f"[bold]{report['model']}[/bold] on {report['dataset']} ({report['split']}, {report['rows']} rows)",
                  highlight=False)
    for key, value in report["metrics"].items():
        console.print(f"  {key:>14}  {value:.4f}", highlight=False)
    groups = report.get("per_class") or report.get("per_entity") or {}
    if groups:
        console.print(f"  {'':>14}  {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
        for name, m in groups.items():
            console.print(f"  {name[:14]:>14}  {m['precision']:9.3f} {m['recall']:9.3f} {m['f1']:9.3f} "
                          f"{m['support']:8d}", highlight=False)
    unseen = report.get("unseen_labels") or report.get("unseen_tags")
    if unseen:
        err.print(f"[yellow]labels the model never learned:[/yellow] {unseen}", highlight=False)
    for sample in report.get("samples", [])[:3]:
        console.print(f"  [dim]prompt:[/dim] {sample['prompt'][:200]}\n  [dim]model:[/dim] {sample['generated'][:200]}",
                      highlight=False)
