"""Where the first tokens of a burst go: 16 streaming chats sent at once, timed at every stage.

Each server gets a warm-up burst (its slots then hold other prompts), a "cold" burst of new prompts,
and the same burst again ("warm": every prompt is in some slot's cache). For llmos the daemon runs in a
child process with a timestamp at each stage of a request (``perf_counter``: one system-wide clock on
Linux, which the client's ``bench/common`` driver reads too): the HTTP request in, the model resolved, the request queued (``submit``), its sequence handed to
llama.cpp (``engine start``) and llama.cpp's first chunk; the client stamps the first content token.
Rows (``--rows``, all by default): llmos on the llama.cpp engine with the shared KV cache (default),
the same with the kernel's remembered resolutions off (every request reads the registry), with
llama.cpp's idle-slot saving off, with the per-slot KV cache, and llama.cpp's own server on the same GGUF.

    .venv/bin/python bench/burst.py [--clients 16] [--max-tokens 64] [--threads 2]
                                    [--rows default,unremembered,idle-off,per-slot,server]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402

from common import _drive, free_port, instructions, stop, wait_healthy  # noqa: E402
from engines import SERVER, cpu_flags  # noqa: E402

MODEL = "smollm2-135m-instruct"
STAGES = ("http in", "resolved", "submit", "engine start", "first chunk")
ROWS = {"default": ("llmos, shared KV (default)", {}),
        "unremembered": ("llmos, shared KV, resolutions not remembered", {"BENCH_REMEMBER": "0"}),
        "idle-off": ("llmos, shared KV, idle-slot saving off", {"BENCH_IDLE_SAVE": "0"}),
        "per-slot": ("llmos, per-slot KV", {"LLMOS_LLAMACPP_KV": "per-slot"})}


def serve(home: str, port: int) -> None:
    """The daemon with stage stamps (``--serve``); ``GET /bench/stamps`` hands them over and clears them."""
    import uvicorn

    import xllamacpp
    from llmos.config import load_settings
    from llmos.daemon import create_app
    from llmos.engines import llamacpp
    from llmos.kernel import core, worker
    from llmos.runtime import open_runtime

    stamps: dict[str, list[float]] = collections.defaultdict(list)
    lock = threading.Lock()

    def mark(stage: str) -> None:
        with lock:
            stamps[stage].append(time.perf_counter())  # CLOCK_MONOTONIC on Linux: the client's clock too

    def after(owner, name: str, stage: str, each=None) -> None:  # type: ignore[no-untyped-def]
        original = getattr(owner, name)

        def wrapped(*a, **k):  # type: ignore[no-untyped-def]
            out = original(*a, **k)
            for _ in (each(*a) if each else [None]):
                mark(stage)
            return out
        setattr(owner, name, wrapped)

    def before(owner, name: str, stage: str, each=None) -> None:  # type: ignore[no-untyped-def]
        original = getattr(owner, name)

        def wrapped(*a, **k):  # type: ignore[no-untyped-def]
            for _ in (each(*a) if each else [None]):
                mark(stage)
            return original(*a, **k)
        setattr(owner, name, wrapped)

    after(core.Kernel, "resolve", "resolved")
    before(worker.ModelWorker, "submit", "submit")
    before(llamacpp.LlamaCppEngine, "start", "engine start", each=lambda _self, seqs, _emit: seqs)
    chunk = llamacpp._Stream.on_chunk

    def first_chunk(self, c):  # type: ignore[no-untyped-def]
        if not getattr(self, "_stamped", False):
            self._stamped = True
            mark("first chunk")
        return chunk(self, c)
    llamacpp._Stream.on_chunk = first_chunk
    server = xllamacpp.Server

    def idle_saving(params):  # type: ignore[no-untyped-def]
        if os.environ.get("BENCH_IDLE_SAVE") == "0":
            params.cache_idle_slots = False
        return server(params)
    xllamacpp.Server = idle_saving
    if os.environ.get("BENCH_REMEMBER") == "0":
        cache = core.ClockedCache
        core.ClockedCache = lambda: cache(max_entries=0)  # type: ignore[assignment,misc]
    app = create_app(open_runtime(load_settings(home=Path(home))))

    async def stamped(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http" and scope["path"] == "/bench/stamps":
            with lock:
                body = json.dumps(stamps).encode()
                stamps.clear()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
            mark("http in")
        await app(scope, receive, send)

    uvicorn.run(stamped, host="127.0.0.1", port=port, log_level="warning")


def stage_line(name: str, t0: float, times: list[float]) -> str:
    xs = sorted(t - t0 for t in times)
    if not xs:
        return f"{name:>14}: -"
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return f"{name:>14}: p50 {xs[len(xs) // 2] * 1000:6.0f} ms  p95 {p95 * 1000:6.0f} ms"


def measure(label: str, url: str, prompts: list[str], warm_up: list[str], max_tokens: int, llmos: bool) -> None:
    models = [MODEL] * len(prompts)
    asyncio.run(_drive(url, models, warm_up, 4))
    for phase in ("cold", "warm"):
        if llmos:
            httpx.get(url + "/bench/stamps")
        done, t0 = asyncio.run(_drive(url, models, prompts, max_tokens))
        print(f"{label}, {phase} burst")
        if llmos:
            stamps = httpx.get(url + "/bench/stamps").json()
            for stage in STAGES:
                print(stage_line(stage, t0, stamps.get(stage, [])))
        print(stage_line("first token", 0.0, [ttft for ttft, _, _ in done]), flush=True)


def server_row(gguf: Path, prompts: list[str], warm_up: list[str], a: argparse.Namespace) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(gguf), str(port), str(a.clients),
                             str(max(8192, a.clients * 1024)), str(a.threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        measure("llama.cpp's own server (same GGUF, one slot per client)", f"http://127.0.0.1:{port}", prompts,
                warm_up, a.max_tokens, llmos=False)
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--home", help="llmos home (default: a fresh temporary one)")
    ap.add_argument("--rows", default=",".join(ROWS) + ",server", help="which servers, in this order")
    ap.add_argument("--serve", nargs=2, metavar=("HOME", "PORT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        return serve(a.serve[0], int(a.serve[1]))
    unknown = [r for r in a.rows.split(",") if r not in ROWS and r != "server"]
    if unknown:
        ap.error(f"unknown rows {', '.join(unknown)}; choose from {', '.join(ROWS)}, server")
    home = a.home or tempfile.mkdtemp(prefix="llmos-bench-")
    from llmos.config import load_settings
    from llmos.runtime import open_runtime

    registry = open_runtime(load_settings(home=Path(home))).store.registry  # the built-ins, registered once
    gguf = registry.snapshot(registry.get(MODEL)) / "model.gguf"
    texts = instructions(2 * a.clients)
    prompts, warm_up = texts[:a.clients], texts[a.clients:]
    base = {"LLMOS_HOME": home, "LLMOS_MAX_BATCH": str(a.clients), "LLMOS_LLAMACPP_THREADS": str(a.threads)}
    for row in a.rows.split(","):
        if row == "server":
            server_row(gguf, prompts, warm_up, a)
            continue
        label, env = ROWS[row]
        port = free_port()
        proc = subprocess.Popen([sys.executable, __file__, "--serve", home, str(port)], env={**os.environ, **base, **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc)
            measure(label, f"http://127.0.0.1:{port}", prompts, warm_up, a.max_tokens, llmos=True)
        finally:
            stop(proc)
    print(f"cpu flags: {cpu_flags()}")


if __name__ == "__main__":
    main()
