"""Fuzzed model files (truncated, bit-flipped, lying about sizes in safetensors and GGUF headers) and
dataset files (wrong encodings, binary junk, enormous lines): each import ends in a clear llmos error
(or, for a flip that leaves a valid file, a clean import), in bounded time and memory. The imports run
in a separate process under a timeout, with its peak RSS measured."""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmos.runtime import open_runtime
from tests.conftest import make_settings
from tests.reliability.conftest import ROOT, env_for
from tests.waiting import BACKSTOP_S

pytestmark = pytest.mark.slow
MAX_GROWTH = 256 << 20  # peak RSS the imports may add over the worker's baseline (libraries loaded)
CLEAR = {"ImportFailed", "UnsafeFormat", "InvalidInput", "InvalidName"}


def run_worker(home: Path, kind: str, files: list[Path], timeout: float = BACKSTOP_S) -> dict:
    open_runtime(make_settings(home), builtins=False).close()
    out = subprocess.run([sys.executable, "-m", "tests.reliability.fuzz_worker", str(home), kind, *map(str, files)],
                         env=env_for(home), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    growth = report["peak_rss"] - report["base_rss"]
    assert growth < MAX_GROWTH, f"importing fuzzed files grew the peak RSS by {growth >> 20} MiB"
    return report["results"]


# -- safetensors ----------------------------------------------------------------------------------
def small_safetensors(minilm_dir: Path) -> bytes:
    """A real safetensors file with a few of MiniLM's small tensors (fast to fuzz many times)."""
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(minilm_dir / "model.safetensors", "pt") as fh:
        names = [k for k in fh.keys() if k.endswith("LayerNorm.bias")][:4]
        return save({k: fh.get_tensor(k) for k in names})


def with_header(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def safetensors_cases(minilm_dir: Path) -> dict[str, bytes]:
    good = small_safetensors(minilm_dir)
    (n,) = struct.unpack("<Q", good[:8])
    rng = random.Random(7)
    cases = {"truncated-4": good[:4], "truncated-header": good[: 8 + n // 2], "truncated-data": good[: 8 + n + 100],
             "declared-2^63": struct.pack("<Q", 2**63 - 1) + good[8:], "declared-2^40": struct.pack("<Q", 2**40) + good[8:],
             "junk": rng.randbytes(4096), "empty": b""}
    for i in range(12):  # single bit flips inside the header: names, dtypes, shapes, offsets, braces
        flipped = bytearray(good)
        pos = 8 + rng.randrange(n)
        flipped[pos] ^= 1 << rng.randrange(8)
        cases[f"flip-{i}"] = bytes(flipped)
    lies = {"huge-shape": {"dtype": "F32", "shape": [2**31, 2**31], "data_offsets": [0, 16]},
            "huge-offsets": {"dtype": "F32", "shape": [4], "data_offsets": [2**62, 2**62 + 16]},
            "negative-shape": {"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]},
            "float-shape": {"dtype": "F32", "shape": [2.5, 1.6], "data_offsets": [0, 16]},
            "unknown-dtype": {"dtype": "F99", "shape": [4], "data_offsets": [0, 16]}}
    for name, spec in lies.items():
        cases[name] = with_header({"w": spec}, bytes(16))
    return cases


def model_folder(root: Path, name: str, weights: bytes, minilm_dir: Path) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    shutil.copy(minilm_dir / "config.json", folder / "config.json")
    (folder / "model.safetensors").write_bytes(weights)
    return folder


# -- GGUF -----------------------------------------------------------------------------------------
def small_gguf(path: Path) -> bytes:
    """A real, small GGUF file (metadata and two tensors) written with the gguf library."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_string("general.name", "fuzz")
    w.add_tensor("token_embd.weight", np.ones((8, 4), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def gguf_cases(tmp: Path, real_gguf: Path) -> dict[str, bytes]:
    good = small_gguf(tmp / "small.gguf")
    with open(real_gguf, "rb") as fh:
        real_head = fh.read(1 << 20)
    rng = random.Random(11)
    cases = {"truncated-magic": good[:4], "truncated-counts": good[:20], "truncated-kv": good[: len(good) // 3],
             "truncated-tensors": good[:-8], "real-first-MiB": real_head, "junk": b"GGUF" + rng.randbytes(4096),
             "n_tensors-2^62": good[:8] + struct.pack("<Q", 2**62) + good[16:],
             "n_kv-2^62": good[:16] + struct.pack("<Q", 2**62) + good[24:],
             "first-key-length-2^62": good[:24] + struct.pack("<Q", 2**62) + good[32:]}
    for i in range(8):  # bit flips in the header, metadata and tensor infos
        flipped = bytearray(good)
        pos = rng.randrange(4, min(len(good), 400))
        flipped[pos] ^= 1 << rng.randrange(8)
        cases[f"flip-{i}"] = bytes(flipped)
    return cases


def test_fuzzed_model_files_fail_clearly_in_bounded_time_and_memory(tmp_path: Path, minilm_dir: Path,
                                                                    smollm2_gguf: Path) -> None:
    files = [model_folder(tmp_path / "st", f"st-{name}", data, minilm_dir)
             for name, data in safetensors_cases(minilm_dir).items()]
    for name, data in gguf_cases(tmp_path, smollm2_gguf).items():
        (tmp_path / "gguf").mkdir(exist_ok=True)
        (path := tmp_path / "gguf" / f"gg-{name}.gguf").write_bytes(data)
        files.append(path)
    results = run_worker(tmp_path / "home", "model", files)
    assert len(results) == len(files)
    unclear = {f: r for f, r in results.items() if r[0] not in CLEAR | {"ok"}}
    assert not unclear, unclear
    for name in ("st-truncated-4", "st-declared-2^63", "st-huge-shape", "st-huge-offsets", "st-negative-shape",
                 "st-float-shape", "st-junk", "gg-truncated-counts", "gg-n_tensors-2^62", "gg-n_kv-2^62",
                 "gg-first-key-length-2^62", "gg-real-first-MiB"):
        kind, message = results[name if name.startswith("st-") else name + ".gguf"]
        assert kind == "ImportFailed" and name.split("-")[0] != message, (name, kind, message)
        assert ("model.safetensors" if name.startswith("st-") else name) in message, message  # names the file


# -- datasets -------------------------------------------------------------------------------------
def dataset_cases(datasets: Path) -> dict[str, bytes]:
    rng = random.Random(5)
    real = (datasets / "sst2" / "dev.tsv").read_bytes()[:20_000]
    cut = real[: real.rindex(b"\n") + 1]
    flipped = bytearray(cut)
    for _ in range(40):
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
    return {
        "junk.csv": rng.randbytes(64 << 10), "junk.jsonl": rng.randbytes(64 << 10), "junk.conll": rng.randbytes(64 << 10),
        "junk.json": b"[" + rng.randbytes(64 << 10), "nul.tsv": bytes(1 << 20),
        "utf16.tsv": cut.decode("utf-8").encode("utf-16"), "latin1.csv": "text,label\ncaf\xe9 cr\xe8me,1\nthé,0\n".encode("latin-1"),
        "flipped.tsv": bytes(flipped), "one-line.jsonl": b'{"text": "' + b"a" * (64 << 20),
        "long-lines.tsv": b"sentence\tlabel\n" + (b"x" * (2 << 20) + b"\t1\n") * 3,
        "deep.json": b"[" * 100_000 + b"]" * 100_000, "empty.csv": b"",
    }


def test_fuzzed_dataset_files_fail_clearly_in_bounded_time_and_memory(tmp_path: Path, datasets: Path) -> None:
    files = []
    for name, data in dataset_cases(datasets).items():
        (path := tmp_path / name).write_bytes(data)
        files.append(path)
    results = run_worker(tmp_path / "home", "dataset", files)
    unclear = {f: r for f, r in results.items() if r[0] not in CLEAR | {"ok"}}
    assert not unclear, unclear
    for name in ("junk.csv", "junk.jsonl", "junk.json", "nul.tsv", "utf16.tsv", "latin1.csv", "one-line.jsonl",
                 "long-lines.tsv", "deep.json", "empty.csv"):
        kind, message = results[name]
        assert kind in CLEAR and name in message, (name, kind, message)
