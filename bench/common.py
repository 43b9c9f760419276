"""Helpers shared by the benchmarks: prompts from the shared datasets, servers, streaming clients."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def instructions(n: int) -> list[str]:
    """Real instructions (code_alpaca_2k) that ask for more than a few words."""
    rows = json.loads((DATASETS / "code_alpaca_2k" / "code_alpaca_2k.json").read_text())
    return [r["instruction"] + (f"\n{r['input']}" if r.get("input") else "") for r in rows[:n]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become healthy")


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:  # type: ignore[type-arg]
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass
class Result:
    tokens: int = 0
    wall_s: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0

    def pct(self, q: float) -> float:
        xs = sorted(self.ttft_s)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")

    @property
    def p50(self) -> float:
        return statistics.median(self.ttft_s) if self.ttft_s else float("nan")


async def _one(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int,
               t0: float, extra: dict | None = None) -> tuple[float, str, float]:  # type: ignore[type-arg]
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, **(extra or {})}
    first, parts = None, []
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"{url} streamed an error: {event['error']}")
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece:
                    first = first or time.perf_counter()
                    parts.append(piece)
    return (first or time.perf_counter()) - t0, "".join(parts), time.perf_counter()


async def _drive(url: str, models: list[str], prompts: list[str], max_tokens: int,
                 extra: dict | None = None) -> tuple[list, float]:  # type: ignore[type-arg]
    async with httpx.AsyncClient(timeout=600) as client:
        t0 = time.perf_counter()
        done = await asyncio.gather(*[_one(client, url, m, p, max_tokens, t0, extra) for m, p in zip(models, prompts)])
    return done, t0


def drive(url: str, models: list[str], prompts: list[str], max_tokens: int, count_tokens,  # type: ignore[no-untyped-def]
          extra: dict | None = None) -> Result:  # type: ignore[type-arg]
    """One streaming client per (model, prompt), all at once; tokens counted with the model's tokenizer.
    ``extra``: more request fields (e.g. a ``response_format``)."""
    done, t0 = asyncio.run(_drive(url, models, prompts, max_tokens, extra))
    res = Result(wall_s=max(end for _, _, end in done) - t0)
    for ttft, text, _ in done:
        res.ttft_s.append(ttft)
        res.texts.append(text)
        res.tokens += count_tokens(text)
    return res
