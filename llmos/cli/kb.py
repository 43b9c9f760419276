"""`llmos kb`: knowledge bases (create, add, list, show, rm, search).

Through the daemon when one listens (its kernel embeds, within its memory budget); otherwise in this
process, with a kernel of its own that loads the embedding model under the same budget rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from llmos.cli.common import console, print_json, runtime
from llmos.cli.tables import ago, count, new_table
from llmos.client import Client, DaemonNotRunning
from llmos.errors import InvalidInput

app = typer.Typer(help="Knowledge bases: documents to search and to ground chat answers in.", no_args_is_help=True)


class _Local:
    """The same operations in-process, returning what the API would."""

    def __init__(self) -> None:
        from llmos.kb import KernelEmbedder, KnowledgeBases
        from llmos.kernel.core import Kernel

        self.rt = runtime()
        self.kernel = Kernel(self.rt.settings, self.rt.store.registry)
        self.kbs = KnowledgeBases.of(self.rt)
        self.embedder = lambda model: KernelEmbedder.of(self.kernel, model, self.kbs.tenant)

    def kb_create(self, name: str, *, embed_model: str, chunk_size: int | None, overlap: int | None) -> Any:
        opts = {k: v for k, v in {"chunk_size": chunk_size, "overlap": overlap}.items() if v is not None}
        return self.kbs.create(name, self.embedder(embed_model), **opts).model_dump(mode="json")

    def kb_list(self) -> Any:
        return [i.model_dump(mode="json") for i in self.kbs.list()]

    def kb_show(self, name: str) -> Any:
        return self.kbs.show(name).model_dump(mode="json")

    def kb_delete(self, name: str) -> Any:
        self.kbs.remove(name)
        return {"name": name, "deleted": True}

    def kb_add(self, name: str, files: list[tuple[str, bytes]]) -> Any:
        return self.kbs.add(name, files, self.embedder).model_dump(mode="json")

    def kb_search(self, name: str, query: str, *, k: int, mode: str) -> Any:
        from llmos.kb import search

        return search(self.kbs, name, query, self.embedder(self.kbs.get(name).embed_model), k=k,
                      mode=mode).model_dump(mode="json")  # type: ignore[arg-type]

    def close(self) -> None:
        self.kernel.close()
        self.rt.close()


def _backend() -> Any:
    client = Client()
    try:
        client.health(timeout=2)
        return client
    except DaemonNotRunning:
        client.close()
        return _Local()


def _run(fn: Any) -> Any:
    backend = _backend()
    try:
        return fn(backend)
    finally:
        backend.close()


@app.command()
def create(name: str, embed: Annotated[str, typer.Option(help="the embedding model")] = "minilm-l6",
           chunk_size: Annotated[int | None, typer.Option(help="characters per chunk (default 800)")] = None,
           overlap: Annotated[int | None, typer.Option(help="characters neighbours share (default 120)")] = None,
           json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create an empty knowledge base."""
    info = _run(lambda b: b.kb_create(name, embed_model=embed, chunk_size=chunk_size, overlap=overlap))
    print_json(info) if json_out else console.print(f"created {info['name']} (embeddings: {info['embed_model']}, "
                                                    f"chunks of {info['chunk_size']} with {info['overlap']} overlap)")


@app.command()
def add(name: str, files: Annotated[list[Path], typer.Argument(help="text, Markdown, HTML, PDF, CSV or JSONL")],
        json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Add documents (a new version); a file that cannot be read is listed with why, the rest are added."""
    loaded = []
    for path in files:
        try:
            loaded.append((path.name, path.read_bytes()))
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    report = _run(lambda b: b.kb_add(name, loaded))
    if json_out:
        return print_json(report)
    console.print(f"{name} v{report['version']}: {len(report['added'])} added, {len(report['replaced'])} replaced, "
                  f"{len(report['unchanged'])} unchanged, {report['chunks']} chunks")
    for f in report["failed"]:
        console.print(f"  failed {f['file']}: {f['reason']}")


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Your knowledge bases."""
    data = _run(lambda b: b.kb_list())
    if json_out:
        return print_json(data)
    table = new_table("NAME", "VERSION", "DOCUMENTS", "CHUNKS", "EMBED", "UPDATED", wrap=("NAME",))
    for k in data:
        table.add_row(k["name"], str(k["version"]), count(k["documents"]), count(k["chunks"]), k["embed_model"],
                      ago(k["updated_at"]))
    console.print(table)


@app.command()
def show(name: str, json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A knowledge base's documents and versions."""
    data = _run(lambda b: b.kb_show(name))
    if json_out:
        return print_json(data)
    console.print(f"{data['name']} v{data['version']}: {data['documents']} documents, {data['chunks']} chunks, "
                  f"embeddings {data['embed_model']}, vector index {data.get('vector_index', 'faiss')}")
    table = new_table("DOCUMENT", "KIND", "CHARS", "CHUNKS", "VERSION", wrap=("DOCUMENT",))
    for d in data["document_list"]:
        table.add_row(d["name"], d["kind"], count(d["chars"]), str(d["chunks"]), str(d["version"]))
    console.print(table)


@app.command()
def rm(name: str) -> None:
    """Delete a knowledge base with its documents and indexes."""
    _run(lambda b: b.kb_delete(name))
    console.print(f"deleted {name}")


@app.command()
def search(name: str, query: str, k: Annotated[int, typer.Option("-k", help="passages")] = 5,
           mode: Annotated[str, typer.Option(help="hybrid, vector or keyword")] = "hybrid",
           json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The best passages for QUERY."""
    data = _run(lambda b: b.kb_search(name, query, k=k, mode=mode))
    if json_out:
        return print_json(data)
    table = new_table("#", "SCORE", "DOCUMENT", "CHUNK", "TEXT", wrap=("DOCUMENT", "TEXT"))
    for i, p in enumerate(data["data"], start=1):
        text = " ".join(p["text"].split())
        table.add_row(str(i), f"{p['score']:.4f}", p["document"], str(p["chunk"]), text[:160])
    console.print(table)
