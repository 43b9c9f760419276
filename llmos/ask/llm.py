"""The chat model fills what the words alone did not: one forced call of the operation, under constrained
decoding, so whatever it writes is a valid call (the arguments already known are constants in the schema).

It runs through the kernel like any request (the model's worker, memory budget and queue limits), as the
caller's tenant, greedily.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from llmos.api.tools import split_calls
from llmos.ask.ops import Operation, Param
from llmos.engines import constrain
from llmos.engines.base import ChatMessage
from llmos.engines.chat import ToolDef
from llmos.engines.types import RequestStatus, SamplingParams
from llmos.errors import EngineFailed
from llmos.kernel.core import Kernel
from llmos.kernel.request import Request

CHAT_MODEL = "smollm2-135m-instruct"
MAX_TOKENS = 160
_SYSTEM = ("You turn a request to an operating system for language models into one function call. "
           "Fill each argument with words copied from the user's request.")


def call_schema(op: Operation, known: dict[str, Any], open_params: list[Param]) -> dict[str, Any]:
    """The call's parameters: known values as constants, open ones by their own schema."""
    props: dict[str, Any] = {k: {"const": v} for k, v in known.items()}
    props.update({p.name: p.schema() for p in open_params})
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


async def complete(kernel: Kernel, op: Operation, known: dict[str, Any], open_params: list[Param], text: str,
                   tenant: str, model: str = CHAT_MODEL) -> dict[str, Any] | None:
    """The arguments with the open ones filled by the chat model, or None when it wrote no call."""
    r = await asyncio.to_thread(kernel.resolve, model, "generate", tenant=tenant)
    tool = ToolDef(op.name, op.summary, call_schema(op, known, open_params))
    constraint = constrain.tool_call([tool])
    await kernel.check_constraint(r, constraint)
    codec = await asyncio.to_thread(kernel.codec, r)
    ids = codec.encode_chat([ChatMessage("system", _SYSTEM), ChatMessage("user", text)], tools=[tool])
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)
    params.constraint = constraint
    req = Request(model=r.key, prompt_ids=ids, adapter=r.adapter, tenant=tenant, params=params)
    stream = await kernel.generate(req)
    output = "".join([out.text async for out in stream])
    if req.status == RequestStatus.FINISHED_ERROR:
        raise EngineFailed(f"the chat model failed while planning: {req.error}")
    _, calls = split_calls(output, frozenset({op.name}), single=True)
    if not calls:
        return None
    args = json.loads(calls[0].arguments)
    return args if isinstance(args, dict) else None
