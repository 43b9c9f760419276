"""Log-probabilities of sampled tokens and their likeliest alternatives, for a batch step."""

from __future__ import annotations

import torch

from llmos.engines.types import TokenLogprob, TokenLogprobs

MAX_TOP_LOGPROBS = 20  # OpenAI's limit on top_logprobs


class TokenTexts:
    """Token id -> (text, bytes) as OpenAI reports them: the text of the token's bytes, or ``\\xNN``
    escapes for a token that holds only part of a multi-byte character."""

    def __init__(self, token_bytes: list[bytes]) -> None:
        self._bytes = token_bytes

    def entry(self, token_id: int, logprob: float) -> TokenLogprob:
        return TokenLogprob.of(self._bytes[token_id] if 0 <= token_id < len(self._bytes) else b"", logprob)


def step_logprobs(logits: torch.Tensor, tokens: list[int], wanted: list[int | None],
                  texts: TokenTexts) -> list[TokenLogprobs | None]:
    """For each row whose ``wanted`` is not None: the chosen token's log-probability and the ``wanted``
    likeliest tokens. ``logits`` are the model's own, before temperature or any constraint."""
    rows = [row for row, k in enumerate(wanted) if k is not None]
    out: list[TokenLogprobs | None] = [None] * len(wanted)
    if not rows:
        return out
    logp = torch.log_softmax(logits[rows].float(), dim=-1)
    k_max = max(min(int(wanted[r] or 0), MAX_TOP_LOGPROBS) for r in rows)
    top_v, top_i = logp.topk(k_max, dim=-1) if k_max else (None, None)
    chosen = logp.gather(-1, torch.tensor([[tokens[r]] for r in rows], device=logp.device)).squeeze(-1).tolist()
    for n, row in enumerate(rows):
        k = min(int(wanted[row] or 0), MAX_TOP_LOGPROBS)
        top = []
        if k:
            top = [texts.entry(i, v) for i, v in zip(top_i[n, :k].tolist(), top_v[n, :k].tolist())]
        out[row] = TokenLogprobs(texts.entry(tokens[row], chosen[n]), top)
    return out
