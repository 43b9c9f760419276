"""Co-scheduling: chat latency while a fine-tune runs on the same machine, from one run.

A steady chat load (SmolLM2, a few streaming clients, short answers, think time between requests)
is measured on the llmos daemon: alone; with a fine-tune job (minilm-l6 on an SST-2 slice) running
and co-scheduling on; alone again; and with the same job and co-scheduling off. It prints the
p50 / p95 time to first token of each, the ratios against the load alone (both alone phases pooled:
target, co-scheduling on <= 1.25x at p95) and the job's wall time in each case (and alone, without
traffic, for reference).
Each daemon is a real ``llmos serve`` process; the job is a real runner process.

    .venv/bin/python bench/cosched.py [--clients 3] [--seconds 45] [--rows 256] [--job-threads 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.common import _one, free_port, instructions, start, stop, wait_healthy  # noqa: E402
from bench.trainkit import DATASETS, MINILM, head_lines, import_splits, scratch  # noqa: E402
from llmos.config import load_settings  # noqa: E402
from llmos.runtime import open_runtime  # noqa: E402

BASE = "smollm2-135m-instruct"


@dataclass
class Phase:
    name: str
    ttft_s: list[float] = field(default_factory=list)
    job_wall_s: float | None = None
    job_state: str | None = None
    pauses: int = 0
    share_resumes: int = 0  # holds lifted early to keep the job's minimum share

    def pct(self, q: float) -> float:
        xs = sorted(self.ttft_s)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def prepare(home: Path, rows: int) -> None:
    """Built-in models (SmolLM2 converted once per home) and the SST-2 slice, imported like a user would."""
    rt = open_runtime(load_settings(home=home))
    tmp = scratch()
    import_splits(rt, "sst2", [(head_lines(DATASETS / "sst2/train.tsv", rows, tmp / "train.tsv"), "train"),
                               (head_lines(DATASETS / "sst2/dev.tsv", 100, tmp / "dev.tsv"), "validation")])
    rt.close()


class Daemon:
    def __init__(self, home: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {"LLMOS_HOME": str(home), "LLMOS_KEEP_ALIVE": "3600",
               **{f"LLMOS_{k.upper()}": str(v) for k, v in settings.items()}}
        self.proc = start([sys.executable, "-m", "llmos", "serve", "--port", str(self.port)], env=env)
        wait_healthy(self.url, self.proc)
        self.http = httpx.Client(base_url=self.url, timeout=600)

    def close(self) -> None:
        self.http.close()
        stop(self.proc)


def submit_job(d: Daemon, name: str, rows: int) -> str:
    r = d.http.post("/v1/training/jobs", json={
        "model": MINILM, "dataset": "sst2", "method": "full", "name": name,
        "hyperparameters": {"epochs": 1, "batch_size": 16, "max_length": 64, "max_train_rows": rows,
                            "max_eval_rows": 100}})
    r.raise_for_status()
    return r.json()["id"]


def job_wall(d: Daemon, job_id: str) -> tuple[float, str]:
    job = d.http.get(f"/v1/jobs/{job_id}").json()
    start_at, end_at = job["created_at"], job["finished_at"] or datetime.now().astimezone().isoformat()
    return (datetime.fromisoformat(end_at) - datetime.fromisoformat(start_at)).total_seconds(), job["state"]


async def load(url: str, clients: int, max_tokens: int, think_s: float, done, out: list[float]) -> None:  # type: ignore[no-untyped-def]
    """``clients`` closed-loop chat users (think time ~ exponential) until ``done()``; TTFTs into ``out``."""
    prompts = instructions(200)

    async def user(i: int) -> None:
        rng = random.Random(i)
        while not done():
            await asyncio.sleep(rng.expovariate(1 / think_s))
            if done():
                return
            ttft, _, _ = await _one(client, url, BASE, rng.choice(prompts), max_tokens, time.perf_counter())
            out.append(ttft)

    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*[user(i) for i in range(clients)])


def run_phase(d: Daemon, name: str, args: argparse.Namespace, *, job: bool) -> Phase:
    phase = Phase(name)
    job_id = submit_job(d, "cosched-" + name.split()[-1], args.rows) if job else None
    t0 = time.monotonic()
    ended = threading.Event()  # the job's end, watched from a thread: a blocking poll inside the load's
    if job_id is not None:    # event loop would delay its streams and add to the measured TTFT
        threading.Thread(target=watch_job, args=(d.url, job_id, ended), daemon=True).start()

    def done() -> bool:
        if time.monotonic() - t0 < args.seconds:
            return False
        return job_id is None or ended.is_set() or time.monotonic() - t0 > args.max_job_s

    asyncio.run(load(d.url, args.clients, args.max_tokens, args.think, done, phase.ttft_s))
    ended.set()
    if job_id is not None:
        if d.http.get(f"/v1/jobs/{job_id}").json()["state"] not in ("succeeded", "failed", "cancelled"):
            d.http.post(f"/v1/jobs/{job_id}/cancel")  # over --max-job-s: it must not run into the next phase
            d.http.get(f"/v1/jobs/{job_id}")
            time.sleep(2)
        phase.job_wall_s, phase.job_state = job_wall(d, job_id)
        r = d.http.get(f"/v1/jobs/{job_id}/events", params={"kind": "state", "limit": 10_000})
        r.raise_for_status()
        phase.pauses = sum(1 for e in r.json()["data"] if e["data"].get("state") == "paused")
        stats = d.http.get("/admin/ps").json().get("cosched") or {}
        phase.share_resumes = stats.get("share_resumes", 0) - getattr(d, "share_resumes", 0)
        d.share_resumes = stats.get("share_resumes", 0)  # type: ignore[attr-defined]
    return phase


def watch_job(url: str, job_id: str, ended: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=600) as http:
        while not ended.wait(0.5):
            if http.get(f"/v1/jobs/{job_id}").json()["state"] in ("succeeded", "failed", "cancelled"):
                ended.set()


def job_alone(d: Daemon, args: argparse.Namespace) -> float:
    job_id = submit_job(d, "cosched-alone", args.rows)
    while d.http.get(f"/v1/jobs/{job_id}").json()["state"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.5)
    return job_wall(d, job_id)[0]


def warm(d: Daemon) -> None:
    r = d.http.post("/v1/chat/completions", json={"model": BASE, "max_tokens": 4,
                                                  "messages": [{"role": "user", "content": "Hi"}]})
    r.raise_for_status()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--think", type=float, default=2.0, help="mean seconds a user waits between requests")
    ap.add_argument("--seconds", type=float, default=45.0, help="least seconds of load per phase")
    ap.add_argument("--rows", type=int, default=256, help="SST-2 training rows of the fine-tune")
    ap.add_argument("--job-threads", type=int, default=0, help="LLMOS_JOB_THREADS for the job's runner")
    ap.add_argument("--max-job-s", type=float, default=240.0, help="stop the load after this even if the job runs")
    ap.add_argument("--home", type=Path, default=None, help="reuse a home (skips converting SmolLM2 again)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    home = args.home or Path(scratch()) / "home"
    t_start = time.monotonic()
    prepare(home, max(args.rows, 256))
    phases: list[Phase] = []
    common = {"job_threads": args.job_threads}
    d = Daemon(home, cosched="true", **common)
    try:
        warm(d)
        phases.append(run_phase(d, "alone, before", args, job=False))
        alone_job = job_alone(d, args)
        phases.append(run_phase(d, "job + cosched on", args, job=True))
        phases.append(run_phase(d, "alone, after", args, job=False))
    finally:
        d.close()
    d = Daemon(home, cosched="false", **common)
    try:
        warm(d)
        phases.append(run_phase(d, "job + cosched off", args, job=True))
    finally:
        d.close()
    report(phases, alone_job, args, time.monotonic() - t_start)


def report(phases: list[Phase], alone_job: float, args: argparse.Namespace, total_s: float) -> None:
    """The baseline pools the load alone before and after the co-scheduled phase, so a drift of the
    machine's speed during the run (a shared host) does not count for or against co-scheduling."""
    base = Phase("alone (pooled)", phases[0].ttft_s + phases[2].ttft_s)
    phases = [base, *phases]
    print(f"\nchat load: {args.clients} streaming clients, {args.max_tokens} tokens, think ~{args.think:.1f} s; "
          f"fine-tune: {MINILM} full on {args.rows} SST-2 rows (job threads: {args.job_threads or 'default'})")
    print(f"{'phase':<20}{'requests':>9}{'p50 ttft':>10}{'p95 ttft':>10}{'p95 / alone':>13}{'job wall':>10}"
          f"{'pauses':>8}{'share':>7}  job")
    for p in phases:
        wall = f"{p.job_wall_s:.1f}s" if p.job_wall_s is not None else "-"
        print(f"{p.name:<20}{len(p.ttft_s):>9}{p.pct(0.5) * 1000:>8.0f}ms{p.pct(0.95) * 1000:>8.0f}ms"
              f"{p.pct(0.95) / base.pct(0.95):>12.2f}x{wall:>10}{p.pauses:>8}{p.share_resumes:>7}  {p.job_state or '-'}")
    print(f"job alone (no traffic): {alone_job:.1f}s wall; share: holds lifted to keep the job's minimum share")
    on = next(p for p in phases if p.name == "job + cosched on")
    ok = on.pct(0.95) <= 1.25 * base.pct(0.95) and on.job_state == "succeeded"
    print(f"target (cosched on: p95 <= 1.25x alone, job completes): {'met' if ok else 'MISSED'}; "
          f"bench took {total_s:.0f}s")


if __name__ == "__main__":
    main()
