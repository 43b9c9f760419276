"""`llmos run` and `llmos chat`: generation in the running daemon (the model stays loaded between
invocations), or in this process when no daemon listens."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from typing import Annotated, Optional

import typer

from llmos.cli.common import console, err
from llmos.cli.generators import Generator, Sampling, open_generator
from llmos.engines.base import ChatMessage

MaxTokens = Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="most tokens to generate")]
Temperature = Annotated[float, typer.Option("--temperature", "-t", min=0.0, max=2.0, help="0 = greedy")]
Seed = Annotated[Optional[int], typer.Option(help="sampling seed, for reproducible output")]
Url = Annotated[Optional[str], typer.Option("--url", help="daemon URL (default: from settings); "
                                            "when nothing listens there, the model runs in this process")]


def _emit(pieces: Iterator[str]) -> str:
    """Write the pieces to stdout as they come, with a spinner on stderr until the first one."""
    with err.status("generating", spinner="dots"):
        first = list(itertools.islice(pieces, 1))
    text = []
    for piece in itertools.chain(first, pieces):
        sys.stdout.write(piece)
        sys.stdout.flush()
        text.append(piece)
    sys.stdout.write("\n")
    return "".join(text)


def run(
    model: str,
    prompt: str,
    max_tokens: MaxTokens = 128,
    temperature: Temperature = 0.0,
    seed: Seed = None,
    system: Annotated[Optional[str], typer.Option(help="system message (chat models)")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="plain completion, no chat template")] = False,
    url: Url = None,
) -> None:
    """Generate a reply to PROMPT with MODEL, streaming it to stdout."""
    gen = open_generator(model, Sampling(max_tokens, temperature, seed), url)
    try:
        if raw:
            _emit(gen.complete(prompt))
        else:
            msgs = ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", prompt)]
            _emit(gen.chat(msgs))
    finally:
        gen.close()


def chat(
    model: str,
    max_tokens: MaxTokens = 256,
    temperature: Temperature = 0.7,
    seed: Seed = None,
    system: Annotated[Optional[str], typer.Option(help="system message")] = None,
    url: Url = None,
) -> None:
    """Chat with MODEL interactively (streaming). Empty line or Ctrl-D quits; /reset clears history."""
    gen = open_generator(model, Sampling(max_tokens, temperature, seed), url)
    try:
        _converse(gen, system)
    finally:
        gen.close()


def _converse(gen: Generator, system: str | None) -> None:
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
        history.append(ChatMessage("assistant", _emit(gen.chat(history))))


def _read(interactive: bool) -> str | None:
    try:
        line = console.input("[bold cyan]>>> [/bold cyan]") if interactive else sys.stdin.readline()
    except (EOFError, KeyboardInterrupt):
        return None
    return line.rstrip("\r\n") if line else None
