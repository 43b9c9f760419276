"""Overload the daemon on loopback and check that it degrades the way it promises: hundreds of
concurrent clients (several times what the queues admit) send a mix of streaming chat, completions,
embeddings and classify calls. Requests are either served (200) or refused quickly with 429/503 and
Retry-After; anything else is a failure. Afterwards: every 200 has its request-log row, the daemon's
peak RSS stayed under its memory budget plus a fixed margin, and /health still answers.

The classifier is fine-tuned first by the daemon itself (`POST /v1/training/jobs`, minilm-l6 on
an SST-2 slice), so the classify traffic runs a real llmos-trained model. A default run takes about
three minutes; bounded in time (--seconds) and count (--requests).

    .venv/bin/python bench/load.py [--clients 300] [--seconds 60] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("alembic").setLevel(logging.WARNING)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import psutil  # noqa: E402

from common import DATASETS, free_port, instructions, start, stop, wait_healthy  # noqa: E402
from llmos.config import load_settings, parse_size  # noqa: E402
from llmos.data import Datasets, ImportOptions  # noqa: E402
from llmos.db.tables import RequestLog  # noqa: E402
from llmos.runtime import open_runtime  # noqa: E402

CHAT, ENCODER, CLASSIFIER = "smollm2-135m-instruct", "minilm-l6", "load-sst2"
MIX = {"chat_stream": 0.4, "completion": 0.2, "embeddings": 0.2, "classify": 0.2}
RSS_MARGIN = parse_size("1.5GiB")  # the interpreter, torch, tokenizers and HTTP buffers beside the models


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    rejected: Counter = field(default_factory=Counter)  # status -> count
    failures: Counter = field(default_factory=Counter)  # short description -> count
    latency_s: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def pct(self, q: float) -> float:
        xs = sorted(self.latency_s)
        return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))] if xs else float("nan")


class RssWatch(threading.Thread):
    """Samples the daemon's resident memory (and its children's: job runners) every 100 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return


def prepare(home: Path, rows: int) -> None:
    """Register the built-ins (SmolLM2 converted once) and an SST-2 slice to train the classifier on."""
    rt = open_runtime(load_settings(home=home))
    ds = Datasets.of(rt)
    if not any(d.name == "sst2-load" for d in ds.list()):
        for split, (file, skip, n) in {"train": ("train.tsv", 1000, rows), "validation": ("dev.tsv", 0, 100)}.items():
            lines = (DATASETS / "sst2" / file).read_text(encoding="utf-8").splitlines(keepends=True)
            src = home / f"sst2-{split}.tsv"
            src.write_text("".join(lines[:1] + lines[1 + skip:1 + skip + n]), encoding="utf-8")
            try:
                ds.import_file(src, "sst2-load", ImportOptions(split=split, append=split == "validation"))
            finally:
                src.unlink()
    rt.close()


def train_classifier(http: httpx.Client) -> None:
    """Fine-tune minilm-l6 through the daemon unless a previous run (same --home) already did."""
    if any(m["id"] == CLASSIFIER for m in http.get("/v1/models").json()["data"]):
        return
    body = {"model": ENCODER, "dataset": "sst2-load", "method": "full", "name": CLASSIFIER,
            "hyperparameters": {"epochs": 1, "batch_size": 16, "max_length": 64}}
    r = http.post("/v1/training/jobs", json=body)
    r.raise_for_status()
    job_id, t0 = r.json()["id"], time.monotonic()
    while (state := http.get(f"/v1/jobs/{job_id}").json()["state"]) not in ("succeeded", "failed", "cancelled"):
        time.sleep(1)
    if state != "succeeded":
        raise RuntimeError(f"training the classifier ended {state}: {http.get(f'/v1/jobs/{job_id}/logs').text[-2000:]}")
    print(f"trained {CLASSIFIER} (minilm-l6, full fine-tune on an SST-2 slice) in {time.monotonic() - t0:.0f} s",
          flush=True)


