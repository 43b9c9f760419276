"""The transformers engine's step loop against plain ``model.generate`` on the same weights, in one process.

SmolLM2-135M (the built-in's fp32 copy), real code_alpaca instructions with the chat template, greedy,
up to ``--max-tokens`` new tokens: one sequence, then ``--batch`` sequences at once (``generate`` as one
left-padded batch; the engine as one prefill and decode steps), then the engine with the same sequences
joining in four groups (continuous batching: a group's prefill runs between the others' decode steps).
Tokens are counted as produced (both stop a sequence at EOS), so tok/s compares like with like.

    .venv/bin/python bench/hf_engine.py [--batch 16] [--max-tokens 64] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import instructions  # noqa: E402
from engines import cpu_flags  # noqa: E402
from llmos.config import load_settings  # noqa: E402
from llmos.engines.base import ChatMessage  # noqa: E402
from llmos.engines.hf import HFEngine  # noqa: E402
from llmos.engines.types import SamplingParams, SequenceSpec  # noqa: E402
from llmos.runtime import open_runtime  # noqa: E402

BASE = "smollm2-135m-instruct"


def generate_tok_s(engine: HFEngine, prompts: list[list[int]], max_tokens: int) -> float:
    model, eos = engine._m.model, sorted(engine._m.eos_ids)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[eos[0]] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens, do_sample=False,
                             eos_token_id=eos, pad_token_id=eos[0])
    wall = time.perf_counter() - t0
    return sum(produced(row.tolist(), set(eos)) for row in out[:, width:]) / wall


def produced(new: list[int], eos: set[int]) -> int:
    """Tokens up to and including the first EOS (what follows is padding)."""
    return next((i + 1 for i, t in enumerate(new) if t in eos), len(new))


def engine_tok_s(engine: HFEngine, prompts: list[list[int]], max_tokens: int, groups: int = 1) -> float:
    params = SamplingParams(max_tokens=max_tokens)
    specs = [SequenceSpec(f"s{i}", p, params) for i, p in enumerate(prompts)]
    size = -(-len(specs) // groups)
    waiting = [specs[i:i + size] for i in range(0, len(specs), size)]
    live: list[str] = []
    produced = 0
    t0 = time.perf_counter()
    while waiting or live:
        outs = engine.prefill(waiting.pop(0)) if waiting else engine.decode(live)
        produced += len(outs)
        ended = [o.id for o in outs if o.finished]
        engine.release(ended)
        stepped = {o.id for o in outs}
        live = [s for s in live if s not in stepped] + [o.id for o in outs if not o.finished]
    return produced / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--home", help="llmos home (default: a fresh temporary one)")
    a = ap.parse_args()
    rt = open_runtime(load_settings(home=Path(a.home or tempfile.mkdtemp(prefix="llmos-bench-"))))
    engine = HFEngine(rt.store.registry.snapshot(BASE), name=BASE, max_batch_size=a.batch, dtype=a.dtype)
    prompts = [engine.encode_chat([ChatMessage("user", t)]) for t in instructions(a.batch)]
    engine_tok_s(engine, prompts[:2], 4)  # warm-up
    generate_tok_s(engine, prompts[:2], 4)
    rows = [("generate, 1 sequence", generate_tok_s(engine, prompts[:1], a.max_tokens)),
            ("engine, 1 sequence", engine_tok_s(engine, prompts[:1], a.max_tokens)),
            (f"generate, padded batch of {a.batch}", generate_tok_s(engine, prompts, a.max_tokens)),
            (f"engine, {a.batch} sequences at once", engine_tok_s(engine, prompts, a.max_tokens)),
            (f"engine, {a.batch} joining in 4 groups", engine_tok_s(engine, prompts, a.max_tokens, groups=4))]
    print(f"SmolLM2-135M {a.dtype}, up to {a.max_tokens} new tokens, greedy, {torch.get_num_threads()} threads")
    for name, tok_s in rows:
        print(f"{name:<40} {tok_s:7.1f} tok/s")
    print(f"ratio engine / generate: 1 sequence {rows[1][1] / rows[0][1]:.2f}x, "
          f"{a.batch} sequences {rows[3][1] / rows[2][1]:.2f}x")
    print(f"cpu flags: {cpu_flags()}")


if __name__ == "__main__":
    main()
