"""Import each given file into a fresh store and report how it ended, with the process's peak memory.

    python -m tests.reliability.fuzz_worker HOME model|dataset FILE...

Prints one JSON object: ``results`` (file -> [error class, message] or ["ok", ref]), ``base_rss`` and
``peak_rss`` (bytes, before the first import and at the end). Run by test_file_fuzz.py under a
timeout, so a hang or a runaway allocation is caught outside the test process.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from llmos.config import load_settings
from llmos.data import Datasets
from llmos.errors import LlmosError
from llmos.runtime import open_runtime


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    home, kind, files = Path(sys.argv[1]), sys.argv[2], [Path(f) for f in sys.argv[3:]]
    rt = open_runtime(load_settings(home=home), builtins=False)
    # What a GGUF import loads anyway (libraries, not data) is loaded before the baseline is taken.
    import gguf  # noqa: F401
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    base = peak_rss()
    results: dict[str, list[str]] = {}
    for i, path in enumerate(files):
        try:
            if kind == "model":
                info = rt.store.importer.import_path(path, f"fuzz-{i}")
            else:
                info = Datasets.of(rt).import_file(path, f"fuzz-{i}")
            results[path.name] = ["ok", info.ref]
        except LlmosError as exc:
            results[path.name] = [type(exc).__name__, exc.message]
        except Exception as exc:  # noqa: BLE001 - reported: anything but an LlmosError is a bug
            results[path.name] = [f"unexpected {type(exc).__name__}", str(exc)[:500]]
    rt.close()
    print(json.dumps({"results": results, "base_rss": base, "peak_rss": peak_rss()}))


if __name__ == "__main__":
    main()