def request_for(kind: str, prompt: str, max_tokens: int) -> tuple[str, dict]:
    if kind == "chat_stream":
        return "/v1/chat/completions", {"model": CHAT, "messages": [{"role": "user", "content": prompt}],
                                        "max_tokens": max_tokens, "temperature": 0, "stream": True}
    if kind == "completion":
        return "/v1/completions", {"model": CHAT, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    if kind == "embeddings":
        return "/v1/embeddings", {"model": ENCODER, "input": [prompt, prompt[::-1]]}
    return "/v1/classify", {"model": CLASSIFIER, "input": [prompt]}


async def one(client: httpx.AsyncClient, kind: str, prompt: str, max_tokens: int, tally: Tally) -> float:
    """Send one request; returns how long to back off (Retry-After) when refused."""
    path, body = request_for(kind, prompt, max_tokens)
    tally.sent += 1
    t0 = time.perf_counter()
    try:
        if body.get("stream"):
            status, rid, retry, problem = await _stream(client, path, body)
        else:
            r = await client.post(path, json=body)
            status, rid, retry = r.status_code, r.headers.get("x-request-id"), r.headers.get("retry-after")
            problem = None if status in (200, 429, 503) else f"{kind}: HTTP {status} {r.text[:120]}"
    except httpx.HTTPError as exc:
        tally.failures[f"{kind}: {type(exc).__name__}"] += 1
        return 0.5
    if problem:
        tally.failures[problem] += 1
    elif status == 200:
        tally.ok += 1
        tally.latency_s.append(time.perf_counter() - t0)
        tally.ids.append(rid or "")
    else:
        tally.rejected[status] += 1
        if retry is None:
            tally.failures[f"{kind}: {status} without Retry-After"] += 1
        return min(float(retry or 1), 2.0)
    return 0.0


async def _stream(client: httpx.AsyncClient, path: str, body: dict) -> tuple[int, str | None, str | None, str | None]:
    async with client.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            await r.aread()
            bad = None if r.status_code in (429, 503) else f"chat_stream: HTTP {r.status_code} {r.text[:120]}"
            return r.status_code, None, r.headers.get("retry-after"), bad
        done, error = False, None
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: ") and "error" in (event := json.loads(line[6:])):
                error = f"chat_stream: streamed error {event['error'].get('code')}"
        return 200, r.headers.get("x-request-id"), None, error or (None if done else "chat_stream: no [DONE]")


async def client_loop(client: httpx.AsyncClient, rng: random.Random, prompts: list[str], args: argparse.Namespace,
                      deadline: float, tally: Tally) -> None:
    kinds, weights = list(MIX), list(MIX.values())
    while time.monotonic() < deadline and tally.sent < args.requests:
        backoff = await one(client, rng.choices(kinds, weights)[0], rng.choice(prompts), args.max_tokens, tally)
        await asyncio.sleep(backoff * rng.uniform(0.5, 1.5))


async def drive(url: str, args: argparse.Namespace, prompts: list[str]) -> Tally:
    tally = Tally()
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as client:
        deadline = time.monotonic() + args.seconds
        await asyncio.gather(*[client_loop(client, random.Random(i), prompts, args, deadline, tally)
                               for i in range(args.clients)])
    return tally


def logged_ids(home: Path, ids: list[str]) -> int:
    """How many of the acknowledged request ids have their request-log row (after the daemon stopped)."""
    rt = open_runtime(load_settings(home=home), builtins=False)
    try:
        with rt.db.session() as s:
            have = {rid for (rid,) in s.query(RequestLog.id).filter(RequestLog.id.in_(set(ids))).all()}
    finally:
        rt.close()
    return sum(1 for i in ids if i in have)


def report(t: Tally, wall: float, peak: int, budget: int, health: bool, logged: int, args: argparse.Namespace) -> bool:
    rejected = sum(t.rejected.values())
    print(f"{args.clients} clients, {wall:.0f} s, queues: max_queue {args.max_queue} / max_batch {args.max_batch} "
          f"per model, mix {MIX}")
    print(f"sent {t.sent}  completed {t.ok}  rejected {rejected} {dict(t.rejected)}  "
          f"other failures {sum(t.failures.values())}")
    for what, n in t.failures.most_common(10):
        print(f"  failure x{n}: {what}")
    print(f"latency of completed requests: p50 {t.pct(0.5):.2f} s  p95 {t.pct(0.95):.2f} s  p99 {t.pct(0.99):.2f} s")
    print(f"daemon peak RSS {peak / 2**30:.2f} GiB (memory budget {budget / 2**30:.2f} GiB + margin "
          f"{RSS_MARGIN / 2**30:.1f} GiB)")
    print(f"request-log rows for completed requests: {logged}/{t.ok};  /health at the end: "
          f"{'200 ok' if health else 'NO ANSWER'}")
    passed = not t.failures and health and peak <= budget + RSS_MARGIN and logged == t.ok
    print("PASS" if passed else "FAIL")
    return passed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=60, help="how long the clients keep sending")
    ap.add_argument("--requests", type=int, default=3000, help="stop after sending this many")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--max-queue", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--memory-budget", default="2GiB")
    ap.add_argument("--timeout", type=float, default=120, help="per-request client timeout (s)")
    ap.add_argument("--train-rows", type=int, default=400)
    ap.add_argument("--home", help="llmos home to reuse (keeps the trained classifier); default: a fresh one")
    args = ap.parse_args()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="llmos-load-"))
    prepare(home, args.train_rows)
    port, budget = free_port(), parse_size(args.memory_budget)
    env = {"LLMOS_HOME": str(home), "LLMOS_MAX_QUEUE": str(args.max_queue), "LLMOS_MAX_BATCH": str(args.max_batch),
           "LLMOS_MEMORY_BUDGET": str(budget), "LLMOS_POLICY": "fcfs"}
    proc = start([sys.executable, "-m", "llmos", "serve", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        with httpx.Client(base_url=url, timeout=600) as http:
            train_classifier(http)
            for path, body in (request_for(k, "warm up", 2) for k in MIX):  # load every model once
                http.post(path, json={**body, "stream": False} if "stream" in body else body).raise_for_status()
        watch = RssWatch(proc.pid)
        watch.start()
        t0 = time.monotonic()
        tally = asyncio.run(drive(url, args, instructions(200)))
        wall = time.monotonic() - t0
        watch.stopped.set()
        health = httpx.get(url + "/health", timeout=10).status_code == 200
    finally:
        stop(proc)
    ok = report(tally, wall, watch.peak, budget, health, logged_ids(home, tally.ids), args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
