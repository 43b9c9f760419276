"""Constrained decoding for the transformers engine, with xgrammar.

One ``GrammarBackend`` per loaded model: it knows the tokenizer's vocabulary, compiles each
``OutputConstraint`` once (kept in a bounded cache keyed by the constraint), gives every constrained
sequence its own matcher, and masks a batch step's logits row by row; unconstrained rows are untouched.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any

import torch

from llmos.engines.types import OutputConstraint
from llmos.errors import InvalidInput

CACHE_SIZE = 128  # compiled grammars kept per model
_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*")  # xgrammar's "[time] file.cc:line: " in front


def _unenforceable(exc: Exception) -> InvalidInput:
    reason = _LOG_PREFIX.sub("", str(exc)).strip()
    return InvalidInput(f"the JSON schema cannot be enforced: {reason}", param="response_format")


def check_schema(schema_text: str) -> None:
    """xgrammar's reading of a JSON schema alone, no vocabulary needed: InvalidInput with its reason
    when it cannot be enforced (the llama.cpp engine checks schemas this way too)."""
    import xgrammar as xgr

    try:
        xgr.Grammar.from_json_schema(schema_text)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise _unenforceable(exc) from exc


class GrammarBackend:
    """xgrammar over one tokenizer. Called from the engine's thread only."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: frozenset[int]) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._stop_ids = sorted(stop_ids)
        self._info: Any = None
        self._compiler: Any = None
        self._compiled: OrderedDict[tuple[str, str, str, str], Any] = OrderedDict()

    @property
    def info(self) -> Any:
        """xgrammar's TokenizerInfo (built on first use: about a second for a 50k vocabulary)."""
        if self._info is None:
            import xgrammar as xgr

            self._info = xgr.TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=self.vocab_size,
                                                            stop_token_ids=self._stop_ids)
            self._compiler = xgr.GrammarCompiler(self._info, max_threads=1)
        return self._info

    def token_bytes(self) -> list[bytes]:
        """Each token id's raw bytes as it adds them to the output text."""
        return list(self.info.decoded_vocab)

    def compile(self, constraint: OutputConstraint) -> Any:
        """The compiled grammar for ``constraint``; InvalidInput with xgrammar's reason when it has none."""
        key = constraint.key
        hit = self._compiled.get(key)
        if hit is not None:
            self._compiled.move_to_end(key)
            return hit
        compiled = self._compile(constraint)
        self._compiled[key] = compiled
        if len(self._compiled) > CACHE_SIZE:
            self._compiled.popitem(last=False)
        return compiled

    def _compile(self, constraint: OutputConstraint) -> Any:
        self.info  # noqa: B018 - builds the compiler
        try:
            if constraint.trigger:
                return self._compiler.compile_structural_tag(json.dumps(_triggered(constraint)))
            return self._compiler.compile_grammar(_whole(constraint))
        except (RuntimeError, ValueError, TypeError) as exc:
            raise _unenforceable(exc) from exc

    def matcher(self, constraint: OutputConstraint) -> Any:
        import xgrammar as xgr

        return xgr.GrammarMatcher(self.compile(constraint))

    def mask(self, logits: torch.Tensor, matchers: list[Any]) -> None:
        """Forbid, in place, every token a row's matcher rejects; rows whose matcher is None keep theirs."""
        import xgrammar as xgr

        rows = [row for row, m in enumerate(matchers) if m is not None]
        if not rows:
            return
        bitmask = xgr.allocate_token_bitmask(len(matchers), self.vocab_size)
        for row in rows:
            matchers[row].fill_next_token_bitmask(bitmask, row)
        xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), vocab_size=self.vocab_size, indices=rows)


def _whole(constraint: OutputConstraint) -> Any:
    """prefix, the JSON value (compact whitespace: no runs of it for a small model to loop in), suffix."""
    import xgrammar as xgr

    parts = [xgr.Grammar.from_json_schema(constraint.json_schema, any_whitespace=False, strict_mode=True)]
    if constraint.prefix:
        parts.insert(0, xgr.Grammar.from_ebnf(f"root ::= {json.dumps(constraint.prefix)}"))
    if constraint.suffix:
        parts.append(xgr.Grammar.from_ebnf(f"root ::= {json.dumps(constraint.suffix)}"))
    return parts[0] if len(parts) == 1 else xgr.Grammar.concat(*parts)


def _triggered(constraint: OutputConstraint) -> dict[str, object]:
    """Free text in which each ``trigger`` opens prefix + JSON + suffix (xgrammar's structural tag)."""
    if not constraint.prefix.startswith(constraint.trigger):
        raise ValueError(f"the trigger {constraint.trigger!r} must start the prefix {constraint.prefix!r}")
    tag = {"type": "tag", "begin": constraint.prefix, "end": constraint.suffix,
           "content": {"type": "json_schema", "json_schema": json.loads(constraint.json_schema)}}
    return {"type": "structural_tag",
            "format": {"type": "triggered_tags", "triggers": [constraint.trigger], "tags": [tag]}}
