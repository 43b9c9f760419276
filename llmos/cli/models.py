"""`llmos models ...`: list, show, import, rm, tag, export, quantize."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmos.cli.common import RichProgress, console, human_bytes, print_json, runtime
from llmos.cli.tables import ago, new_table, short_id, size
from llmos.store.importer import ImportOptions

app = typer.Typer(help="Manage models in the store.", no_args_is_help=True)


@app.command("list")
def list_models(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """List stored models of every tenant (TENANT "-" is a public model)."""
    infos = runtime().store.registry.list()
    if as_json:
        print_json([{"name": i.ref, "tenant": i.tenant, "digest": i.digest, "tasks": i.manifest.tasks,
                     "kind": i.manifest.kind, "engines": i.manifest.engines,
                     "size": i.manifest.size_bytes, "parameters": i.manifest.parameters} for i in infos])
        return
    table = new_table("NAME", "TASKS", "PARAMS", "SIZE", "ID", "CREATED", wrap=["NAME", "TASKS"])
    for i in infos:  # a private model shows as TENANT/NAME:TAG; engines, kind and lineage: `models show`, --json
        table.add_row(i.key, ", ".join(i.manifest.tasks), f"{i.manifest.parameters / 1e6:.1f}M",
                      size(i.manifest.size_bytes), short_id(i.digest), ago(i.created_at))
    console.print(table)


@app.command()
def show(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a model's manifest: metadata, files and lineage."""
    info = runtime().store.registry.get(name)
    data = {"name": info.ref, "digest": info.digest, "created_at": info.created_at,
            **info.manifest.model_dump(mode="json")}
    if as_json:
        print_json(data)
        return
    files = data.pop("files")
    template = data.pop("chat_template")
    for key, value in data.items():
        console.print(f"[bold]{key:>15}[/bold]  {value}")
    console.print(f"[bold]{'chat_template':>15}[/bold]  {'yes' if template else 'none'}")
    for f in files:
        console.print(f"{'':>17}{f['path']}  {human_bytes(f['size'])}  {f['digest'][:19]}")


@app.command("import")
def import_model(
    path: Path,
    name: Annotated[str, typer.Argument(help="NAME or NAME:TAG to register it as")],
    config: Annotated[Optional[Path], typer.Option(help="config.json for a single .safetensors file")] = None,
    base: Annotated[Optional[str], typer.Option(help="base model, for a PEFT adapter folder")] = None,
    license: Annotated[Optional[str], typer.Option(help="licence to record")] = None,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="permit .bin/.pt pickle weights "
                                               "(they can run code when loaded; only for trusted files)")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="re-point an existing NAME:TAG")] = False,
    engine: Annotated[Optional[str], typer.Option(help="engine that serves it: llamacpp (a .gguf, kept quantised; "
                                                  "the default for a .gguf) or hf (transformers)")] = None,
) -> None:
    """Import a Hugging Face folder, a .safetensors file (+config) or a .gguf file."""
    rt = runtime()
    opts = ImportOptions(license=license, allow_pickle=allow_pickle or rt.settings.allow_pickle, config=config,
                         parent=base, replace=replace, engine=engine)
    info = rt.store.importer.import_path(path, name, opts, RichProgress())
    engines = ", ".join(info.manifest.engines) or "hf"
    console.print(f"imported [bold]{info.ref}[/bold] {info.digest[:19]} ({human_bytes(info.manifest.size_bytes)}, "
                  f"tasks: {', '.join(info.manifest.tasks)}; engines: {engines})")


@app.command("rm")
def remove(name: str, keep_blobs: Annotated[bool, typer.Option(help="leave unreferenced blobs for `gc`")] = False) -> None:
    """Remove a model name (its blobs are freed when nothing else uses them)."""
    rt = runtime()
    info = rt.store.registry.remove(name)
    msg = f"removed {info.ref}"
    if not keep_blobs:
        report = rt.store.registry.gc()
        msg += f"; freed {human_bytes(report.bytes_freed)}"
    console.print(msg)


@app.command()
def tag(source: str, target: str, replace: Annotated[bool, typer.Option("--replace")] = False) -> None:
    """Give a model another NAME:TAG (no data is copied)."""
    info = runtime().store.registry.tag(source, target, replace=replace)
    console.print(f"tagged {source} as {info.ref}")


@app.command()
def export(name: str, dir: Annotated[Path, typer.Argument(help="new folder to write (must not exist, or be empty)")]) -> None:
    """Write a model as a Hugging Face folder: LoRA adapters merged into their base, with tokenizer and chat template."""
    from llmos.train.export import export_model

    out = export_model(runtime().store.registry, name, dir)
    console.print(f"exported {name} to {out}")


@app.command()
def quantize(
    name: str,
    type: Annotated[str, typer.Option("--type", help="q8_0, q4_0, q4_1, q5_0 or q5_1")] = "q8_0",
    as_name: Annotated[Optional[str], typer.Option("--as", help="NAME[:TAG] to register it as "
                                                   "(default: NAME-TYPE with the source's tag)")] = None,
) -> None:
    """Make a quantised GGUF of a stored Llama model (full, fine-tuned, or a LoRA adapter merged) for llama.cpp."""
    from llmos.train.quantize import quantize_model

    rt = runtime()
    info = quantize_model(rt.store.registry, rt.store.importer, name, type_name=type, target=as_name,
                          progress=RichProgress())
    console.print(f"quantised {name} to [bold]{info.ref}[/bold] {info.digest[:19]} "
                  f"({human_bytes(info.manifest.size_bytes)}, {type.lower()}; engines: llamacpp)")


@app.command()
def history(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a model's versions, the feedback loop's gates (with numbers) and canary outcomes."""
    from llmos.cli.feedback import history as show_history

    show_history(name, as_json=as_json)


@app.command()
def rollback(name: str, to: Annotated[Optional[str], typer.Option(help="version to serve, e.g. v1")] = None) -> None:
    """Serve the version that served before (or end a running canary); a retrain in progress is not promoted."""
    from llmos.cli.feedback import rollback as do_rollback

    do_rollback(name, to=to)
