"""Which engine runs a request: the manifest's kinds, the setting, and what llama.cpp cannot do."""

from __future__ import annotations

import pytest

from llmos.errors import InvalidInput
from llmos.kernel.placement import engine_key, place, preferred, split_key
from llmos.store.manifest import ManifestData


def manifest(engines: list[str]) -> ManifestData:
    return ManifestData(files=[], architecture="LlamaForCausalLM", tasks=["generate"], source="test", engines=engines)


BOTH, HF_ONLY, GGUF_ONLY, OLD = manifest(["llamacpp", "hf"]), manifest(["hf"]), manifest(["llamacpp"]), manifest([])


def test_generation_goes_to_the_manifests_first_kind_unless_the_setting_names_another() -> None:
    assert place(BOTH, "auto", task="generate", adapter=False, scores=False).engine == "llamacpp"
    assert place(BOTH, "hf", task="generate", adapter=False, scores=False).engine == "hf"
    assert place(HF_ONLY, "llamacpp", task="generate", adapter=False, scores=False).engine == "hf"
    assert place(OLD, "auto", task="generate", adapter=False, scores=False).engine == "hf"
    assert place(BOTH, "auto", task="generate", adapter=True, scores=False).engine == "llamacpp"  # LoRA converts
    assert preferred(BOTH, "auto") == "llamacpp" and preferred(OLD, "llamacpp") == "hf"


@pytest.mark.parametrize(("kwargs", "why"), [
    ({"task": "generate", "adapter": True, "scores": False, "adapter_unsupported": "DoRA adapters"},
     "DoRA adapters run on the hf engine"),
    ({"task": "classify", "adapter": False, "scores": True}, "label scoring runs on the hf engine"),
    ({"task": "embed", "adapter": False, "scores": False}, "embed runs on the hf engine"),
    ({"task": "generate", "adapter": False, "scores": False, "needs": "a tool call inside a free reply"},
     "a tool call inside a free reply runs on the hf engine"),
])
def test_what_llamacpp_cannot_do_falls_back_to_hf_and_says_why(kwargs: dict, why: str) -> None:
    where = place(BOTH, "auto", **kwargs)
    assert (where.engine, where.note) == ("hf", why)
    with pytest.raises(InvalidInput, match="llama.cpp only"):
        place(GGUF_ONLY, "auto", **kwargs)


def test_engine_keys_keep_the_transformers_key_a_bare_ref() -> None:
    assert engine_key("m:v1", "hf") == "m:v1" and split_key("m:v1") == ("m:v1", "hf")
    assert split_key(engine_key("m:v1", "llamacpp")) == ("m:v1", "llamacpp")
