"""Greedy outputs of the built-in SmolLM2 on its two engines: GGUF files on llama.cpp against the
fp32 weights on transformers, on real prompts (code_alpaca instructions, chat template applied).
The GGUF rows: the shipped Q4_1 file, and the fp32 copy quantised by `llmos models quantize` to each
type given with --quantize (default q8_0 and q4_1).

Reports, for each row over N prompts x M new tokens: the share of answers that agree token for token,
the mean share of tokens before the first disagreement, the position-wise token agreement, and the
decode speed (tokens / s, one sequence at a time, prompt included). No target: quantisation changes
some greedy choices, and one changed token changes what follows.

    .venv/bin/python bench/agreement.py [--prompts 50] [--max-tokens 32] [--quantize q8_0,q4_1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import instructions  # noqa: E402
from engines import BASE, cpu_flags  # noqa: E402
from llmos.config import load_settings  # noqa: E402
from llmos.engines.base import ChatMessage  # noqa: E402
from llmos.engines.hf import HFEngine  # noqa: E402
from llmos.engines.llamacpp import LlamaCppEngine  # noqa: E402
from llmos.engines.types import SamplingParams  # noqa: E402
from llmos.kernel.local import stream  # noqa: E402
from llmos.runtime import open_runtime  # noqa: E402
from llmos.train.quantize import quantize_model  # noqa: E402


def answer(engine: object, ids: list[int], max_tokens: int) -> str:
    return "".join(o.text for o in stream(engine, ids, SamplingParams(max_tokens=max_tokens)))  # type: ignore[arg-type]


def prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@dataclass
class Row:
    name: str
    same: int = 0
    prefixes: float = 0.0
    agree: int = 0
    total: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def add(self, a: list[int], b: list[int], seconds: float) -> None:
        self.same += a == b
        self.prefixes += prefix(a, b) / max(len(a), len(b), 1)
        self.agree += sum(x == y for x, y in zip(a, b))
        self.total += max(len(a), len(b))
        self.tokens += len(a)
        self.seconds += seconds

    def line(self, n: int) -> str:
        return (f"{self.name:<16} identical {self.same}/{n} ({self.same / n:.2f}); before the first disagreement "
                f"{self.prefixes / n:.2f}; position-wise {self.agree / max(self.total, 1):.2f}; "
                f"{self.tokens / max(self.seconds, 1e-9):.1f} tok/s")


def timed(engine: object, ids: list[int], max_tokens: int, tok: object) -> tuple[list[int], float]:
    start = time.perf_counter()
    text = answer(engine, ids, max_tokens)
    return tok.encode(text, add_special_tokens=False), time.perf_counter() - start  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--quantize", default="q8_0,q4_1", help="types to quantise the fp32 copy to ('' for none)")
    args = ap.parse_args()
    rt = open_runtime(load_settings(home=Path(tempfile.mkdtemp(prefix="llmos-agree-"))))
    info = rt.store.registry.get(BASE)
    template = info.manifest.chat_template
    folders = {"Q4_1 (shipped)": rt.store.registry.snapshot(info)}
    for qtype in filter(None, args.quantize.split(",")):
        q = quantize_model(rt.store.registry, rt.store.importer, BASE, type_name=qtype)
        folders[f"{qtype} (quantize)"] = rt.store.registry.snapshot(q)
    fp32 = HFEngine(rt.store.registry.snapshot(info), name="fp32", tasks=["generate"], chat_template=template)
    tok = fp32._m.tokenizer
    ggufs = {name: LlamaCppEngine(folder, name=name, chat_template=template, max_batch_size=1)
             for name, folder in folders.items()}
    rows, base = {name: Row(name) for name in ggufs}, Row("fp32 (hf)")
    for text in instructions(args.prompts):
        ids = fp32.encode_chat([ChatMessage("user", text)])
        b, seconds = timed(fp32, ids, args.max_tokens, tok)
        base.add(b, b, seconds)
        for name, engine in ggufs.items():
            a, seconds = timed(engine, ids, args.max_tokens, tok)
            rows[name].add(a, b, seconds)
    n = args.prompts
    print(f"{n} prompts x {args.max_tokens} new tokens, greedy, against fp32 on transformers:")
    for row in [*rows.values(), base]:
        print("  " + row.line(n))
    print(f"cpu flags: {cpu_flags()}")
    for engine in ggufs.values():
        engine.close()
    fp32.close()
    rt.close()


if __name__ == "__main__":
    main()
