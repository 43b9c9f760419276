"""Per-sequence token choice and text bookkeeping for iteration-level generation.

Everything here works on one live sequence at a time except ``pick_tokens``, which takes the
logits of a whole batch step: greedy rows share one ``argmax``, sampled rows each draw with their
own ``torch.Generator`` so a seed gives the same tokens whatever else shares the batch.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import torch

from llmos.engines.logprobs import MAX_TOP_LOGPROBS
from llmos.errors import InvalidInput
from llmos.engines.types import RequestStatus, SamplingParams, SequenceSpec, StepOutput

# Prompt tokens kept in front of the output when detokenising, so tokenizers whose decoding depends
# on the previous token (SentencePiece's leading-space marker) render the first output token right.
_DETOK_CONTEXT = 4
_INCOMPLETE = "\ufffd"


def check_params(params: SamplingParams) -> None:
    """Raise InvalidInput for sampling parameters no sampler can honour."""
    if params.max_tokens < 1:
        raise InvalidInput(f"max_tokens must be at least 1, got {params.max_tokens}")
    if params.temperature < 0:
        raise InvalidInput(f"temperature must be >= 0, got {params.temperature}")
    if not 0.0 < params.top_p <= 1.0:
        raise InvalidInput(f"top_p must be in (0, 1], got {params.top_p}")
    if params.top_k < 0:
        raise InvalidInput(f"top_k must be >= 0 (0 disables it), got {params.top_k}")
    if params.logprobs is not None and not 0 <= params.logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidInput(f"logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {params.logprobs}")


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    """A private RNG per sampled sequence; greedy sequences need none."""
    if params.greedy:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))
    return gen


def pick_tokens(
    logits: torch.Tensor, params: list[SamplingParams], gens: list[torch.Generator | None]
) -> list[int]:
    """One token per row of ``logits`` [rows, vocab]."""
    tokens = logits.argmax(dim=-1).tolist()
    for row, (p, gen) in enumerate(zip(params, gens)):
        if not p.greedy:
            tokens[row] = sample_row(logits[row], p, gen)
    return tokens


def sample_row(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    """Temperature, then top-k, then top-p (nucleus), then one multinomial draw."""
    scores = logits.float() / params.temperature
    if 0 < params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        scores = _top_p(scores, params.top_p)
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen).item())


def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    ordered, order = torch.sort(scores, descending=True)
    probs = torch.softmax(ordered, dim=-1)
    # Drop a token when the mass before it already reaches top_p; the best token always survives.
    drop = (torch.cumsum(probs, dim=-1) - probs) >= top_p
    ordered = ordered.masked_fill(drop, float("-inf"))
    return torch.full_like(scores, float("-inf")).scatter(0, order, ordered)


class IncrementalDetokenizer:
    """Turns a growing list of ids into text deltas without re-decoding the whole output.

    Decodes a short window (``prefix``..end) and emits what it adds over the window's previous
    text; holds back while the tail is an incomplete UTF-8 character (decoded as U+FFFD).
    """

    def __init__(self, tokenizer, context_ids: list[int]) -> None:
        self._tok = tokenizer
        self._ids = list(context_ids[-_DETOK_CONTEXT:])
        self._prefix = 0
        self._read = len(self._ids)

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is held back, even an incomplete character (the sequence has ended)."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        old = self._decode(self._prefix, self._read)
        new = self._decode(self._prefix, len(self._ids))
        if len(new) <= len(old) or (new.endswith(_INCOMPLETE) and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return new[len(old) :]

    def _decode(self, start: int, end: int) -> str:
        # No clean-up of spaces: it rewrites text before the new token and would break the deltas.
        return self._tok.decode(self._ids[start:end], skip_special_tokens=True, clean_up_tokenization_spaces=False)


class StopMatcher:
    """Finds stop strings in the output text and keeps them out of what is emitted.

    Text that could still grow into a stop string is held back until it either completes one
    (then it is dropped) or cannot anymore (then it is emitted).
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self.text = ""
        self._emitted = 0

    def push(self, delta: str) -> tuple[str, bool]:
        """Add new text; return (text safe to emit, whether a stop string was hit)."""
        if not self._stops:
            self.text += delta
            return self.flush(), False
        start = max(0, len(self.text) - self._longest + 1)
        self.text += delta
        hits = [i for i in (self.text.find(s, start) for s in self._stops) if i >= 0]
        if hits:
            cut = min(hits)
            out = self.text[self._emitted : cut]
            self.text = self.text[:cut]
            self._emitted = cut
            return out, True
        return self._emit_upto(len(self.text) - self._held_back()), False

    def flush(self) -> str:
        return self._emit_upto(len(self.text))

    def _emit_upto(self, end: int) -> str:
        out = self.text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return out

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        for size in range(min(self._longest - 1, len(self.text)), 0, -1):
            tail = self.text[-size:]
            if any(s.startswith(tail) for s in self._stops):
                return size
        return 0


@dataclass
class SeqState:
    """Engine-side state of one live sequence (the tensors live in the LiveBatch)."""

    spec: SequenceSpec
    generator: torch.Generator | None
    detok: IncrementalDetokenizer
    stops: StopMatcher
    matcher: Any = None  # the grammar matcher of a constrained sequence
    output_ids: list[int] = field(default_factory=list)
    finished: bool = False

    @property
    def total_len(self) -> int:
        return len(self.spec.prompt_ids) + len(self.output_ids)


def advance(state: SeqState, token_id: int, eos_ids: frozenset[int], context_length: int) -> StepOutput:
    """Record one new token; decide whether the sequence ends; return what the kernel sees."""
    state.output_ids.append(token_id)
    if token_id in eos_ids:
        return _finish(state, token_id, "", RequestStatus.FINISHED_STOPPED)
    text, hit = state.stops.push(state.detok.push(token_id))
    if hit:
        return _finish(state, token_id, text, RequestStatus.FINISHED_STOPPED, flush=False)
    # The next step would need room for one more position; at the limit the sequence must end.
    if len(state.output_ids) >= state.spec.params.max_tokens or state.total_len >= context_length:
        return _finish(state, token_id, text, RequestStatus.FINISHED_LENGTH)
    return StepOutput(state.spec.id, token_id, text)


def _finish(state: SeqState, token_id: int, text: str, status: RequestStatus, *, flush: bool = True) -> StepOutput:
    if flush:
        tail, hit = state.stops.push(state.detok.flush())
        text += tail
        if hit:
            status = RequestStatus.FINISHED_STOPPED
        else:
            text += state.stops.flush()
    state.finished = True
    return StepOutput(state.spec.id, token_id, text, True, status)
