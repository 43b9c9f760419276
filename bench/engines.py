"""llmos's two engines against llama.cpp's own server and ``transformers serve``, from ONE run, each server alone, the same
streaming chat load (code_alpaca instructions, greedy) at 1 client (3 requests one after another) and
at N concurrent clients:

- llmos on the llama.cpp engine (the built-in SmolLM2's Q4_1 GGUF, LLMOS_ENGINE=llamacpp), with its
  default shared KV cache and again with LLMOS_LLAMACPP_KV=per-slot,
- llmos on the transformers engine (the same weights dequantised to fp32, LLMOS_ENGINE=hf),
- llama.cpp's own server (the binding's server, on its HTTP port) on the same GGUF file,
- ``transformers serve --continuous-batching`` on the fp32 weights.

Before the timed runs every server is warmed up with as many other instructions as it has slots, so
each is measured in use, not cold. ``--threads`` fixes llama.cpp's threads in both llama.cpp servers
(default: each picks by the load average, as llmos does); ``--only`` runs some of the servers.

Prints tokens/s, time to first token p50 / p95, the ratios the targets are stated in, and the CPU
flags. Loopback only.

With ``--adapters N`` (default 4) it also runs the adapter load on the llama.cpp engine: N random
LoRA adapters of SmolLM2, the largest client count spread over them round-robin, against the same
clients on the base alone, in one llmos server (base first, then the adapters, each warmed up so
conversion and context start are not timed). ``--adapters-only`` runs just that.

    .venv/bin/python bench/engines.py [--clients 16 64] [--max-tokens 64] [--adapters 4] [--adapters-only]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("alembic").setLevel(logging.WARNING)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transformers import AutoTokenizer  # noqa: E402

from common import Result, drive, free_port, instructions, start, stop, wait_healthy  # noqa: E402
from llmos.config import load_settings  # noqa: E402
from llmos.engines.llamacpp_server import default_threads, usable_cores  # noqa: E402
from llmos.runtime import open_runtime  # noqa: E402

BASE = "smollm2-135m-instruct"
SERVER = """
import sys, threading, xllamacpp
p = xllamacpp.CommonParams()
p.model.path, p.port, p.hostnames = sys.argv[1], int(sys.argv[2]), ["127.0.0.1"]
p.n_parallel, p.n_ctx = int(sys.argv[3]), int(sys.argv[4])
p.cpuparams.n_threads = p.cpuparams_batch.n_threads = int(sys.argv[5])
p.verbosity = -1
server = xllamacpp.Server(p)
threading.Event().wait()
"""


def merge(results: list[Result]) -> Result:
    out = Result()
    for r in results:
        out.tokens += r.tokens
        out.wall_s += r.wall_s
        out.ttft_s += r.ttft_s
    return out


def load(url: str, model: str, prompts: list[str], clients: list[int], max_tokens: int, count) -> dict[int, Result]:  # type: ignore[no-untyped-def]
    """Warm-up first: the model loaded and every slot used once, by other instructions than the timed
    ones (a server in use, not a cold one: each keeps what its slots cached as it would)."""
    slots = max(clients)
    drive(url, [model] * slots, instructions(2 * slots)[slots:], 4, count)
    out = {}
    for n in clients:
        if n == 1:  # one client: three requests, each alone
            out[1] = merge([drive(url, [model], [p], max_tokens, count) for p in prompts[:3]])
        else:
            out[n] = drive(url, [model] * n, prompts[:n], max_tokens, count)
    return out


def llmos_server(home: Path, engine: str, slots: int, args, prompts, count, kv: str = "shared") -> dict[int, Result]:  # type: ignore[no-untyped-def]
    port = free_port()
    proc = start([sys.executable, "-m", "llmos", "serve", "--port", str(port)],
                 {"LLMOS_HOME": str(home), "LLMOS_MAX_BATCH": str(slots), "LLMOS_ENGINE": engine, "LLMOS_LLAMACPP_KV": kv,
                  "LLMOS_MAX_QUEUE": str(max(64, slots)), "LLMOS_LLAMACPP_THREADS": str(args.threads or 0)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        return load(url, BASE, prompts, args.clients, args.max_tokens, count)
    finally:
        stop(proc)


def llama_server(gguf: Path, slots: int, args, prompts, count) -> dict[int, Result]:  # type: ignore[no-untyped-def]
    port = free_port()
    kv = max(8192, slots * 1024)
    proc = start([sys.executable, "-c", SERVER, str(gguf), str(port), str(slots), str(kv), str(args.threads or default_threads())])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        return load(url, BASE, prompts, args.clients, args.max_tokens, count)
    finally:
        stop(proc)


def transformers_serve(folder: Path, slots: int, args, prompts, count) -> dict[int, Result]:  # type: ignore[no-untyped-def]
    """``transformers serve --continuous-batching`` on the same weights in fp32, its paged cache
    bounded (its default sizes it from host RAM): 4 blocks per client."""
    port = free_port()
    proc = start([str(Path(sys.executable).parent / "transformers"), "serve", str(folder), "--continuous-batching",
                  "--device", "cpu", "--port", str(port), "--dtype", "float32",
                  "--cb-num-blocks", str(max(64, 4 * slots)), "--cb-max-batch-tokens", "512"])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        return load(url, str(folder), prompts, args.clients, args.max_tokens, count)
    finally:
        stop(proc)


def make_adapters(rt, folder: Path, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    """``n`` random LoRA adapters (q / v, rank 8) of the base, imported once into the bench's home."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmos.store.importer import ImportOptions

    names = [f"bench-lora-{i}" for i in range(n)]
    for i, name in enumerate(names):
        if rt.store.registry.exists(name):
            continue
        torch.manual_seed(i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder),
                               LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        out = Path(tempfile.mkdtemp(prefix="bench-lora-")) / name
        model.save_pretrained(out)
        rt.store.importer.import_path(out, name, ImportOptions(parent=BASE))
    return names


