"""Load time of the built-in SmolLM2 from the store (converted safetensors, hash-verified on read)
against loading the packaged GGUF directly with transformers, measured in one run.

    .venv/bin/python bench/store.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("alembic").setLevel(logging.WARNING)

from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from llmos.config import load_settings  # noqa: E402
from llmos.runtime import open_runtime  # noqa: E402
from llmos.store.builtin import BUILTINS, locate  # noqa: E402


def _time(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--home", help="llmos home to use (default: a fresh temporary one)")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="llmos-bench-"))
    convert_s = _time(lambda: open_runtime(load_settings(home=home)).close())
    rt = open_runtime(load_settings(home=home))
    gguf = locate(BUILTINS.get("smollm2-135m-instruct"))

    def from_store() -> None:
        AutoModelForCausalLM.from_pretrained(rt.store.registry.snapshot("smollm2-135m-instruct"))

    def from_gguf() -> None:
        AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)

    store_s = [_time(from_store) for _ in range(args.repeat)]
    gguf_s = [_time(from_gguf) for _ in range(args.repeat)]
    s, g = statistics.median(store_s), statistics.median(gguf_s)
    print(f"first start (register + convert built-ins): {convert_s:.1f} s")
    print(f"load from store (verify sha256 + safetensors): median {s:.3f} s over {args.repeat}")
    print(f"load GGUF directly (dequantise):               median {g:.3f} s over {args.repeat}")
    print(f"ratio: the store copy loads {g / s:.1f}x faster than the GGUF")


if __name__ == "__main__":
    main()
