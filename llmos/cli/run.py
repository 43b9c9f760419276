"""`llmos run` and `llmos chat`: generation in this process, no daemon needed."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from llmos.cli.common import console, err, runtime
from llmos.engines.base import ChatMessage, Engine
from llmos.engines.loader import base_of, load_engine
from llmos.errors import WrongTask
from llmos.kernel.local import stream
from llmos.kernel.placement import place
from llmos.kernel.request import SamplingParams

MaxTokens = Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="most tokens to generate")]
Temperature = Annotated[float, typer.Option("--temperature", "-t", min=0.0, help="0 = greedy")]
Seed = Annotated[Optional[int], typer.Option(help="sampling seed, for reproducible output")]


def _engine(name: str) -> Engine:
    rt = runtime()
    info = rt.store.registry.get(name)
    if "generate" not in info.manifest.tasks:
        gens = [i.ref for i in rt.store.registry.list() if "generate" in i.manifest.tasks]
        raise WrongTask(f"{info.ref} cannot generate text (it serves: {', '.join(info.manifest.tasks)}); "
                        f"models that can: {', '.join(gens) or 'none'}")
    base = base_of(rt.store.registry, info)
    engine = place(base.manifest, rt.settings.engine, task="generate", adapter=base is not info, scores=False).engine
    with console.status(f"loading {info.ref} ({engine} engine)", spinner="dots"):
        return load_engine(rt.store.registry, name, backend=engine)


def _emit(engine: Engine, ids: list[int], params: SamplingParams, adapter: str | None) -> str:
    text = []
    for out in stream(engine, ids, params, adapter):
        sys.stdout.write(out.text)
        sys.stdout.flush()
        text.append(out.text)
        if out.error:
            err.print(f"[red]error:[/red] {out.error}")
    sys.stdout.write("\n")
    return "".join(text)


def _adapter(engine: Engine, name: str) -> str | None:
    return name if name in engine.info().adapters else None


def run(
    model: str,
    prompt: str,
    max_tokens: MaxTokens = 128,
    temperature: Temperature = 0.0,
    seed: Seed = None,
    system: Annotated[Optional[str], typer.Option(help="system message (chat models)")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="plain completion, no chat template")] = False,
) -> None:
    """Generate a reply to PROMPT with MODEL, streaming it to stdout."""
    engine = _engine(model)
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    if raw:
        ids = engine.encode(prompt)
    else:
        msgs = ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", prompt)]
        ids = engine.encode_chat(msgs)
    _emit(engine, ids, params, _adapter(engine, model))


def chat(
    model: str,
    max_tokens: MaxTokens = 256,
    temperature: Temperature = 0.7,
    seed: Seed = None,
    system: Annotated[Optional[str], typer.Option(help="system message")] = None,
) -> None:
    """Chat with MODEL interactively (streaming). Empty line or Ctrl-D quits; /reset clears history."""
    engine = _engine(model)
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    history = [ChatMessage("system", system)] if system else []
    interactive = sys.stdin.isatty()
    while True:
        line = _read(interactive)
        if line is None or not line.strip():
            break
        if line.strip() == "/reset":
            history = history[:1] if system else []
            continue
        history.append(ChatMessage("user", line))
        reply = _emit(engine, engine.encode_chat(history), params, _adapter(engine, model))
        history.append(ChatMessage("assistant", reply))


def _read(interactive: bool) -> str | None:
    try:
        line = console.input("[bold cyan]>>> [/bold cyan]") if interactive else sys.stdin.readline()
    except (EOFError, KeyboardInterrupt):
        return None
    return line.rstrip("\r\n") if line else None
