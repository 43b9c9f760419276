"""Serving throughput of the llmos daemon with SmolLM2, from one run, as ratios against:
(a) the same requests served one at a time with plain ``model.generate``, (b) ``transformers serve
--continuous-batching`` on the same model, and (c) llmos itself with 4 LoRA adapters in the traffic
against base-only traffic, and (d) json_schema-constrained replies against free-form ones on each
engine (the constrained-decoding overhead). Also time-to-first-token p50/p95. Loopback only; bounded.

    .venv/bin/python bench/serve.py [--clients 16] [--max-tokens 64] [--structured-only]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("alembic").setLevel(logging.WARNING)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from common import Result, drive, free_port, instructions, start, stop, wait_healthy  # noqa: E402
from llmos.config import load_settings  # noqa: E402
from llmos.runtime import Runtime, open_runtime  # noqa: E402
from llmos.store.importer import ImportOptions  # noqa: E402

BASE = "smollm2-135m-instruct"
N_ADAPTERS = 4


def make_adapters(rt: Runtime, folder: Path) -> list[str]:
    """Four LoRA adapters over SmolLM2 in the store (random weights: throughput does not care)."""
    from peft import LoraConfig, get_peft_model

    names = [f"bench-lora-{i}" for i in range(N_ADAPTERS)]
    for i, name in enumerate(names):
        if rt.store.registry.exists(name):
            continue
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(folder)
        cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        out = Path(tempfile.mkdtemp()) / name
        get_peft_model(model, cfg).save_pretrained(out)
        rt.store.importer.import_path(out, name, ImportOptions(parent=BASE))
        shutil.rmtree(out.parent)
    return names


def naive(folder: Path, prompts: list[str], max_tokens: int, tok, dtype: str) -> Result:  # type: ignore[no-untyped-def]
    """The naive server: one request at a time through model.generate."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
    res = Result()
    t0 = time.perf_counter()
    for p in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        start_t = time.perf_counter()
        out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
        res.ttft_s.append(time.perf_counter() - start_t)  # no streaming: first token comes with the last
        res.tokens += out.shape[1] - ids["input_ids"].shape[1]
    res.wall_s = time.perf_counter() - t0
    return res


def llmos_runs(home: Path, prompts: list[str], adapters: list[str], max_tokens: int, count,  # type: ignore[no-untyped-def]
               dtype: str) -> tuple[Result, Result]:
    port = free_port()
    proc = start([sys.executable, "-m", "llmos", "serve", "--port", str(port)],
                 {"LLMOS_HOME": str(home), "LLMOS_MAX_BATCH": str(len(prompts)), "LLMOS_DTYPE": dtype,
                  "LLMOS_ENGINE": "hf"})  # the transformers engine's figures; bench/engines.py has llama.cpp
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        drive(url, [BASE] * 2, prompts[:2], 4, count)  # warm-up: load the model and the adapters
        drive(url, adapters, prompts[:N_ADAPTERS], 4, count)
        base = drive(url, [BASE] * len(prompts), prompts, max_tokens, count)
        mixed = drive(url, [adapters[i % N_ADAPTERS] for i in range(len(prompts))], prompts, max_tokens, count)
        return base, mixed
    finally:
        stop(proc)


# What a structured reply looks like: long enough that decoding, not the prompt, dominates.
ANSWER_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["summary", "steps"],
                 "properties": {"summary": {"type": "string", "maxLength": 200},
                                "steps": {"type": "array", "maxItems": 8,
                                          "items": {"type": "string", "maxLength": 80}}}}
