"""The official openai client against an auth-on daemon running the real SmolLM2."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from llmos.daemon import create_app
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime
from tests.api.server import serving
from tests.auth.conftest import SMOL, MakeKey

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_real_model_behind_keys_scopes_and_quota(secure_runtime: Runtime, make_key: MakeKey) -> None:
    # the fp32 engine, whose answer the first check reads (the Q4 engine's: tests/api/test_openai_llamacpp.py)
    kernel = Kernel(secure_runtime.settings.model_copy(update={"engine": "hf"}), secure_runtime.store.registry)
    infer, reader = make_key("infer"), make_key("read")
    with serving(create_app(secure_runtime, kernel)) as url:
        ok = OpenAI(base_url=url + "/v1", api_key=infer.raw, max_retries=0)
        r = ok.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=8, temperature=0)  # type: ignore[arg-type]
        assert r.choices[0].message.content and "Paris" in r.choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            OpenAI(base_url=url + "/v1", api_key="llmos-wrong", max_retries=0).models.list()
        with pytest.raises(openai.PermissionDeniedError):
            OpenAI(base_url=url + "/v1", api_key=reader.raw, max_retries=0).chat.completions.create(
                model=SMOL, messages=QUESTION, max_tokens=4)  # type: ignore[arg-type]

        limited = make_key("infer", token_quota=r.usage.prompt_tokens + 4)  # type: ignore[union-attr]
        client = OpenAI(base_url=url + "/v1", api_key=limited.raw, max_retries=0)
        pieces: list[str] = []
        with pytest.raises(openai.APIError, match="quota"):
            for chunk in client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=30,  # type: ignore[arg-type]
                                                        temperature=0, stream=True):
                pieces.append(chunk.choices[0].delta.content or "")
        assert "".join(pieces).strip()  # the answer's first tokens came through before the stream ended
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=4)  # type: ignore[arg-type]
    kernel.close()
