"""Cluster mode, from one run, as ratios: (a) the same streaming load against a local Ray cluster with
1 worker node and with 2 worker nodes of one CPU each (each worker pinned to its own core with
``taskset``), and (b) the engine as a Ray actor on one worker against the same engine in the daemon's
own process, both with one llama.cpp thread.

llmos places one engine per model, so the load goes to two names of SmolLM2 (the built-in and a copy
under another name, the same weights): with one worker both engines share its core, with two each has
one. Loopback only; every process this starts is stopped at the end.

    .venv/bin/python bench/cluster.py [--clients 8] [--max-tokens 64] [--home DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import psutil  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from common import Result, drive, free_port, instructions, start, stop, wait_healthy  # noqa: E402
from llmos.config import load_settings  # noqa: E402
from llmos.runtime import open_runtime  # noqa: E402
from llmos.store.importer import ImportOptions  # noqa: E402

BASE = "smollm2-135m-instruct"
COPY = "smollm2-b"
RAY = str(Path(sys.executable).with_name("ray"))
REPO = Path(__file__).resolve().parents[1]


class Cluster:
    """A head with no CPUs and ``workers`` one-CPU worker nodes, worker i pinned to core i."""

    def __init__(self, workers: int) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="llmos-bray-", dir="/tmp"))
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.procs = [subprocess.Popen([RAY, "start", "--head", "--block", "--port", str(self.port), "--num-cpus", "0",
                                        "--temp-dir", str(self.temp), "--include-dashboard", "false",
                                        "--disable-usage-stats"], env=env, start_new_session=True,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        time.sleep(5)  # the head's GCS port; the daemon's own check fails loudly if it is not up yet
        for i in range(workers):
            self.procs.append(self._worker(i, env))
        self.workers = workers

    def _worker(self, i: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Worker node i, started one at a time: two nodes starting at once on one host can race for
        the same port, and the loser's ``ray start`` exits; it is started again (three tries)."""
        for _ in range(3):
            proc = subprocess.Popen(
                ["taskset", "-c", str(i % os.cpu_count()), RAY, "start", "--block", "--address",  # type: ignore[operator]
                 f"127.0.0.1:{self.port}", "--num-cpus", "1", "--disable-usage-stats"],
                env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=20)  # still running after its start-up: it joined
            except subprocess.TimeoutExpired:
                return proc
        raise RuntimeError(f"worker node {i} could not start")

    @property
    def address(self) -> str:
        return f"ray://127.0.0.1:{self.port}"

    def stop(self) -> None:
        for proc in reversed(self.procs):
            try:
                tree = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                tree = []
            for p in tree:
                try:
                    p.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass
            proc.kill()
            proc.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


def daemon(home: Path, args, prompts, count, models: list[str], cluster: Cluster | None) -> Result:  # type: ignore[no-untyped-def]
    port = free_port()
    cmd = [sys.executable, "-m", "llmos", "serve", "--port", str(port)]
    if cluster is not None:
        cmd += ["--cluster", cluster.address]
    proc = start(cmd, {"LLMOS_HOME": str(home), "LLMOS_MAX_BATCH": str(args.clients), "LLMOS_ENGINE": "llamacpp",
                       "LLMOS_LLAMACPP_THREADS": "1", "LLMOS_MAX_QUEUE": "256", "PYTHONPATH": str(REPO),
                       "LLMOS_CLUSTER_CACHE": str(home / "node-cache")})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        if cluster is not None:
            wait_nodes(url, cluster.workers)
        drive(url, models, ["Say hello."] * len(models), 4, count)  # loads (and ships) every engine first
        names = [models[i % len(models)] for i in range(args.clients)]
        best = None
        for _ in range(args.rounds):
            r = drive(url, names, prompts[:args.clients], args.max_tokens, count)
            best = r if best is None or r.tok_s > best.tok_s else best
        return best  # type: ignore[return-value]
    finally:
        stop(proc)


def wait_nodes(url: str, n: int, timeout: float = 300.0) -> None:
    """Until the daemon lists ``n`` worker nodes among its devices (it adds nodes that join later)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(d["kind"] == "node" for d in httpx.get(url + "/admin/ps", timeout=30).json()["devices"]) >= n:
            return
        time.sleep(1)
    raise RuntimeError(f"the cluster did not reach {n} worker node(s) in {timeout:.0f} s")


def line(name: str, r: Result) -> str:
    return (f"{name:<44} {r.tok_s:7.1f} tok/s  ({r.tokens} tokens in {r.wall_s:5.1f} s)  "
            f"TTFT p50 {r.p50:5.2f} s  p95 {r.pct(0.95):5.2f} s")


def cpu_flags() -> str:
    for text in Path("/proc/cpuinfo").read_text().splitlines():
        if text.startswith("flags"):
            return text.split(":", 1)[1].strip()
    return "unknown"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="load rounds per setup; the best is kept")
    ap.add_argument("--home", help="llmos home (default: a fresh temporary one)")
    args = ap.parse_args()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="llmos-bench-"))
    rt = open_runtime(load_settings(home=home))
    folder = rt.store.registry.snapshot(rt.store.registry.get(BASE))
    if not rt.store.registry.exists(COPY):
        rt.store.importer.import_path(folder, COPY, ImportOptions())
    rt.close()
    tok = AutoTokenizer.from_pretrained(folder)

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False))

    prompts = instructions(args.clients)
    print(f"{args.clients} streaming clients, {args.max_tokens} max new tokens, greedy, {os.cpu_count()} cores; "
          f"before: {uptime()}", flush=True)
    results: dict[str, Result] = {}
    for name, workers, models in (("1 worker, 2 engines on its core", 1, [BASE, COPY]),
                                  ("2 workers, 1 engine on each core", 2, [BASE, COPY]),
                                  ("1 worker, actor engine", 1, [BASE])):
        cluster = Cluster(workers)
        try:
            results[name] = daemon(home, args, prompts, count, models, cluster)
        finally:
            cluster.stop()
        print(line(name, results[name]), flush=True)
    results["in-process engine, 1 thread"] = daemon(home, args, prompts, count, [BASE], None)
    print(line("in-process engine, 1 thread", results["in-process engine, 1 thread"]), flush=True)
    one, two, actor, local = results.values()
    print(f"ratio 2 workers / 1 worker tok/s {two.tok_s / one.tok_s:.2f}x (target >= 1.6x)")
    print(f"ratio actor engine / in-process engine tok/s {actor.tok_s / local.tok_s:.2f}x "
          f"(overhead {100 * (1 - actor.tok_s / local.tok_s):.1f}%, target <= 10%)")
    print(f"after: {uptime()}")
    print(f"cpu flags: {cpu_flags()}")


if __name__ == "__main__":
    main()
