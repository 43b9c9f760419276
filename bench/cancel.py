"""Cancellation does not leak: 1,000 streaming chats on the llama.cpp engine, each dropped by its
client after its first token (the kernel cancels it and the engine frees its slot), in waves of
``--wave`` at once. Prints the daemon's RSS after the first wave and after every 100, the sequences
still held at the end (``/admin/ps``) and whether a normal request is still answered.

    .venv/bin/python bench/cancel.py [--requests 1000] [--wave 16] [--engine llamacpp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import psutil  # noqa: E402

from common import free_port, instructions, start, stop, wait_healthy  # noqa: E402
from engines import cpu_flags  # noqa: E402

BASE = "smollm2-135m-instruct"


async def dropped(client: httpx.AsyncClient, url: str, prompt: str) -> bool:
    """One streamed chat, closed by the client at its first token; True when a token came."""
    body = {"model": BASE, "messages": [{"role": "user", "content": prompt}], "max_tokens": 256, "stream": True}
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):  # a real token, not the role's empty first chunk
                return True  # leaving the block closes the connection mid-stream
    return False


async def wave(url: str, prompts: list[str]) -> int:
    async with httpx.AsyncClient(timeout=600) as client:
        got = await asyncio.gather(*[dropped(client, url, p) for p in prompts])
    return sum(got)


def held(url: str) -> tuple[int, int]:
    """Sequences still running or waiting in the kernel, and those it counted as aborted."""
    queues = [m["queue"] for m in httpx.get(url + "/admin/ps", timeout=30).json()["models"] if m.get("queue")]
    return sum(q["running"] + q["waiting"] for q in queues), sum(q["aborted"] for q in queues)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--wave", type=int, default=16)
    ap.add_argument("--engine", default="llamacpp", choices=["llamacpp", "hf"])
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="llmos-bench-"))
    port = free_port()
    proc = start([sys.executable, "-m", "llmos", "serve", "--port", str(port)],
                 {"LLMOS_HOME": str(home), "LLMOS_ENGINE": args.engine, "LLMOS_MAX_BATCH": str(args.wave)})
    url = f"http://127.0.0.1:{port}"
    prompts = instructions(args.wave * 4)
    try:
        wait_healthy(url, proc)
        daemon = psutil.Process(proc.pid)
        sent = tokens = 0
        first_rss = None
        while sent < args.requests:
            n = min(args.wave, args.requests - sent)
            batch = [prompts[(sent + i) % len(prompts)] for i in range(n)]
            tokens += asyncio.run(wave(url, batch))
            sent += n
            rss = daemon.memory_info().rss / 2**20
            first_rss = first_rss or rss
            if sent == n or sent % 100 < args.wave or sent == args.requests:
                print(f"{sent:5d} dropped ({tokens} with a token)  daemon RSS {rss:7.1f} MiB", flush=True)
        still, aborted = held(url)
        answer = httpx.post(url + "/v1/chat/completions", timeout=120, json={
            "model": BASE, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}).json()
        rss = daemon.memory_info().rss / 2**20
        print(f"after {sent}: RSS {rss:.1f} MiB against {first_rss:.1f} MiB after the first wave "
              f"({rss - first_rss:+.1f} MiB); sequences still held: {still} (the kernel counted {aborted} aborted); a new request answered: "
              f"{bool(answer.get('choices'))}")
    finally:
        stop(proc)
    print(f"cpu flags: {cpu_flags()}")


if __name__ == "__main__":
    main()
