"""PEFT LoRA adapters on the llama.cpp engine: the GGUF conversion read back, the adapted model's
greedy tokens against PEFT's on transformers, several adapters in flight, and what is refused."""

from __future__ import annotations

import json
import queue
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader
from safetensors.numpy import load_file

from llmos.engines.llamacpp import LlamaCppEngine
from llmos.engines.llamacpp_lora import convert, read_base, unsupported
from llmos.engines.types import SamplingParams, SequenceSpec, StepOutput
from llmos.errors import InvalidInput
from tests.conftest import ModuleDirs

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "Water boils at",
           "My favourite food is", "The best way to learn Python"]


def _save_lora(base_dir: Path, out: Path, seed: int, **config: object) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, use_safetensors=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        get_peft_model(base, LoraConfig(init_lora_weights=False, **config)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def loras(smollm2_dir: Path, module_dirs: ModuleDirs) -> dict[str, Path]:
    """Two random LoRA adapters on every projection (scale 1): each visibly changes the answers."""
    root = module_dirs("llama-loras")
    return {name: _save_lora(smollm2_dir, root / name, seed, r=4, lora_alpha=4, target_modules=ALL)
            for name, seed in (("l1", 11), ("l2", 12))}


@pytest.fixture(scope="module")
def engine(smollm2_dir: Path, loras: dict[str, Path], module_dirs: ModuleDirs) -> Iterator[LlamaCppEngine]:
    e = LlamaCppEngine(smollm2_dir, name="smol-q4-lora", max_batch_size=4, lora_cache=module_dirs("cache"))
    for name, path in loras.items():
        e.add_adapter(name, str(path))
    yield e
    e.close()


def _collect(engine: LlamaCppEngine, specs: list[SequenceSpec]) -> dict[str, str]:
    outputs: queue.Queue[StepOutput] = queue.Queue()
    engine.start(specs, outputs.put)
    got = {s.id: "" for s in specs}
    open_ids = set(got)
    while open_ids:
        out = outputs.get(timeout=300)
        assert out.error is None, out.error
        got[out.id] += out.text
        if out.finished:
            open_ids.discard(out.id)
    return got


def _greedy(engine: LlamaCppEngine, prompt: str, adapter: str | None, n: int = 16) -> str:
    return _collect(engine, [SequenceSpec("g", engine.encode(prompt), SamplingParams(max_tokens=n), adapter)])["g"]


@pytest.mark.slow
def test_conversion_reads_back_with_base_names_shapes_and_the_rotary_permutation(
        smollm2_dir: Path, loras: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "l1.gguf"
    pairs = convert(loras["l1"], smollm2_dir / "model.gguf", out)
    reader, base = GGUFReader(out), read_base(smollm2_dir / "model.gguf")
    assert str(reader.fields["general.type"].contents()) == "adapter"
    assert str(reader.fields["adapter.type"].contents()) == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 4.0
    tensors = {t.name: t for t in reader.tensors}
    modules = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
    want = {f"blk.{i}.{m}.weight.lora_{x}" for i in range(base.layers) for m in modules for x in "ab"}
    assert set(tensors) == want and pairs == len(want) // 2
    for i, m in ((0, "attn_q"), (29, "ffn_down")):
        out_dim, in_dim = base.tensors[f"blk.{i}.{m}.weight"]
        assert list(tensors[f"blk.{i}.{m}.weight.lora_a"].shape) == [in_dim, 4]  # ggml ne: reversed
        assert list(tensors[f"blk.{i}.{m}.weight.lora_b"].shape) == [4, out_dim]
    peft = load_file(loras["l1"] / "adapter_model.safetensors")

    def peft_b(module: str) -> np.ndarray:
        return peft[f"base_model.model.model.layers.3.{module}.lora_B.weight"]

    def gguf_b(name: str) -> np.ndarray:
        return np.asarray(tensors[f"blk.3.{name}.weight.lora_b"].data)

    def permuted(w: np.ndarray, heads: int) -> np.ndarray:
        return w.reshape(heads, 2, w.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(w.shape)

    assert np.array_equal(gguf_b("attn_q"), permuted(peft_b("self_attn.q_proj"), base.heads))
    assert np.array_equal(gguf_b("attn_k"), permuted(peft_b("self_attn.k_proj"), base.kv_heads))
    assert np.array_equal(gguf_b("attn_v"), peft_b("self_attn.v_proj"))
    assert not np.array_equal(gguf_b("attn_q"), peft_b("self_attn.q_proj"))


def _agreement(model, tokenizer, prompt: str, text: str) -> tuple[int, int]:
    """Positions of ``text`` (llama.cpp's greedy continuation) where ``model`` picks the same token."""
    ids = tokenizer(prompt)["input_ids"]
    gen = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids + gen])).logits[0]
    picked = logits[len(ids) - 1 : -1].argmax(-1).tolist()
    return sum(a == b for a, b in zip(picked, gen)), len(gen)


