"""`llmos tune`: a hyperparameter search (Optuna) as a background job of the daemon."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmos.cli.common import console, err, print_json
from llmos.cli.jobs import _follow, _print_job
from llmos.cli.train import _params
from llmos.client import Client
from llmos.errors import ExitCode, InvalidInput


def _space(pairs: list[str]) -> dict[str, str]:
    """``KNOB=low:high[:log]`` or ``KNOB=a,b,c`` pairs (checked by the daemon, which names the bad one)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise InvalidInput(f"--space {pair!r}: expected KNOB=low:high[:log] or KNOB=a,b,c, e.g. "
                               "learning_rate=1e-5:1e-3:log or lora_r=4,8,16")
        out[key.strip()] = value
    return out


def tune(
    base: Annotated[str, typer.Argument(help="model to fine-tune (name or name:tag)")],
    dataset: Annotated[str, typer.Argument(help="dataset (name or name@version)")],
    trials: Annotated[int, typer.Option("--trials", "-n", help="trials to run (each a train job)")] = 8,
    space: Annotated[list[str], typer.Option("--space", "-s", help="a searched hyperparameter: "
                                             "KNOB=low:high[:log] or KNOB=a,b,c; repeat; replaces that "
                                             "knob's default range")] = [],
    param: Annotated[list[str], typer.Option("--param", "-p", help="a hyperparameter fixed for every trial, "
                                             "KEY=VALUE; repeat")] = [],
    task: Annotated[Optional[str], typer.Option(help="classify, tag or sft (default: the dataset's)")] = None,
    method: Annotated[Optional[str], typer.Option(help="fine-tuning method: full, lora, prompt or prefix "
                                                  "(default: full; lora for sft)")] = None,
    sampler: Annotated[str, typer.Option(help="search method: tpe or random")] = "tpe",
    pruner: Annotated[str, typer.Option(help="median, hyperband or none")] = "median",
    startup_trials: Annotated[int, typer.Option(help="trials run to the end before any is pruned")] = 2,
    name: Annotated[Optional[str], typer.Option(help="name of the promoted model (default: BASE-DATASET)")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="show live progress until the study ends; "
                                         "exit code 1 unless it succeeds")] = False,
    url: Annotated[Optional[str], typer.Option("--url", help="daemon URL (default: from settings)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Search hyperparameters for fine-tuning BASE on DATASET; the best trial's model is registered."""
    client = Client(url)
    job = client.tune(base, dataset, space=_space(space), trials=trials, task=task, method=method,
                      hyperparameters=_params(param), sampler=sampler, pruner=pruner,
                      startup_trials=startup_trials, name=name)
    if as_json and not follow:
        print_json(job)
        return
    plan = job.get("plan", {})
    console.print(f"queued [bold]{job['id']}[/bold]: {plan.get('trials')} trials of {plan.get('task')} / "
                  f"{plan.get('method')} on {plan.get('dataset')} -> {plan.get('output')}, {plan.get('direction')} "
                  f"validation {plan.get('metric')}", highlight=False)
    for knob, values in plan.get("space", {}).items():
        console.print(f"  {knob:>18}  {values}", highlight=False)
    for warning in plan.get("warnings", []):
        err.print(f"[yellow]note:[/yellow] {warning}", highlight=False)
    if follow:
        done = _follow(client, job["id"], 1.0)
        _print_job(done)
        raise typer.Exit(ExitCode.OK if done["state"] == "succeeded" else ExitCode.FAILURE)
    console.print(f"follow it with: llmos jobs show {job['id']} --follow; its trials are train jobs "
                  f"(llmos jobs list)", highlight=False)
