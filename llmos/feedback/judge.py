"""An optional judge in the generation gate: a stored chat model reads a request and two answers to it
(the candidate's and the serving version's) and says which is better.

The judge is asked twice per row, once with the candidate's answer as "A" and once as "B", and its
preference is read from its next-token probabilities of the letters ``A`` and ``B`` (no sampling, no
parsing of free text): ``p(candidate) = (P(A | cand first) + P(B | cand second)) / 2``. Averaging the
two orders cancels a judge's bias for a position, so swapping the two versions gives exactly ``1 - p``
and two equal answers give 0.5.

The gate uses it as a veto (``llmos.feedback.gate``): a candidate the judge confidently finds worse
(the upper confidence bound of its mean preference below 0.5) is rejected even when chrF passed. A
135M model is a weak judge, so the setting is off by default; a larger stored chat model makes it
worth having.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmos.data.rows import Row, SftRow
from llmos.errors import InvalidInput, NotFound
from llmos.feedback.stats import paired_gain
from llmos.store.manifest import ModelInfo, is_prompt_task
from llmos.store.registry import Registry
from llmos.train.report import EvalReport

SYSTEM = ("You compare two answers to the same request. Reply with one letter: A if answer A is better, "
          "B if answer B is better.")
MAX_CHARS = 2000  # of the request and of each answer shown to the judge


@dataclass(frozen=True)
class JudgeVerdict:
    """The judge's mean preference for the candidate over ``rows`` rows and its upper confidence bound."""

    judge: str
    rows: int
    preference: float
    upper: float

    @property
    def prefers_serving(self) -> bool:
        return self.rows > 0 and self.upper < 0.5

    def describe(self) -> str:
        return (f"judge {self.judge}: preference for the candidate {self.preference:.3f} (upper bound "
                f"{self.upper:.3f}, {self.rows} rows)")


def check_judge(registry: Registry, ref: str, tenant: str) -> ModelInfo:
    """The judge model ``ref`` in ``tenant``'s namespace: a stored text generator with a chat template."""
    try:
        info = registry.get(ref, tenant=tenant)
    except NotFound:
        raise InvalidInput(f"judge {ref!r} is not a stored model; name a chat model such as "
                           "smollm2-135m-instruct", param="judge") from None
    if is_prompt_task(info) or "generate" not in info.manifest.tasks or not info.manifest.chat_template:
        raise InvalidInput(f"judge {info.ref} is not a chat model (it serves {', '.join(info.manifest.tasks)}); "
                           "the judge reads two answers and names the better one", param="judge")
    return info


def judge_prompts(tokenizer: Any, template: str | None, request: str, first: str, second: str) -> str:
    user = (f"Request:\n{request[:MAX_CHARS]}\n\nAnswer A:\n{first[:MAX_CHARS]}\n\nAnswer B:\n{second[:MAX_CHARS]}"
            "\n\nWhich answer is better, A or B?")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)


def preferences(model: Any, tokenizer: Any, template: str | None, requests: Sequence[str],
                candidate: Sequence[str], serving: Sequence[str], batch_size: int = 4) -> list[float]:
    """Per row, the judge's probability that the candidate's answer is the better one (both orders)."""
    if not len(requests) == len(candidate) == len(serving):
        raise ValueError("requests and both versions' answers must pair up row by row")
    texts = []
    for req, cand, serv in zip(requests, candidate, serving):
        texts += [judge_prompts(tokenizer, template, req, cand, serv), judge_prompts(tokenizer, template, req, serv, cand)]
    p_a = _letter_a(model, tokenizer, texts, batch_size)
    return [(p_a[2 * i] + (1.0 - p_a[2 * i + 1])) / 2 for i in range(len(requests))]


def _letter_a(model: Any, tokenizer: Any, texts: list[str], batch_size: int) -> list[float]:
    """P(A) / (P(A) + P(B)) of the judge's next token after each prompt."""
    import torch

    ids = [tokenizer.encode(letter, add_special_tokens=False)[0] for letter in ("A", "B")]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    out: list[float] = []
    try:
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
                logits = model(**enc).logits[:, -1, ids].float()
                out += torch.softmax(logits, dim=-1)[:, 0].tolist()
    finally:
        tokenizer.padding_side = side
    return out


def judge_gate(registry: Registry, ref: str, tenant: str, splits: dict[str, list[Row]],
               cand: dict[str, EvalReport], serv: dict[str, EvalReport], fair: Sequence[str], confidence: float,
               seed: int, batch_size: int = 4) -> JudgeVerdict:
    """The judge's verdict over the ``fair`` splits' rows whose answers both versions generated."""
    from llmos.train.loading import load_trained

    requests: list[str] = []
    c_answers: list[str] = []
    s_answers: list[str] = []
    for split in fair:
        c, s = cand.get(split), serv.get(split)
        if c is None or s is None or c.answers is None or s.answers is None:
            continue
        chats = [r for r in splits.get(split, []) if isinstance(r, SftRow)]
        n = min(len(c.answers), len(s.answers), len(chats))
        requests += [_request(r) for r in chats[:n]]
        c_answers += c.answers[:n]
        s_answers += s.answers[:n]
    if not requests:
        return verdict(ref, [], confidence, seed)
    loaded = load_trained(registry, check_judge(registry, ref, tenant).key)
    prefs = preferences(loaded.model, loaded.tokenizer, loaded.chat_template, requests, c_answers, s_answers, batch_size)
    return verdict(ref, prefs, confidence, seed)


def _request(row: SftRow) -> str:
    """What the user asked: the last turn before the answer."""
    turns = row.to_messages()
    return turns[-2].content if len(turns) > 1 else ""


def verdict(judge: str, prefs: Sequence[float], confidence: float, seed: int) -> JudgeVerdict:
    """The mean preference and its upper bound at ``confidence`` (a seeded bootstrap, as for the gain)."""
    if not prefs:
        return JudgeVerdict(judge, 0, 0.5, 1.0)
    against = paired_gain([0.5] * len(prefs), list(prefs), confidence=confidence, seed=seed)  # 0.5 - preference
    return JudgeVerdict(judge, len(prefs), 0.5 - against.mean, 0.5 - against.lower)
