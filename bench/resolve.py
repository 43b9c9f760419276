"""What a request pays at the front door to find its model, as the store grows and under a burst.

Every generation request resolves its model name (tenant namespace, ``latest`` pinned to its version,
the base and the engine) before it is tokenised and queued. This times ``Kernel.resolve`` for the
built-in SmolLM2 in a fresh home with the built-ins alone, then after other tenants' models are added
(``--models``, default 200, each a ``name:v1`` of the MiniLM manifest), and prints the ratio: the cost
of one request's resolution should not grow with what else the store holds.

Each figure is taken twice: with the kernel's remembered resolutions (``llmos.kernel.resolving``: one
read of the registry clock when nothing changed) and without them (the cache bounded to 0 entries, so
every call reads the registry), one after the other; and for a burst, ``--burst`` (default 16)
resolutions at once from a thread pool, as the daemon's front door runs them.

    .venv/bin/python bench/resolve.py [--models 200] [--calls 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engines import cpu_flags  # noqa: E402
from llmos.config import load_settings  # noqa: E402
from llmos.daemon import build_daemon  # noqa: E402
from llmos.kernel.core import Kernel  # noqa: E402
from llmos.runtime import open_runtime  # noqa: E402

NAME = "smollm2-135m-instruct"


def per_call_ms(kernel: Kernel, calls: int) -> float:
    """Median over 5 rounds of the mean time of one resolution (each with its own request id)."""
    rounds = []
    for r in range(5):
        t0 = time.perf_counter()
        for i in range(calls):
            kernel.resolve(NAME, "generate", key=f"r{r}-{i}", tenant="default")
        rounds.append((time.perf_counter() - t0) / calls * 1000)
    return statistics.median(rounds)


def burst_ms(kernel: Kernel, size: int, rounds: int = 20) -> float:
    """Median over ``rounds`` of the wall time for ``size`` resolutions sent at once to a thread pool."""
    times = []
    with ThreadPoolExecutor(max_workers=size) as pool:
        for r in range(rounds):
            t0 = time.perf_counter()
            list(pool.map(lambda i: kernel.resolve(NAME, "generate", key=f"b{r}-{i}", tenant="default"),
                          range(size)))
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def both(kernel: Kernel, measure: Callable[[], float]) -> tuple[float, float]:
    """``measure()`` with the remembered resolutions, then with every call reading the registry."""
    kept = kernel.resolutions.max_entries
    cached = measure()
    kernel.resolutions.max_entries = 0
    try:
        return cached, measure()
    finally:
        kernel.resolutions.max_entries = kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--burst", type=int, default=16)
    a = ap.parse_args()
    rt = open_runtime(load_settings(home=Path(tempfile.mkdtemp(prefix="llmos-bench-"))))
    kernel = build_daemon(rt).kernel
    reg = rt.store.registry
    kernel.resolve(NAME, "generate", key="warm", tenant="default")
    alone, tags = both(kernel, lambda: per_call_ms(kernel, a.calls)), reg.count()
    minilm = next(i for i in reg.list() if i.manifest.tasks and "embed" in i.manifest.tasks)
    for n in range(a.models):
        reg.add(f"team-model-{n}:v1", minilm.manifest, tenant=f"team-{n % 10}")
    kernel.resolve(NAME, "generate", key="warm", tenant="default")
    grown = both(kernel, lambda: per_call_ms(kernel, a.calls))
    burst = both(kernel, lambda: burst_ms(kernel, a.burst))
    for label, small, large in (("remembered", alone[0], grown[0]), ("read each time", alone[1], grown[1])):
        print(f"resolve {NAME!r}, {label}: {small:.2f} ms with {tags} tags in the store, "
              f"{large:.2f} ms with {reg.count()} ({large / small:.2f}x; the store {reg.count() / tags:.0f}x larger)")
    print(f"one request: remembered {grown[0]:.2f} ms, read each time {grown[1]:.2f} ms: {grown[1] / grown[0]:.1f}x faster")
    print(f"a burst of {a.burst} at once: remembered {burst[0]:.1f} ms, read each time {burst[1]:.1f} ms: "
          f"{burst[1] / burst[0]:.1f}x faster")
    print(f"cpu flags: {cpu_flags()}")


if __name__ == "__main__":
    main()
