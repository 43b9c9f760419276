"""`llmos feedback list|export`, `llmos loop set|show|list` and `llmos models history|rollback`.

They open the runtime in-process (the database is the shared truth): a running daemon sees a new
policy at its next loop step and a rollback's re-pointed ``NAME:latest`` at its next request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from llmos.cli.common import console, print_json, runtime
from llmos.cli.tables import ago, new_table
from llmos.feedback.judge import check_judge
from llmos.feedback.shapes import Example
from llmos.feedback.loop import Loop
from llmos.feedback.policy import LoopSettings
from llmos.feedback.zero_shot import feedback_rows
from llmos.store.manifest import is_prompt_task

feedback_app = typer.Typer(help="Ratings and corrections users gave to responses.", no_args_is_help=True)
loop_app = typer.Typer(help="The self-improvement loop of served task models.", no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]
Tenant = Annotated[str, typer.Option(help="tenant whose data to use")]


def _loop() -> Loop:
    from llmos.jobs import JobRunner

    rt = runtime()
    return Loop(rt, JobRunner(rt))


@feedback_app.command("list")
def list_feedback(model: Annotated[Optional[str], typer.Option(help="NAME (every version) or NAME:TAG")] = None,
                  limit: int = 100, tenant: Tenant = "default", as_json: Json = False) -> None:
    """List feedback, oldest first (`--json` adds each one's request id and exact time)."""
    items = _loop().feedback.list(tenant, model=model, limit=limit)
    if as_json:
        print_json([f.model_dump(mode="json") for f in items])
        return
    table = new_table("ID", "MODEL", "RATING", "CORRECTION", "COMMENT", "AT",
                      wrap=["MODEL", "CORRECTION", "COMMENT"])
    for f in items:
        table.add_row(str(f.id), f.model, "" if f.rating is None else f"{f.rating:+d}",
                      "" if f.correction is None else json.dumps(f.correction)[:60], (f.comment or "")[:40],
                      ago(f.created_at))
    console.print(table)


@feedback_app.command("export")
def export_feedback(model: Annotated[str, typer.Argument(help="model NAME whose corrections to export")],
                    out: Annotated[Path, typer.Argument(help="JSONL file to write")],
                    tenant: Tenant = "default") -> None:
    """Write what the loop's next round would learn from, as JSONL rows (text/label, tokens/tags,
    instruction/output, each with its split: `train`, or `test` for the held-out share the gate judges
    on): every corrected input, and for a prompt task (the zero-shot start) the answers users confirmed.
    `llmos data import` reads the file as a dataset."""
    loop = _loop()
    name = model.split(":")[0]
    examples: list[Example] = loop.feedback.examples(name, tenant)
    serving = loop.registry.find(f"{name}:latest", tenant=tenant)
    if serving is not None and is_prompt_task(serving):
        examples += loop.feedback.confirmed(name, tenant)
    p = loop.policies.find(name, tenant)
    settings = p.settings if p is not None else LoopSettings()
    rows = feedback_rows(examples, settings.holdout, settings.seed)
    with open(out, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row.model_dump(exclude_defaults=True), ensure_ascii=False) + "\n")
    console.print(f"wrote {len(rows)} rows to {out}")


@loop_app.command("set")
def set_policy(
    name: str,
    min_feedback: Annotated[Optional[int], typer.Option(help="new corrected items that start a retrain")] = None,
    holdout: Annotated[Optional[float], typer.Option(help="share of feedback kept aside for the gate")] = None,
    margin: Annotated[Optional[float], typer.Option(help="gain on held-out feedback a candidate needs")] = None,
    val_tolerance: Annotated[Optional[float], typer.Option(help="allowed fall on the original validation")] = None,
    canary_share: Annotated[Optional[float], typer.Option(help="traffic share of the candidate")] = None,
    canary_min: Annotated[Optional[int], typer.Option(help="rated items on the candidate before the canary is "
                                                              "judged")] = None,
    canary_alpha: Annotated[Optional[float], typer.Option(help="significance a worse live rating needs to roll "
                                                                "back")] = None,
    canary_max_hours: Annotated[Optional[float], typer.Option(help="after this long without enough ratings the "
                                                                   "gate's verdict stands")] = None,
    first_base: Annotated[Optional[str], typer.Option(help="a prompt task's first fine-tuned version trains from "
                                                           "this model")] = None,
    judge: Annotated[Optional[str], typer.Option(help="chat models: a stored chat model that compares both "
                                                      "versions' answers in the gate")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    enabled: Annotated[Optional[bool], typer.Option("--enabled/--disabled")] = None,
    hyperparameters: Annotated[Optional[str], typer.Option(help="JSON object of retrain overrides")] = None,
    tenant: Tenant = "default",
) -> None:
    """Create or change the loop policy of served model NAME."""
    changes: dict[str, Any] = {k: v for k, v in {
        "min_feedback": min_feedback, "holdout": holdout, "margin": margin, "val_tolerance": val_tolerance,
        "canary_share": canary_share, "canary_min": canary_min, "canary_alpha": canary_alpha,
        "canary_max_hours": canary_max_hours, "first_base": first_base, "judge": judge, "seed": seed,
        "enabled": enabled}.items()
        if v is not None}
    if hyperparameters:
        changes["hyperparameters"] = json.loads(hyperparameters)
    loop = _loop()
    loop.registry.get(f"{name.split(':')[0]}:latest", tenant=tenant)
    if judge:
        check_judge(loop.registry, judge, tenant)
    print_json(loop.policies.set(name, tenant, changes).to_api())


@loop_app.command("list")
def list_policies(tenant: Tenant = "default") -> None:
    """List loop policies and where each round stands."""
    print_json([p.to_api() for p in _loop().policies.list(tenant)])


def history(name: str, tenant: Tenant = "default", as_json: Json = False) -> None:
    """Show a model's versions, gates (with their numbers) and canary outcomes."""
    data = _loop().history(name, tenant)
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]{data['name']}[/bold] serving {data['serving']}")
    table = new_table("VERSION", "SERVING", "KIND", "METRICS", "MEASURED ON", "CREATED",
                      wrap=["VERSION", "METRICS", "MEASURED ON"])
    for v in data["versions"]:
        metrics = ", ".join(f"{k} {val:.3f}" for k, val in v["metrics"].items() if isinstance(val, float))
        table.add_row(v["ref"], "*" if v["serving"] else "", v.get("kind", ""), metrics, v.get("measured") or "",
                      ago(v["created_at"]))
    console.print(table)
    for e in data["events"]:
        extra = {k: v for k, v in e.items() if k not in ("at", "action", "actor")}
        console.print(f"{e['at'][:19]}  [bold]{e['action']}[/bold] ({e['actor']})  {json.dumps(extra, default=str)}")


def rollback(name: str, to: Annotated[Optional[str], typer.Option(help="version to serve, e.g. v1")] = None,
             tenant: Tenant = "default") -> None:
    """Serve the previous version now (or end a running canary); a retrain in progress is then not promoted."""
    out = _loop().rollback(name, tenant, "cli", to=to, admin=True)  # the local CLI is the admin
    console.print(f"{out['name']} now serves {out['serving']}")