@pytest.mark.slow
def test_adapted_greedy_tokens_differ_from_the_base_and_agree_with_peft(
        engine: LlamaCppEngine, loras: dict[str, Path], smollm2_dir: Path, smol_model) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    base_texts = {p: _greedy(engine, p, None) for p in PROMPTS}
    for name, path in loras.items():
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2_dir), path).eval()
        texts = {p: _greedy(engine, p, name) for p in PROMPTS}
        assert sum(texts[p] != base_texts[p] for p in PROMPTS) >= len(PROMPTS) - 1
        same = [_agreement(peft, tokenizer, p, texts[p]) for p in PROMPTS]
        bare = [_agreement(smol_model, tokenizer, p, texts[p]) for p in PROMPTS]
        agree, total = sum(a for a, _ in same), sum(n for _, n in same)
        base_agree = sum(a for a, _ in bare) / sum(n for _, n in bare)
        print(f"{name}: llama.cpp Q4 + LoRA vs PEFT fp32 greedy tokens {agree}/{total} = {agree / total:.2f} "
              f"(vs the bare base {base_agree:.2f})")
        assert agree / total >= 0.85 and base_agree < agree / total - 0.1


def test_base_and_two_adapters_in_one_batch_each_answer_as_alone(engine: LlamaCppEngine) -> None:
    prompt = engine.encode(PROMPTS[2])
    alone = {a: _greedy(engine, PROMPTS[2], a, 12) for a in (None, "l1", "l2")}
    specs = [SequenceSpec(f"s{i}", prompt, SamplingParams(max_tokens=12), a) for i, a in enumerate((None, "l1", "l2"))]
    together = _collect(engine, specs)
    assert [together[f"s{i}"] for i in range(3)] == [alone[None], alone["l1"], alone["l2"]]
    assert len(set(alone.values())) == 3
    assert engine.info().adapters == ["l1", "l2"]


@pytest.mark.slow
def test_adding_an_adapter_lets_running_sequences_finish_on_the_old_context(
        engine: LlamaCppEngine, smollm2_dir: Path, tmp_path: Path) -> None:
    expected = _greedy(engine, PROMPTS[0], "l1", 48)
    outputs: queue.Queue[StepOutput] = queue.Queue()
    engine.start([SequenceSpec("run", engine.encode(PROMPTS[0]), SamplingParams(max_tokens=48), "l1")], outputs.put)
    extra = _save_lora(smollm2_dir, tmp_path / "l3", 13, r=2, target_modules=["v_proj"])
    engine.add_adapter("l3", str(extra))  # a new context while "run" may still be decoding
    text, out = "", None
    while out is None or not out.finished:
        out = outputs.get(timeout=300)
        text += out.text
    assert out.error is None and text == expected
    assert engine.wait_idle(timeout=60) and engine.info().adapters == ["l1", "l2", "l3"]
    engine.remove_adapter("l3")
    assert engine.info().adapters == ["l1", "l2"] and _greedy(engine, PROMPTS[0], "l1", 48) == expected


def test_an_adapter_for_another_base_is_refused_naming_the_tensor(engine: LlamaCppEngine, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    small = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=49152))
    get_peft_model(small, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)).save_pretrained(tmp_path / "x")
    with pytest.raises(InvalidInput, match=r"does not match its base .*blk\.0\.attn_q\.weight is \[576, 576\]"):
        engine.add_adapter("other", str(tmp_path / "x"))
    assert engine.info().adapters == ["l1", "l2"]
    with pytest.raises(InvalidInput, match="unknown adapter 'other'"):
        engine.start([SequenceSpec("o", [1, 2], SamplingParams(max_tokens=2), "other")], lambda out: None)


def test_what_llamacpp_cannot_serve_is_named(smollm2_dir: Path, tmp_path: Path) -> None:
    lora = {"peft_type": "LORA", "bias": "none"}
    assert unsupported(lora, "llama") is None
    assert unsupported({**lora, "use_dora": True}, "llama") == "DoRA adapters"
    assert unsupported({**lora, "modules_to_save": ["lm_head"]}, "llama") == "adapters with fully trained modules"
    assert unsupported({"peft_type": "PREFIX_TUNING"}, "llama") == "prefix_tuning adapters"
    assert unsupported(lora, "gpt2") == "LoRA adapters over 'gpt2' models"
    folder = _save_lora(smollm2_dir, tmp_path / "dora", 3, r=2, target_modules=["v_proj"], use_dora=True)
    assert json.loads((folder / "adapter_config.json").read_text())["use_dora"]
    with pytest.raises(InvalidInput, match="llama.cpp cannot serve DoRA adapters"):
        convert(folder, smollm2_dir / "model.gguf", tmp_path / "dora.gguf")
