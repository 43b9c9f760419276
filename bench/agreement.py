"""Greedy outputs of the built-in SmolLM2 on its two engines: the Q4_1 GGUF on llama.cpp against the
fp32 weights on transformers, on real prompts (code_alpaca instructions, chat template applied).

Reports, over N prompts x M new tokens: the share of answers that agree token for token, the mean
share of tokens before the first disagreement, and the position-wise token agreement. No target:
quantisation changes some greedy choices, and one changed token changes what follows.

    .venv/bin/python bench/agreement.py [--prompts 50] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
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


def answer(engine: object, ids: list[int], max_tokens: int) -> str:
    return "".join(o.text for o in stream(engine, ids, SamplingParams(max_tokens=max_tokens)))  # type: ignore[arg-type]


def prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    rt = open_runtime(load_settings(home=Path(tempfile.mkdtemp(prefix="llmos-agree-"))))
    info = rt.store.registry.get(BASE)
    folder = rt.store.registry.snapshot(info)
    template = info.manifest.chat_template
    q4 = LlamaCppEngine(folder, name="q4", chat_template=template, max_batch_size=1)
    fp32 = HFEngine(folder, name="fp32", tasks=["generate"], chat_template=template)
    tok = fp32._m.tokenizer
    same = prefixes = agree = total = 0
    for text in instructions(args.prompts):
        ids = fp32.encode_chat([ChatMessage("user", text)])
        a = tok.encode(answer(q4, ids, args.max_tokens), add_special_tokens=False)
        b = tok.encode(answer(fp32, ids, args.max_tokens), add_special_tokens=False)
        same += a == b
        prefixes += prefix(a, b) / max(len(a), len(b), 1)
        agree += sum(x == y for x, y in zip(a, b))
        total += max(len(a), len(b))
    n = args.prompts
    print(f"{n} prompts x {args.max_tokens} new tokens, greedy: identical answers {same}/{n} ({same / n:.2f}); "
          f"mean share before the first disagreement {prefixes / n:.2f}; position-wise token agreement "
          f"{agree / max(total, 1):.2f}")
    print(f"cpu flags: {cpu_flags()}")
    q4.close()
    fp32.close()
    rt.close()


if __name__ == "__main__":
    main()
