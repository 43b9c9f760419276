"""`llmos models quantize`: what it refuses (before any work, nothing stored), a failure half-way (nothing
registered, no staging left), and a LoRA fine-tune merged, quantised and served by name through the CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import llmos.engines.gguf_quantize as gq
from llmos.engines.gguf_tensors import permute
from llmos.errors import Conflict, ExitCode, InvalidInput
from llmos.runtime import Runtime
from llmos.store.importer import ImportOptions
from llmos.train.quantize import quantize_model
from tests.cli.proc import llmos
from tests.conftest import copy_builtin

SMOL = "smollm2-135m-instruct"


@pytest.fixture
def store(runtime: Runtime, builtin_runtime: Runtime) -> Runtime:
    for name in (SMOL, "minilm-l6"):
        copy_builtin(runtime, builtin_runtime, name)
    return runtime


def _quantize(rt: Runtime, ref: str, **kwargs: object) -> object:
    return quantize_model(rt.store.registry, rt.store.importer, ref, **kwargs)  # type: ignore[arg-type]


def _unchanged(rt: Runtime, before: list[str]) -> None:
    assert [i.key for i in rt.store.registry.list()] == before
    assert not list(rt.settings.tmp_dir.glob("quantize-*"))


@pytest.mark.parametrize("ref,kwargs,error,needle", [
    ("minilm-l6", {}, InvalidInput, r"BertModel model \(embed\); supported: .*LlamaForCausalLM"),
    (SMOL, {"type_name": "q3_k"}, InvalidInput, "choose one of: q8_0, q4_0, q4_1, q5_0, q5_1"),
    (SMOL, {"target": "minilm-l6"}, Conflict, "minilm-l6:latest already exists"),
    (SMOL, {"target": "../x"}, InvalidInput, "invalid model name"),
])
def test_refused_before_any_work(store: Runtime, ref: str, kwargs: dict[str, object], error: type,
                                 needle: str) -> None:
    before = [i.key for i in store.store.registry.list()]
    with pytest.raises(error, match=needle) as info:
        _quantize(store, ref, **kwargs)
    if error is Conflict:
        assert info.value.http_status == 409
    _unchanged(store, before)


def test_the_default_name_taken_is_a_conflict(store: Runtime) -> None:
    store.store.registry.tag(SMOL, f"{SMOL}-q4_0", tenant=None)
    with pytest.raises(Conflict, match=f"{SMOL}-q4_0:latest already exists"):
        _quantize(store, SMOL, type_name="q4_0")


def test_a_failure_half_way_registers_nothing(store: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    before, done = [i.key for i in store.store.registry.list()], []
    real = gq._quantise

    def failing(name: str, data: np.ndarray, qt: gq.QuantType) -> tuple[np.ndarray, object]:
        if len(done) == 3:
            raise OSError("disk full")
        done.append(name)
        return real(name, data, qt)

    monkeypatch.setattr(gq, "_quantise", failing)
    with pytest.raises(OSError, match="disk full"):
        _quantize(store, SMOL, type_name="q8_0")
    _unchanged(store, before)


# -- a fine-tune, merged, quantised, served ----------------------------------------------------------------

def _small_lora(base_dir: Path, out: Path) -> Path:
    """A random LoRA on the attention projections, scaled so the model still answers sensibly."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, use_safetensors=True),
                           LoraConfig(init_lora_weights=False, r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        model.save_pretrained(out)
    return out


def _attn_q(path: Path) -> np.ndarray:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    t = next(t for t in GGUFReader(path).tensors if t.name == "blk.0.attn_q.weight")
    return dequantize(t.data, t.tensor_type)


def _q8(w: np.ndarray) -> np.ndarray:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    return dequantize(quantize(w, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0)


def _merged_q(base_dir: Path, lora: Path) -> tuple[np.ndarray, np.ndarray]:
    """Layer 0's query weights of the base and with the adapter merged, permuted as llama.cpp holds them."""
    from safetensors.numpy import load_file

    base = load_file(base_dir / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    ad = load_file(lora / "adapter_model.safetensors")
    stem = "base_model.model.model.layers.0.self_attn.q_proj"
    merged = base + ad[f"{stem}.lora_B.weight"] @ ad[f"{stem}.lora_A.weight"]  # scale alpha / r = 1
    return permute(base, 9), permute(merged, 9)


@pytest.mark.slow
def test_a_lora_fine_tune_quantised_and_served_by_name(store: Runtime, smollm2_dir: Path, tmp_path: Path) -> None:
    lora = _small_lora(smollm2_dir, tmp_path / "lora")
    store.store.importer.import_path(lora, "ft:v1", ImportOptions(parent=SMOL, tenant="default"))
    home = store.settings.home
    out = llmos(home, "models", "quantize", "ft:v1", builtins=False)
    assert out.returncode == 0, out.stderr
    assert "tensors" in out.stderr and "quantised ft:v1 to ft-q8_0:v1" in out.stdout

    shown = json.loads(llmos(home, "models", "show", "ft-q8_0:v1", "--json", builtins=False).stdout)
    ft = store.store.registry.get("ft:v1")
    assert shown["engines"] == ["llamacpp"] and shown["dtype"] == "q8_0" and shown["tasks"] == ["generate"]
    assert shown["lineage"]["base"] == {"ref": "ft:v1", "digest": ft.digest}
    assert shown["lineage"]["quantization"]["type"] == "q8_0"
    assert shown["lineage"]["quantization"]["metadata_from"].startswith(f"{SMOL}:latest@")
    assert shown["chat_template"] == ft.manifest.chat_template

    gguf = store.store.registry.snapshot(store.store.registry.get("ft-q8_0:v1")) / "model.gguf"
    base, merged = _merged_q(smollm2_dir, lora)
    ours = _attn_q(gguf)
    # The adapter is in the weights: they are the merged weights' own Q8_0 blocks (up to the rare block that
    # float rounding in the merge tips over), not the base's (the delta, 0.002 a weight, is Q8_0's noise size).
    assert np.abs(ours - _q8(merged)).mean() < 1e-5 < 1e-3 < np.abs(ours - _q8(base)).mean()

    run = llmos(home, "run", "ft-q8_0:v1", "What is the capital of France?", "-n", "20",
                "--system", "Answer in one short sentence.", builtins=False)
    assert run.returncode == 0, run.stderr
    assert "Paris" in run.stdout
    again = llmos(home, "models", "quantize", "ft:v1", builtins=False)
    assert again.returncode == ExitCode.CONFLICT and "already exists" in again.stderr
    twice = llmos(home, "models", "quantize", "ft-q8_0:v1", "--type", "q4_0", builtins=False)
    assert twice.returncode == ExitCode.USAGE and "GGUF file only" in twice.stderr
