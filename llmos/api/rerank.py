"""``POST /v1/rerank``: documents ordered by relevance to a query, in the shape vLLM serves (Jina's and
Cohere's). Scored with an embedding model: the cosine of the query's and each document's embeddings.
No cross-encoder ships with llmos; any model that can ``embed`` serves (the built-in ``minilm-l6``)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from llmos.api.bounds import ModelName
from llmos.api.deps import Caller, get_caller, get_kernel, get_runtime
from llmos.api.generation import check_prompt_size
from llmos.api.reqlog import LogEntry, record
from llmos.kernel.core import Kernel
from llmos.kernel.request import new_request_id
from llmos.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["rerank"])
KernelDep = Annotated[Kernel, Depends(get_kernel)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[Caller, Depends(get_caller)]
Text = Annotated[str, Field(min_length=1, max_length=32_000)]


class RerankIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    query: Text
    documents: list[Text] = Field(min_length=1, max_length=255, description="the texts to order (strings)")
    top_n: int | None = Field(default=None, ge=1, description="return only the n most relevant (default: all)")
    return_documents: bool = True


def scores(vectors: Any) -> list[float]:
    """Cosine similarity of the first vector (the query) with each of the others."""
    m = np.asarray(vectors, dtype=np.float64)
    m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    return [float(x) for x in m[1:] @ m[0]]


@router.post("/rerank")
async def rerank(body: RerankIn, kernel: KernelDep, runtime: RuntimeDep, caller: CallerDep) -> JSONResponse:
    resolved = await run_in_threadpool(lambda: kernel.resolve(body.model, "embed", tenant=caller.tenant))
    texts = [body.query, *body.documents]
    check_prompt_size(kernel, "".join(texts))
    codec = await kernel.codec_async(resolved)
    n_tokens = sum(codec.count(t) for t in texts)
    vectors = await kernel.call(resolved, lambda e: e.embed(texts, adapter=resolved.adapter),
                                background=caller.background)
    ranked = sorted(enumerate(scores(vectors)), key=lambda p: -p[1])[:body.top_n or len(body.documents)]
    results = []
    for index, score in ranked:
        item: dict[str, Any] = {"index": index, "relevance_score": score}
        if body.return_documents:
            item["document"] = {"text": body.documents[index]}
        results.append(item)
    rid = new_request_id()
    await record(runtime, LogEntry(rid, "rerank", resolved.exact, caller, adapter=resolved.adapter,
                                   prompt_tokens=n_tokens, prompt=json.dumps(texts, ensure_ascii=False)))
    return JSONResponse({"id": rid, "model": resolved.name, "results": results,
                         "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}},
                        headers={"X-Request-Id": rid})
