"""Overload of the one-off engine calls (embeddings, classify, tag): at most ``max_queue`` wait per
model; the rest are refused at once with 503 + Retry-After, and every admitted call completes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx

from llmos.daemon import create_app
from llmos.engines.base import FakeEngine
from llmos.kernel.core import Kernel
from llmos.runtime import open_runtime
from tests.api.server import serving
from tests.conftest import make_settings


class SlowEmbedder(FakeEngine):
    def embed(self, texts, *, adapter=None):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        return super().embed(texts, adapter=adapter)


async def flood(url: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        body = {"model": "minilm-l6", "input": ["a sentence"]}
        return await asyncio.gather(*[client.post("/v1/embeddings", json=body) for _ in range(n)])


def test_a_flood_of_embeddings_is_bounded_by_the_queue(home: Path) -> None:
    rt = open_runtime(make_settings(home, max_queue=4), builtins=False)
    kernel = Kernel(rt.settings, rt.store.registry, engine_factory=lambda ref: SlowEmbedder(ref))
    try:
        with serving(create_app(rt, kernel)) as url:
            replies = asyncio.run(flood(url, 60))
            statuses = Counter(r.status_code for r in replies)
            assert set(statuses) == {200, 503} and statuses[503] >= 30, statuses
            refused = next(r for r in replies if r.status_code == 503)
            assert refused.headers["retry-after"] and refused.json()["error"]["type"] == "queue_full"
            assert httpx.get(url + "/health").status_code == 200
    finally:
        kernel.close()
        rt.close()
