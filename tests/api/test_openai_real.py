"""The official openai client against the daemon with the real built-in models and real engines."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from openai import OpenAI
from transformers import AutoModelForCausalLM

from llmos.daemon import create_app
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime
from llmos.store.importer import ImportOptions
from tests.api.server import serving
from tests.conftest import ModuleDirs

pytestmark = pytest.mark.slow
SMOL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def adapters(builtin_runtime: Runtime, smollm2_dir: Path, module_dirs: ModuleDirs) -> list[str]:
    """Two LoRA adapters over SmolLM2 with random (non-zero) weights, registered in the store."""
    from peft import LoraConfig, get_peft_model

    names = []
    for i in range(2):
        name = f"test-lora-{i}"
        if not builtin_runtime.store.registry.exists(name):
            torch.manual_seed(100 + i)
            cfg = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
            out = module_dirs(name)
            get_peft_model(AutoModelForCausalLM.from_pretrained(smollm2_dir), cfg).save_pretrained(out)
            builtin_runtime.store.importer.import_path(out, name, ImportOptions(parent=SMOL))
        names.append(name)
    return names


@pytest.fixture(scope="module")
def daemon(builtin_runtime: Runtime, adapters: list[str]) -> Iterator[tuple[str, Kernel]]:
    # The transformers engine for SmolLM2 here (the llama.cpp default has tests/api/test_openai_llamacpp.py):
    # these tests compare plain and adapter requests batched together on one engine.
    settings = builtin_runtime.settings.model_copy(update={"engine": "hf"})
    kernel = Kernel(settings, builtin_runtime.store.registry)
    with serving(create_app(builtin_runtime, kernel)) as url:
        yield url, kernel


@pytest.fixture(scope="module")
def client(daemon: tuple[str, Kernel]) -> OpenAI:
    return OpenAI(base_url=daemon[0] + "/v1", api_key="unused", max_retries=0)


def test_models_list_has_the_builtins(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {SMOL, "minilm-l6"} <= ids


def test_chat_answers_and_streams_the_same_text(client: OpenAI) -> None:
    reply = client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=20, temperature=0)
    text = reply.choices[0].message.content
    assert "Paris" in text
    assert reply.usage.completion_tokens > 0 and reply.id.startswith("req-")
    stream = client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=20, temperature=0,
                                            stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 3 and "".join(pieces) == text


def test_completion(client: OpenAI) -> None:
    out = client.completions.create(model=SMOL, prompt="The capital of France is", max_tokens=5, temperature=0)
    assert out.choices[0].text.strip() and out.usage.prompt_tokens == 5


def test_embeddings_are_normalised_and_meaningful(client: OpenAI) -> None:
    texts = ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply today."]
    data = client.embeddings.create(model="minilm-l6", input=texts).data
    vecs = np.array([d.embedding for d in data])
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.3


async def _greedy(url: str, models: list[str]) -> list[str]:
    async with httpx.AsyncClient(timeout=300) as c:
        rs = await asyncio.gather(*[c.post(url + "/v1/chat/completions", json={
            "model": m, "messages": QUESTION, "max_tokens": 12, "temperature": 0}) for m in models])
    return [r.json()["choices"][0]["message"]["content"] for r in rs]


def test_mixed_adapter_batch_matches_each_alone(daemon: tuple[str, Kernel], adapters: list[str]) -> None:
    url, kernel = daemon
    models = [SMOL, *adapters]
    alone = [asyncio.run(_greedy(url, [m]))[0] for m in models]
    assert len(set(alone)) == 3, alone  # the adapters really change the output
    before = kernel.worker(f"{SMOL}:latest").scheduler.stats().admitted
    together = asyncio.run(_greedy(url, models * 2))
    assert together == alone * 2
    assert kernel.worker(f"{SMOL}:latest").scheduler.stats().admitted == before + 6
