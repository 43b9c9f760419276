"""The engine hands the KV cache to the model under the name its transformers release takes: a wrong
name is swallowed by the forward pass's ``**kwargs``, the cache stays empty and the live batch breaks at
its first merge (seen with a transformers release that still called it ``past_key_values``)."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers.cache_utils import DynamicCache

from llmos.engines.hf_loading import cache_kwarg


class OlderForward(torch.nn.Module):
    """A forward pass with the signature of transformers releases before the rename."""

    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, use_cache=None, **kwargs):  # type: ignore[no-untyped-def]
        return past_key_values


def test_the_installed_model_takes_the_name_and_fills_the_cache(smol_model) -> None:
    name = cache_kwarg(smol_model)
    assert name in ("cache", "past_key_values")
    cache = DynamicCache(config=smol_model.config)
    with torch.inference_mode():
        smol_model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True, **{name: cache})
    assert cache.layers[0].keys is not None and cache.layers[0].keys.shape[-2] == 3


def test_an_older_signature_gets_past_key_values() -> None:
    assert cache_kwarg(OlderForward()) == "past_key_values"


def test_a_peft_wrapped_model_is_read_through_to_its_base(smol_model) -> None:
    wrapped = get_peft_model(smol_model, LoraConfig(r=4, target_modules=["q_proj"]))
    try:
        assert cache_kwarg(wrapped) == cache_kwarg(wrapped.get_base_model())
    finally:
        wrapped.unload()