STRUCTURED = {"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}}}


def structured_runs(home: Path, prompts: list[str], max_tokens: int, count, engine: str) -> tuple[Result, Result]:  # type: ignore[no-untyped-def]
    """Free-form and json_schema-constrained streaming load on one engine, one server, back to back."""
    port = free_port()
    proc = start([sys.executable, "-m", "llmos", "serve", "--port", str(port)],
                 {"LLMOS_HOME": str(home), "LLMOS_MAX_BATCH": str(len(prompts)), "LLMOS_ENGINE": engine})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        # warm-up: load the model, compile the grammar, and let llama.cpp cache every prompt, so neither
        # measured run gets the prompts' processing for free from the other
        drive(url, [BASE] * 2, prompts[:2], 4, count, STRUCTURED)
        drive(url, [BASE] * len(prompts), prompts, 1, count)
        free = drive(url, [BASE] * len(prompts), prompts, max_tokens, count)
        constrained = drive(url, [BASE] * len(prompts), prompts, max_tokens, count, STRUCTURED)
        return free, constrained
    finally:
        stop(proc)


def hf_serve(folder: Path, prompts: list[str], max_tokens: int, count, dtype: str) -> Result:  # type: ignore[no-untyped-def]
    exe = Path(sys.executable).parent / "transformers"
    port = free_port()
    proc = start([str(exe), "serve", str(folder), "--continuous-batching", "--device", "cpu", "--port", str(port),
                  "--dtype", dtype,
                  "--cb-num-blocks", "64", "--cb-max-batch-tokens", "512"])  # bounded: its default sizes from RAM
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        drive(url, [str(folder)] * 2, prompts[:2], 4, count)
        return drive(url, [str(folder)] * len(prompts), prompts, max_tokens, count)
    finally:
        stop(proc)


def line(name: str, r: Result) -> str:
    return (f"{name:<44} {r.tok_s:7.1f} tok/s  ({r.tokens} tokens in {r.wall_s:5.1f} s)  "
            f"TTFT p50 {r.p50:5.2f} s  p95 {r.pct(0.95):5.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--naive-requests", type=int, default=4, help="requests for the one-at-a-time baseline")
    ap.add_argument("--home", help="llmos home (default: a fresh temporary one)")
    ap.add_argument("--skip-transformers-serve", action="store_true")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="for every server alike")
    ap.add_argument("--structured-only", action="store_true",
                    help="only the constrained-decoding overhead: json_schema vs free-form, on both engines")
    args = ap.parse_args()
    hf_logging.disable_progress_bar()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="llmos-bench-"))
    rt = open_runtime(load_settings(home=home))
    folder = rt.store.registry.snapshot(BASE)
    adapters = make_adapters(rt, folder)
    tok = AutoTokenizer.from_pretrained(folder)

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False))

    prompts = instructions(args.clients)
    if args.structured_only:
        structured(home, prompts, args, count)
        return
    print(f"{args.clients} concurrent streaming clients, {args.max_tokens} max new tokens, greedy, "
          f"{torch.get_num_threads()} threads, {args.dtype}", flush=True)
    base, mixed = llmos_runs(home, prompts, adapters, args.max_tokens, count, args.dtype)
    print(line("llmos, base model only", base), flush=True)
    print(line(f"llmos, {N_ADAPTERS} LoRA adapters mixed", mixed), flush=True)
    slow = naive(folder, prompts[: args.naive_requests], args.max_tokens, tok, args.dtype)
    print(line("naive: one at a time, model.generate", slow), flush=True)
    ratios = [("llmos / naive generate (target >= 4x)", base.tok_s / slow.tok_s),
              (f"mixed {N_ADAPTERS} adapters / base-only (target >= 0.7x)", mixed.tok_s / base.tok_s)]
    if not args.skip_transformers_serve:
        cb = hf_serve(folder, prompts, args.max_tokens, count, args.dtype)
        print(line("transformers serve --continuous-batching", cb), flush=True)
        ratios.insert(1, ("llmos / transformers serve CB (target >= 1.0x)", base.tok_s / cb.tok_s))
    for name, value in ratios:
        print(f"ratio {name}: {value:.2f}x")

    structured(home, prompts, args, count)


def structured(home: Path, prompts: list[str], args, count) -> None:  # type: ignore[no-untyped-def]
    for engine in ("llamacpp", "hf"):
        free, constrained = structured_runs(home, prompts, args.max_tokens, count, engine)
        print(line(f"llmos ({engine}), free-form", free), flush=True)
        print(line(f"llmos ({engine}), json_schema", constrained), flush=True)
        print(f"ratio {engine}: json_schema / free-form tok/s (target >= 0.8x): {constrained.tok_s / free.tok_s:.2f}x")
    flags = next((t.split(":", 1)[1].strip() for t in Path("/proc/cpuinfo").read_text().splitlines()
                  if t.startswith("flags")), "unknown")
    print(f"cpu flags: {flags}")


if __name__ == "__main__":
    main()
