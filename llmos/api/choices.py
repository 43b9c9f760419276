"""One choice of a completion as it grows: its content, tool calls and log-probabilities.

A choice is one kernel request. ``push`` takes each token the engine produced and returns the delta a
stream sends for it (text held back while it may still be a tool-call tag; log-probabilities ride with
the next delta that carries text); ``finish`` flushes what is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmos.api.tools import ToolCallStream, ToolPlan
from llmos.engines.chat import ToolCall
from llmos.engines.types import RequestStatus, StepOutput, TokenLogprob, TokenLogprobs
from llmos.kernel.request import Request


@dataclass
class Delta:
    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)


class Choice:
    def __init__(self, index: int, req: Request, tools: ToolPlan | None = None) -> None:
        self.index = index
        self.req = req
        self.raw: list[str] = []  # every piece of text the engine produced
        self.content: list[str] = []  # the same, less the parsed tool-call blocks
        self.calls: list[ToolCall] = []
        self.logprobs: list[TokenLogprobs] = []
        self._pending: list[TokenLogprobs] = []
        self._parser = ToolCallStream(tools.names, tools.single) if tools is not None and tools.names else None

    def push(self, out: StepOutput) -> Delta:
        self.raw.append(out.text)
        if out.logprobs is not None:
            self.logprobs.append(out.logprobs)
            self._pending.append(out.logprobs)
        if self._parser is None:
            return self._delta([out.text] if out.text else [])
        return self._delta(self._parser.push(out.text) if out.text else [])

    def finish(self) -> Delta:
        return self._delta(self._parser.finish() if self._parser is not None else [], flush=True)

    def _delta(self, pieces: list[str | ToolCall], flush: bool = False) -> Delta:
        text = "".join(p for p in pieces if isinstance(p, str))
        calls = [p for p in pieces if isinstance(p, ToolCall)]
        self.content.append(text)
        self.calls += calls
        if not (text or calls or flush):
            return Delta()
        logprobs, self._pending = self._pending, []
        return Delta(text, calls, logprobs)

    @property
    def text(self) -> str:
        return "".join(self.raw)

    def message_content(self) -> str | None:
        """The reply's content: None when it was only tool calls."""
        content = "".join(self.content)
        return (content.strip() or None) if self.calls else content

    @property
    def finish_reason(self) -> str:
        if self.req.status == RequestStatus.FINISHED_LENGTH:
            return "length"
        return "tool_calls" if self.calls else "stop"


# -- OpenAI's shapes -------------------------------------------------------------------------------
def tool_calls_json(calls: list[ToolCall], first_index: int = 0, *, stream: bool = False) -> list[dict[str, object]]:
    out = []
    for i, c in enumerate(calls):
        call: dict[str, object] = {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        out.append({"index": first_index + i, **call} if stream else call)
    return out


def chat_logprobs(entries: list[TokenLogprobs]) -> dict[str, object]:
    def one(t: TokenLogprob) -> dict[str, object]:
        return {"token": t.token, "logprob": t.logprob, "bytes": t.bytes}

    return {"content": [{**one(e.chosen), "top_logprobs": [one(t) for t in e.top]} for e in entries],
            "refusal": None}


def completion_logprobs(entries: list[TokenLogprobs], offset: int = 0) -> dict[str, object]:
    """The legacy completions shape; ``offset`` is where the first token's text starts in the choice."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.chosen.token)
    return {"tokens": [e.chosen.token for e in entries], "token_logprobs": [e.chosen.logprob for e in entries],
            "top_logprobs": [{t.token: t.logprob for t in e.top} for e in entries], "text_offset": offsets}
