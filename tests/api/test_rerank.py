"""/v1/rerank on the real MiniLM-L6: documents ordered by cosine similarity to the query."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from llmos.daemon import create_app
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime

DOCS = ["The recipe needs two eggs, flour and a cup of milk.",
        "Paris is the capital and largest city of France.",
        "The stock market fell sharply on Monday."]


@pytest.fixture(scope="module")
def client(builtin_runtime: Runtime) -> Iterator[TestClient]:
    kernel = Kernel(builtin_runtime.settings, builtin_runtime.store.registry)
    yield TestClient(create_app(builtin_runtime, kernel))
    kernel.close()


def test_the_relevant_document_ranks_first(client: TestClient) -> None:
    r = client.post("/v1/rerank", json={"model": "minilm-l6", "query": "What is the capital of France?",
                                        "documents": DOCS})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == "minilm-l6" and out["id"] == r.headers["x-request-id"]
    assert [x["index"] for x in out["results"]][0] == 1
    scores = [x["relevance_score"] for x in out["results"]]
    assert scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] <= scores[0] <= 1.0
    assert out["results"][0]["document"] == {"text": DOCS[1]} and out["usage"]["total_tokens"] > 0
    short = client.post("/v1/rerank", json={"model": "minilm-l6", "query": "eggs and milk", "documents": DOCS,
                                            "top_n": 1, "return_documents": False}).json()
    assert len(short["results"]) == 1 and short["results"][0]["index"] == 0
    assert "document" not in short["results"][0]


@pytest.mark.parametrize("body,status,param", [
    ({"model": "smollm2-135m-instruct", "query": "q", "documents": ["d"]}, 400, None),  # cannot embed
    ({"model": "no-such-model", "query": "q", "documents": ["d"]}, 404, None),
    ({"model": "minilm-l6", "query": "q", "documents": [{"text": "d"}]}, 422, "documents"),
    ({"model": "minilm-l6", "query": "q", "documents": []}, 422, "documents"),
    ({"model": "minilm-l6", "query": "q", "documents": ["d"], "top_n": 0}, 422, "top_n"),
    ({"model": "minilm-l6", "query": "q", "documents": ["d"], "rank_fields": ["x"]}, 400, "rank_fields"),
])
def test_bad_rerank_requests_are_refused_naming_the_field(client: TestClient, body: dict, status: int, param: str | None) -> None:
    r = client.post("/v1/rerank", json=body)
    assert r.status_code == status, r.text
    if param is not None:
        assert param in str(r.json()["error"])
