"""The official openai client against the daemon with SmolLM2 on its default engine, llama.cpp:
answers, streaming, usage, context overflow, cancellation freeing the slot, feedback on its answers,
LoRA adapters on llama.cpp, and the requests llama.cpp cannot serve routed to the transformers engine
(shown in /admin/ps)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import torch
from openai import OpenAI
from transformers import AutoModelForCausalLM

from llmos.daemon import create_app
from llmos.engines.llamacpp import LlamaCppEngine
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime
from llmos.store.importer import ImportOptions
from tests.api.server import serving
from tests.conftest import ModuleDirs

pytestmark = pytest.mark.slow
SMOL = "smollm2-135m-instruct"
KEY = f"{SMOL}:latest@llamacpp"
QUESTION = [{"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def adapter(builtin_runtime: Runtime, smollm2_dir: Path, module_dirs: ModuleDirs) -> str:
    name = "llama-test-lora"
    if not builtin_runtime.store.registry.exists(name):
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(7)
        cfg = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        out = module_dirs(name)
        get_peft_model(AutoModelForCausalLM.from_pretrained(smollm2_dir), cfg).save_pretrained(out)
        builtin_runtime.store.importer.import_path(out, name, ImportOptions(parent=SMOL))
    return name


@pytest.fixture(scope="module")
def daemon(builtin_runtime: Runtime) -> Iterator[tuple[str, Kernel]]:
    settings = builtin_runtime.settings.model_copy(update={"engine": "auto", "max_batch": 4})
    kernel = Kernel(settings, builtin_runtime.store.registry)
    with serving(create_app(builtin_runtime, kernel)) as url:
        yield url, kernel


@pytest.fixture(scope="module")
def client(daemon: tuple[str, Kernel]) -> OpenAI:
    return OpenAI(base_url=daemon[0] + "/v1", api_key="unused", max_retries=0)


def _engine(kernel: Kernel) -> LlamaCppEngine:
    engine = kernel.resources.acquire(KEY)
    kernel.resources.release(KEY)
    assert isinstance(engine, LlamaCppEngine)
    return engine


def test_chat_answers_streams_the_same_text_and_takes_feedback(client: OpenAI, daemon: tuple[str, Kernel]) -> None:
    reply = client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=24, temperature=0)
    text = reply.choices[0].message.content
    assert "Paris" in text and reply.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 3 and "".join(pieces) == text
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens > 0
    fb = httpx.post(daemon[0] + "/v1/feedback", json={"request_id": reply.id, "rating": 1})
    assert fb.status_code == 200, fb.text
    ps = httpx.get(daemon[0] + "/admin/ps").json()["models"]
    assert [m["engine"] for m in ps if m["model"] == f"{SMOL}:latest"] == ["llamacpp"]


def test_completion_counts_tokens_and_honours_max_tokens(client: OpenAI) -> None:
    out = client.completions.create(model=SMOL, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert out.usage.prompt_tokens == 5 and out.usage.completion_tokens == 6
    assert out.choices[0].finish_reason == "length" and out.choices[0].text.strip()


def test_context_overflow_is_a_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=SMOL, prompt="x " * 15000, max_tokens=4)
    assert "context" in str(err.value)


def test_per_slot_kv_refuses_at_the_edge_what_a_slot_cannot_hold(builtin_runtime: Runtime) -> None:
    settings = builtin_runtime.settings.model_copy(update={"engine": "auto", "max_batch": 2, "llamacpp_kv": "per-slot",
                                                           "llamacpp_kv_tokens": 4 * 256})
    kernel = Kernel(settings, builtin_runtime.store.registry)
    with serving(create_app(builtin_runtime, kernel)) as url:
        api = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as err:  # fits the model's context, not a slot's 256 cells
            api.completions.create(model=SMOL, prompt="x " * 400, max_tokens=4)
        assert "context of 256" in str(err.value)
        with pytest.raises(openai.BadRequestError) as err:
            api.completions.create(model=SMOL, prompt="Hello", max_tokens=300)
        assert "ask for at most" in str(err.value)


def test_client_gone_mid_decode_frees_the_slot(daemon: tuple[str, Kernel]) -> None:
    url, kernel = daemon
    stats = kernel.worker(KEY).scheduler.stats
    aborted = stats().aborted
    body = {"model": SMOL, "prompt": "Once upon a time", "max_tokens": 4000, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # one token arrived: hang up
    assert _engine(kernel).wait_idle(timeout=120)
    assert stats().aborted == aborted + 1 and stats().running == 0


def _lora(runtime: Runtime, base_dir: Path, out: Path, name: str, seed: int, base: Path | None = None,
          **config: object) -> str:
    """A random PEFT LoRA over ``base`` (default: SmolLM2), imported as ``name`` with SmolLM2 as parent."""
    if not runtime.store.registry.exists(name):
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(base or base_dir)
        get_peft_model(model, LoraConfig(init_lora_weights=False, **config)).save_pretrained(out / name)
        runtime.store.importer.import_path(out / name, name, ImportOptions(parent=SMOL))
    return name


def test_adapters_run_on_llamacpp_two_at_once_and_what_it_cannot_serve_goes_to_hf(
        client: OpenAI, daemon: tuple[str, Kernel], adapter: str, builtin_runtime: Runtime, smollm2_dir: Path,
        tmp_path: Path) -> None:
    url, kernel = daemon
    other = _lora(builtin_runtime, smollm2_dir, tmp_path, "llama-test-lora-2", 8, r=4, target_modules=["o_proj"])

    def ask(model: str) -> str:
        return client.chat.completions.create(model=model, messages=QUESTION, max_tokens=12,
                                              temperature=0).choices[0].message.content

    finished = kernel.worker(KEY).scheduler.stats().finished
    alone = {m: ask(m) for m in (SMOL, adapter, other)}
    assert len(set(alone.values())) == 3  # each adapter changes the answer
    with ThreadPoolExecutor(3) as pool:
        together = dict(zip(alone, pool.map(ask, alone)))
    assert together == alone
    assert kernel.worker(KEY).scheduler.stats().finished == finished + 6  # all on the llama.cpp engine
    assert sorted(_engine(kernel).info().adapters) == sorted(r.adapter for r in (
        kernel.resolve(adapter, "generate"), kernel.resolve(other, "generate")))

    saved = _lora(builtin_runtime, smollm2_dir, tmp_path, "llama-test-saved-module", 9, r=2,
                  target_modules=["q_proj"], modules_to_save=["v_proj"])
    assert ask(saved)
    ps = {(m["model"], m["engine"]): m for m in httpx.get(url + "/admin/ps").json()["models"]}
    assert ps[(f"{SMOL}:latest", "hf")]["routed"] == ["adapters with fully trained modules run on the hf engine"]


def test_an_adapter_made_for_another_base_is_refused_with_the_reason(
        client: OpenAI, builtin_runtime: Runtime, smollm2_dir: Path, tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    small = tmp_path / "small"
    LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=49152)).save_pretrained(small)
    wrong = _lora(builtin_runtime, smollm2_dir, tmp_path, "llama-test-wrong-base", 10, base=small, r=4,
                  target_modules=["q_proj"])
    with pytest.raises(openai.APIError, match=r"does not match its base .*attn_q\.weight is \[576, 576\]"):
        client.chat.completions.create(model=wrong, messages=QUESTION, max_tokens=4)
    assert client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=4).usage.completion_tokens > 0
