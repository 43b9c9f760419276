"""Output constraints and log-probabilities in llama.cpp's request terms.

llama.cpp's sampler runs llguidance grammars (its JSON-schema support is llguidance's ``%json``), so a
constraint becomes a small Lark grammar: the literal prefix, the schema, the literal suffix. llama.cpp
applies llguidance grammars from the first token (its lazy triggers work with its own GBNF grammars
only), so a constraint with a trigger (a call the model may open inside a free reply) is placed on
the transformers engine instead (``llmos.kernel.placement``).

The schema is first read by xgrammar (as the transformers engine does), so a schema either engine
cannot enforce is refused with the same reason.
"""

from __future__ import annotations

import json
from typing import Any

from llmos.engines.structured import check_schema
from llmos.engines.types import OutputConstraint, TokenLogprob, TokenLogprobs
from llmos.errors import InvalidInput

def grammar_fields(c: OutputConstraint) -> dict[str, Any]:
    """The completion request's grammar fields for ``c``."""
    check_schema(c.json_schema)
    if c.trigger:
        raise InvalidInput("the llama.cpp engine applies grammars from the first token; a tool call inside a "
                           "free reply runs on the hf engine", param="tool_choice")
    parts = [_literal(c.prefix), "value", _literal(c.suffix)]
    grammar = "%llguidance {}\nstart: " + " ".join(p for p in parts if p) + f"\nvalue: %json {_compact(c.json_schema)}\n"
    return {"grammar": grammar}


def _compact(schema: str) -> str:
    """The schema with llguidance told to emit compact JSON: with free whitespace between tokens a
    sampled reply can spend its whole token budget on blank lines and end cut off, not parseable."""
    parsed = json.loads(schema)
    if isinstance(parsed, dict):
        parsed = {**parsed, "x-guidance": {**parsed.get("x-guidance", {}), "whitespace_flexible": False}}
    return json.dumps(parsed)


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False) if text else ""


def logprob_fields(k: int | None) -> dict[str, Any]:
    """Ask for each token's probabilities: llama.cpp reports the chosen token inside its top list, so
    at least one alternative is asked for and the list is cut to ``k`` afterwards."""
    return {} if k is None else {"logprobs": max(k, 1)}


def token_logprobs(choice: dict[str, Any], k: int | None) -> list[TokenLogprobs]:
    """The log-probabilities of the tokens one streamed chunk adds (llama.cpp's ``logprobs.content``:
    probabilities of the model's own logits, before sampling and grammar)."""
    if k is None:
        return []
    content = (choice.get("logprobs") or {}).get("content") or []
    return [TokenLogprobs(_entry(e), [_entry(t) for t in (e.get("top_logprobs") or [])[:k]]) for e in content]


def _entry(e: dict[str, Any]) -> TokenLogprob:
    raw = bytes(e.get("bytes") or str(e.get("token", "")).encode())
    return TokenLogprob.of(raw, float(e["logprob"]))
