"""`llmos tasks create`: a prompt-defined classifier or extractor over a stored model, no training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from llmos.cli.common import console, print_json, runtime
from llmos.errors import InvalidInput

app = typer.Typer(help="Prompt-defined tasks (a template and labels over a stored model).", no_args_is_help=True)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")] if text.strip() else []


def _descriptions(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        label, eq, text = pair.partition("=")
        if not eq or not label.strip() or not text.strip():
            raise InvalidInput(f"--description {pair!r}: expected LABEL=TEXT, e.g. spam='an unwanted advert'")
        out[label.strip()] = text.strip()
    return out


def _examples(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read examples {path}: {exc}") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InvalidInput(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise InvalidInput(f"{path}:{number}: expected an object like {{\"text\": ..., \"label\": ...}}")
        out.append(row)
    return out


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="NAME (stored as NAME:v0, v1... and NAME:latest) or NAME:TAG")],
    base: Annotated[str, typer.Option(help="the generator or encoder it runs on")],
    labels: Annotated[str, typer.Option(help="comma-separated class labels (or entity types with --extract)")],
    extract: Annotated[bool, typer.Option("--extract", help="extract entity spans instead of classifying "
                                          "(needs a generator base)")] = False,
    template: Annotated[Optional[str], typer.Option(help="prompt with a {text} placeholder (and optionally "
                                                    "{labels})")] = None,
    examples: Annotated[Optional[Path], typer.Option(help="few-shot examples, JSONL: {\"text\", \"label\"} or "
                                                     "{\"text\", \"entities\": [{\"text\", \"label\"}]}")] = None,
    description: Annotated[list[str], typer.Option("--description", "-d", help="LABEL=TEXT, what a label means; "
                                                   "repeat")] = [],
    replace: Annotated[bool, typer.Option("--replace", help="re-point an existing NAME:TAG / NAME:latest")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Create a prompt task: served at once by /v1/classify (or /v1/tag with --extract) under NAME."""
    from llmos.prompt_tasks import create_prompt_task, spec_of

    rt = runtime()
    info = create_prompt_task(rt.store.registry, name, base, kind="extract" if extract else "classify",
                              labels=_split(labels), template=template, descriptions=_descriptions(description),
                              examples=_examples(examples), replace=replace)
    spec = spec_of(info)
    if as_json:
        print_json({"name": info.ref, "digest": info.digest, "tasks": info.manifest.tasks,
                    **spec.model_dump(mode="json")})
        return
    route = "/v1/tag" if extract else "/v1/classify"
    console.print(f"created [bold]{info.ref}[/bold] ({spec.method} over {base}; labels: {', '.join(spec.labels)}; "
                  f"{len(spec.examples)} examples); served by {route} as {info.name}", highlight=False)
