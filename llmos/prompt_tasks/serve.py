"""Running a prompt task through the kernel: the same path /v1/classify and /v1/tag take for any model.

Tokenisation happens here, at the kernel's front door (the base's tokenizer, the task's stored chat
template); the engine sees only ids (``Engine.score``) or texts (``Engine.embed``) on its worker
thread, and extraction runs as ordinary generation requests that the scheduler batches with the rest.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llmos.engines.base import Span
from llmos.errors import EngineFailed, InvalidInput
from llmos.kernel.codec import PromptCodec
from llmos.kernel.core import Kernel, Resolved
from llmos.kernel.request import Request
from llmos.engines.types import RequestStatus, SamplingParams
from llmos.prompt_tasks import extract
from llmos.prompt_tasks.classify import (
    CONTENT_FREE, LikelihoodPrompts, label_documents, likelihood_probs, similarity_probs,
)
from llmos.prompt_tasks.spec import PromptTaskSpec
from llmos.prompt_tasks.store import spec_of

_MARK = "\u2063LLMOS-ANSWER\u2063"


async def run(task: str, kernel: Kernel, r: Resolved, texts: list[str], *, tenant: str = "default") -> list[Any]:
    """``classify`` -> label probabilities per text; ``tag`` -> spans per text."""
    spec = spec_of(r.info)
    if task == "classify" and spec.method == "likelihood":
        return await _likelihood(kernel, r, spec, texts)
    if task == "classify" and spec.method == "similarity":
        return await _similarity(kernel, r, spec, texts)
    if task == "tag" and spec.method == "generate":
        return await asyncio.gather(*(_extract(kernel, r, spec, t, tenant) for t in texts))
    raise InvalidInput(f"prompt task {r.info.ref} ({spec.method}) cannot {task}")


async def _likelihood(kernel: Kernel, r: Resolved, spec: PromptTaskSpec, texts: list[str]) -> list[dict[str, float]]:
    codec = await asyncio.to_thread(kernel.codec, r)
    chat = codec.encode_chat if codec.chat_template else None
    prompts = LikelihoodPrompts(spec, _encoder(codec), chat, end_of_turn(codec))
    extra = [CONTENT_FREE] if spec.calibrate else []
    contexts = await asyncio.to_thread(prompts.contexts, [*texts, *extra])
    answers = prompts.answers
    _check_context(r, contexts, answers)
    logprobs = await kernel.call(r, lambda e: e.score(contexts, answers, adapter=r.adapter))
    prior = logprobs.pop() if spec.calibrate else None
    return likelihood_probs(spec.labels, logprobs, prior)


async def _similarity(kernel: Kernel, r: Resolved, spec: PromptTaskSpec, texts: list[str]) -> list[dict[str, float]]:
    docs, owners = label_documents(spec)
    inputs = [spec.render(t) for t in texts]
    vectors = await kernel.call(r, lambda e: e.embed(inputs + docs, adapter=r.adapter))
    return similarity_probs(spec, vectors[:len(inputs)], vectors[len(inputs):], owners)


async def _extract(kernel: Kernel, r: Resolved, spec: PromptTaskSpec, text: str, tenant: str) -> list[Span]:
    codec = await asyncio.to_thread(kernel.codec, r)
    if codec.chat_template:
        ids = codec.encode_chat(extract.messages(spec, text))
    else:
        ids = codec.encode(extract.plain_prompt(spec, text))
    room = (r.base.manifest.context_length or 2048) - len(ids)
    if room < 1:
        raise InvalidInput(f"the extraction prompt has {len(ids)} tokens, which fills the model's context")
    req = Request(model=r.key, prompt_ids=ids, adapter=r.adapter, tenant=tenant,
                  params=SamplingParams(max_tokens=min(spec.max_new_tokens, room), temperature=0.0))
    stream = await kernel.generate(req)
    output = "".join([out.text async for out in stream])
    if req.status == RequestStatus.FINISHED_ERROR:
        raise EngineFailed(f"extraction failed: {req.error}")
    return extract.to_spans(text, extract.parse_mentions(output, spec.labels))


def end_of_turn(codec: PromptCodec) -> str | None:
    """What the chat template writes after an assistant's answer (e.g. ``<|im_end|>``), if anything."""
    if not codec.chat_template:
        return None
    chat = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _MARK}]
    rendered = codec.tokenizer.apply_chat_template(chat, chat_template=codec.chat_template, tokenize=False)
    _, found, after = rendered.partition(_MARK)
    return after.rstrip() or None if found else None


def _encoder(codec: PromptCodec):  # type: ignore[no-untyped-def]
    return lambda text: list(codec.tokenizer.encode(text, add_special_tokens=False))


def _check_context(r: Resolved, contexts: list[list[int]], answers: list[list[int]]) -> None:
    limit = r.base.manifest.context_length or 2048
    longest = max(map(len, contexts)) + max(map(len, answers))
    if longest > limit:
        raise InvalidInput(f"a prompt with its label needs {longest} tokens; the model's context is {limit}")
