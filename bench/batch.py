"""Batches: chat latency while a batch of chat requests runs beside a steady interactive load.

A steady chat load (SmolLM2, a few streaming clients, short answers, think time between requests) is
measured on a real ``llmos serve`` daemon: alone; with a batch of --requests chat requests (short
max_tokens, co-scheduled: the batch's runner is frozen while interactive requests run); alone again.
The same batch also runs once with no load. It prints p50 / p95 time to first token of each phase and
the ratio against the load alone (both alone phases pooled; target: with the batch, p95 <= 1.25x),
and the batch's throughput in the gaps of the load against its throughput alone.

    .venv/bin/python bench/batch.py [--requests 500] [--clients 3] [--seconds 45] [--batch-tokens 8]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.cosched import BASE, Daemon, Phase, load, warm  # noqa: E402
from bench.common import instructions  # noqa: E402
from bench.engines import cpu_flags  # noqa: E402
from bench.trainkit import scratch  # noqa: E402
from llmos.config import load_settings  # noqa: E402
from llmos.runtime import open_runtime  # noqa: E402


def batch_file(n: int, max_tokens: int) -> bytes:
    prompts = instructions(max(n, 200))
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": BASE, "max_tokens": max_tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": prompts[i % len(prompts)]}]}} for i in range(n)]
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def submit(d: Daemon, data: bytes) -> str:
    f = d.http.post("/v1/files", files={"file": ("batch.jsonl", io.BytesIO(data))}, data={"purpose": "batch"})
    f.raise_for_status()
    r = d.http.post("/v1/batches", json={"input_file_id": f.json()["id"], "endpoint": "/v1/chat/completions",
                                         "completion_window": "24h"})
    r.raise_for_status()
    return r.json()["id"]


def batch_state(url: str, batch: str) -> dict:
    return httpx.get(f"{url}/v1/batches/{batch}", timeout=600).json()


def watch(url: str, batch: str, ended: threading.Event) -> None:
    while not ended.wait(0.5):
        if batch_state(url, batch)["status"] in ("completed", "failed", "cancelled"):
            ended.set()


def run_phase(d: Daemon, name: str, args: argparse.Namespace, data: bytes | None) -> tuple[Phase, float | None, dict]:
    """A load phase; with ``data``, a batch runs beside it and the phase lasts until it ends."""
    phase = Phase(name)
    batch = submit(d, data) if data is not None else None
    t0 = time.monotonic()
    ended = threading.Event()
    if batch is not None:
        threading.Thread(target=watch, args=(d.url, batch, ended), daemon=True).start()

    def done() -> bool:
        if time.monotonic() - t0 < args.seconds:
            return False
        return batch is None or ended.is_set() or time.monotonic() - t0 > args.max_batch_s

    asyncio.run(load(d.url, args.clients, args.max_tokens, args.think, done, phase.ttft_s))
    ended.set()
    if batch is None:
        return phase, None, {}
    state = batch_state(d.url, batch)
    wall = (state["completed_at"] or time.time()) - state["created_at"]
    return phase, wall, state


def batch_alone(d: Daemon, data: bytes) -> tuple[float, dict]:
    batch = submit(d, data)
    while (state := batch_state(d.url, batch))["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.5)
    return (state["completed_at"] or time.time()) - state["created_at"], state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=500, help="chat requests in the batch")
    ap.add_argument("--batch-tokens", type=int, default=8, help="max_tokens of each batch request")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=16, help="max_tokens of the interactive requests")
    ap.add_argument("--think", type=float, default=2.0, help="mean seconds a user waits between requests")
    ap.add_argument("--seconds", type=float, default=45.0, help="least seconds of load per phase")
    ap.add_argument("--max-batch-s", type=float, default=900.0, help="stop the load after this even if the batch runs")
    ap.add_argument("--home", type=Path, default=None, help="reuse a home (skips converting SmolLM2 again)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    home = args.home or Path(scratch()) / "home"
    open_runtime(load_settings(home=home)).close()  # the built-in models, registered once
    data = batch_file(args.requests, args.batch_tokens)
    t_start = time.monotonic()
    d = Daemon(home, cosched="true")
    try:
        warm(d)
        before, _, _ = run_phase(d, "alone, before", args, None)
        alone_s, alone = batch_alone(d, data)
        with_batch, gaps_s, gaps = run_phase(d, "load + batch", args, data)
        after, _, _ = run_phase(d, "alone, after", args, None)
    finally:
        d.close()
    report([before, with_batch, after], (alone_s, alone), (gaps_s or 0.0, gaps), args, time.monotonic() - t_start)


def report(phases: list[Phase], alone: tuple[float, dict], gaps: tuple[float, dict], args: argparse.Namespace,
           total_s: float) -> None:
    base = Phase("alone (pooled)", phases[0].ttft_s + phases[2].ttft_s)
    print(f"\ncpu flags: {cpu_flags()}")
    print(f"os.cpu_count: {os.cpu_count()}; load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"chat load: {args.clients} streaming clients, {args.max_tokens} tokens, think ~{args.think:.1f} s; "
          f"batch: {args.requests} chat requests of {args.batch_tokens} tokens ({BASE})")
    print(f"{'phase':<16}{'requests':>9}{'p50 ttft':>10}{'p95 ttft':>10}{'p95 / alone':>13}")
    for p in [base, *phases]:
        print(f"{p.name:<16}{len(p.ttft_s):>9}{p.pct(0.5) * 1000:>8.0f}ms{p.pct(0.95) * 1000:>8.0f}ms"
              f"{p.pct(0.95) / base.pct(0.95):>12.2f}x")
    rates = []
    for label, (wall, state) in (("batch alone", alone), ("batch in gaps", gaps)):
        counts = state.get("request_counts") or {}
        rate = counts.get("completed", 0) / wall if wall > 0 else 0.0
        rates.append(rate)
        print(f"{label:<16} {state.get('status')}: {counts.get('completed', 0)}/{counts.get('total', 0)} done, "
              f"{counts.get('failed', 0)} failed, {wall:.1f}s wall, {rate:.2f} requests/s")
    print(f"batch throughput in the gaps / alone: {rates[1] / rates[0] if rates[0] else float('nan'):.2f}x")
    with_batch = phases[1]
    ok = with_batch.pct(0.95) <= 1.25 * base.pct(0.95) and gaps[1].get("status") == "completed"
    print(f"target (with the batch: p95 <= 1.25x alone, batch completes): {'met' if ok else 'MISSED'}; "
          f"bench took {total_s:.0f}s")


if __name__ == "__main__":
    main()
