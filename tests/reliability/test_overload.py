"""Overload of the one-off engine calls (embeddings, classify, tag): at most ``max_queue`` wait per
model; the rest are refused at once with 503 + Retry-After, and every admitted call completes."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from llmos.daemon import create_app
from llmos.engines.base import FakeEngine
from llmos.kernel.core import Kernel
from llmos.runtime import open_runtime
from tests.api.server import serving
from tests.conftest import make_settings
from tests.waiting import BACKSTOP_S, POLL_S


class GatedEmbedder(FakeEngine):
    """Embeds only once the test opens ``gate``: the first call holds the model, the others wait or are refused."""

    gate = threading.Event()

    def embed(self, texts, *, adapter=None):  # type: ignore[no-untyped-def]
        assert self.gate.wait(BACKSTOP_S), "the test never opened the gate"
        return super().embed(texts, adapter=adapter)


async def flood(url: str, n: int, admitted: Callable[[], int]) -> list[httpx.Response]:
    """``n`` embedding calls at once; the gate opens once each was either answered (refused) or admitted."""
    async with httpx.AsyncClient(base_url=url, timeout=BACKSTOP_S) as client:
        body = {"model": "minilm-l6", "input": ["a sentence"]}
        calls = [asyncio.create_task(client.post("/v1/embeddings", json=body)) for _ in range(n)]
        while sum(c.done() for c in calls) + admitted() < n:
            await asyncio.wait(calls, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
        GatedEmbedder.gate.set()
        return list(await asyncio.gather(*calls))


def test_a_flood_of_embeddings_is_bounded_by_the_queue(home: Path) -> None:
    rt = open_runtime(make_settings(home, max_queue=4), builtins=False)
    GatedEmbedder.gate.clear()
    kernel = Kernel(rt.settings, rt.store.registry, engine_factory=lambda ref: GatedEmbedder(ref))
    ref = rt.store.registry.get("minilm-l6").ref

    def admitted() -> int:  # calls the model's worker holds: queued, or the one running
        return kernel.worker(ref).pending_calls

    try:
        with serving(create_app(rt, kernel)) as url:
            replies = asyncio.run(flood(url, 60, admitted))
            statuses = Counter(r.status_code for r in replies)
            assert set(statuses) == {200, 503} and statuses[200] <= 4 + 1, statuses  # max_queue waiting + one running
            refused = next(r for r in replies if r.status_code == 503)
            assert refused.headers["retry-after"] and refused.json()["error"]["type"] == "queue_full"
            assert httpx.get(url + "/health").status_code == 200
    finally:
        GatedEmbedder.gate.set()
        kernel.close()
        rt.close()