def adapter_run(home: Path, adapters: list[str], n: int, args, prompts, count) -> tuple[Result, Result]:  # type: ignore[no-untyped-def]
    """(base alone, adapters round-robin) at ``n`` clients, in one llmos server on the llama.cpp engine."""
    port = free_port()
    proc = start([sys.executable, "-m", "llmos", "serve", "--port", str(port)],
                 {"LLMOS_HOME": str(home), "LLMOS_MAX_BATCH": str(n), "LLMOS_ENGINE": "llamacpp",
                  "LLMOS_MAX_QUEUE": str(max(64, n)), "LLMOS_LLAMACPP_THREADS": str(args.threads or 0)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        drive(url, [BASE] * 2, prompts[:2], 4, count)
        base = drive(url, [BASE] * n, prompts[:n], args.max_tokens, count)
        drive(url, adapters, prompts[:len(adapters)], 4, count)  # converts and loads every adapter
        mixed = drive(url, [adapters[i % len(adapters)] for i in range(n)], prompts[:n], args.max_tokens, count)
        return base, mixed
    finally:
        stop(proc)


def line(name: str, r: Result) -> str:
    return (f"{name:<34} {r.tok_s:7.1f} tok/s  ({r.tokens} tokens in {r.wall_s:5.1f} s)  "
            f"TTFT p50 {r.p50:5.2f} s  p95 {r.pct(0.95):5.2f} s")


def ratios(runs: dict[str, dict[int, Result]], clients: list[int]) -> None:
    fast, slots, server, hf, tfserve = (runs.get(k) for k in ("llamacpp", "slots", "server", "hf", "tfserve"))
    for n in clients:
        parts = []
        if fast and server:
            parts.append(f"llmos(llama.cpp) / llama.cpp server tok/s {fast[n].tok_s / server[n].tok_s:.2f}x, "
                         f"TTFT p95 {fast[n].pct(0.95) / server[n].pct(0.95):.2f}x")
        if slots and server:
            parts.append(f"llmos(llama.cpp, per-slot KV) / llama.cpp server tok/s {slots[n].tok_s / server[n].tok_s:.2f}x, "
                         f"TTFT p95 {slots[n].pct(0.95) / server[n].pct(0.95):.2f}x")
        if fast and hf:
            parts.append(f"llmos(llama.cpp) / llmos(transformers) tok/s {fast[n].tok_s / hf[n].tok_s:.2f}x")
        if hf and tfserve:
            parts.append(f"llmos(transformers) / transformers serve tok/s {hf[n].tok_s / tfserve[n].tok_s:.2f}x")
        if fast and tfserve:
            parts.append(f"llmos(llama.cpp) / transformers serve tok/s {fast[n].tok_s / tfserve[n].tok_s:.2f}x")
        if parts:
            print(f"ratio {n:>3} clients: " + "; ".join(parts))


def cpu_flags() -> str:
    for text in Path("/proc/cpuinfo").read_text().splitlines():
        if text.startswith("flags"):
            return text.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--home", help="llmos home (default: a fresh temporary one)")
    ap.add_argument("--threads", type=int, default=0,
                    help="llama.cpp threads of both llama.cpp servers (default 0: each picks by the load, as llmos does)")
    ap.add_argument("--only", nargs="+", choices=["llamacpp", "slots", "server", "hf", "tfserve"], help="run only these servers")
    ap.add_argument("--adapters", type=int, default=4, help="LoRA adapters in the adapter run (0: no such run)")
    ap.add_argument("--adapters-only", action="store_true", help="run only the adapter comparison")
    args = ap.parse_args()
    args.clients = sorted(set(args.clients))
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="llmos-bench-"))
    rt = open_runtime(load_settings(home=home))
    info = rt.store.registry.get(BASE)
    folder = rt.store.registry.snapshot(info)
    tok = AutoTokenizer.from_pretrained(folder)

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False))

    slots = max(args.clients)
    prompts = instructions(slots)
    print(f"clients {args.clients}, {args.max_tokens} max new tokens, greedy, {usable_cores()} cores, "
          f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    if args.adapters:
        n = max(args.clients)
        base, mixed = adapter_run(home, make_adapters(rt, folder, args.adapters), n, args, prompts, count)
        print(line(f"llama.cpp engine, base alone, {n} clients", base), flush=True)
        print(line(f"llama.cpp engine, {args.adapters} adapters, {n} clients", mixed), flush=True)
        print(f"ratio {args.adapters} adapters / base alone tok/s {mixed.tok_s / base.tok_s:.2f}x, "
              f"TTFT p95 {mixed.pct(0.95) / base.pct(0.95):.2f}x (target >= 0.7x tok/s)")
    if args.adapters_only:
        print(f"cpu flags: {cpu_flags()}")
        return
    servers = {"llamacpp": ("llmos, llama.cpp engine", lambda: llmos_server(home, "llamacpp", slots, args, prompts, count)),
               "slots": ("llmos, llama.cpp engine, per-slot KV",
                         lambda: llmos_server(home, "llamacpp", slots, args, prompts, count, kv="per-slot")),
               "server": ("llama.cpp server", lambda: llama_server(folder / "model.gguf", slots, args, prompts, count)),
               "hf": ("llmos, transformers engine", lambda: llmos_server(home, "hf", slots, args, prompts, count)),
               "tfserve": ("transformers serve CB", lambda: transformers_serve(folder, slots, args, prompts, count))}
    runs = {}
    for key, (name, fn) in servers.items():
        if args.only and key not in args.only:
            continue
        print(f"{name}: starting, load average {os.getloadavg()[0]:.2f}, llama.cpp threads "
              f"{args.threads or default_threads()}", flush=True)
        runs[key] = fn()
        for n, r in runs[key].items():
            print(line(f"{name}, {n} client{'s' if n > 1 else ''}", r), flush=True)
    ratios(runs, args.clients)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"cpu flags: {cpu_flags()}")


if __name__ == "__main__":
    main()
