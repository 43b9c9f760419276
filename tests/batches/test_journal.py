"""The batch runner's pieces without a model: input lines checked one by one, the journal's torn-line
repair, and background work left out of the interactive load the co-scheduler samples."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from llmos.batches.journal import Journal
from llmos.batches.lines import BadLine, BatchLine, read_lines
from llmos.kernel.core import Kernel
from llmos.kernel.request import Request
from llmos.kernel.scheduler import Scheduler
from llmos.runtime import Runtime

CHAT = "/v1/chat/completions"


def line(custom_id: object, url: str = CHAT, **extra: object) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": "m"}, **extra})


def test_each_bad_line_is_named_and_the_good_ones_kept(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([
        line("a"), "", line("b", url="/v1/embeddings"), line("a"), line(7), line("c", extra=1),
        json.dumps({"custom_id": "d", "method": "GET", "url": CHAT, "body": {}}),
        json.dumps({"custom_id": "e", "method": "POST", "url": CHAT, "body": {"stream": True}}), line("f"),
    ]) + "\n")
    got = list(read_lines(src, CHAT))
    assert [(g.number, g.custom_id) for g in got if isinstance(g, BatchLine)] == [(1, "a"), (9, "f")]
    bad = {g.number: g.message for g in got if isinstance(g, BadLine)}
    assert sorted(bad) == [3, 4, 5, 6, 7, 8]
    assert "endpoint" in bad[3] and "earlier line" in bad[4] and "custom_id" in bad[5]
    assert "unknown field 'extra'" in bad[6] and "POST" in bad[7] and "stream" in bad[8]


def test_the_journal_cuts_a_torn_last_line_and_remembers_whole_ones(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.append(1, True, {"custom_id": "a"})
    j.append(3, False, {"custom_id": "b"})
    j.close()
    with open(path, "ab") as fh:
        fh.write(b'{"line": 4, "ok": tr')  # a kill in the middle of a write
    again = Journal(path)
    assert again.done == {1: True, 3: False}
    assert path.read_bytes().endswith(b"\n")
    again.append(4, True, {"custom_id": "c"})
    assert [r["custom_id"] for _, r in again.records()] == ["a", "b", "c"]
    assert again.counts(5).model_dump() == {"total": 5, "completed": 2, "failed": 1}
    again.close()


def test_background_requests_and_calls_are_not_interactive_load(builtin_runtime: Runtime) -> None:
    kernel = Kernel(builtin_runtime.settings, builtin_runtime.store.registry)
    try:
        sched = Scheduler("fcfs", max_queue=8, max_batch=4)
        sched.add(Request(model="m", prompt_ids=[1], background=True))
        kernel._workers["m"] = SimpleNamespace(scheduler=sched, interactive_calls=0)  # type: ignore[assignment]  # noqa: SLF001
        assert not kernel.activity().busy
        sched.add(Request(model="m", prompt_ids=[1]))
        assert kernel.activity().waiting == 1
    finally:
        kernel._workers.clear()  # noqa: SLF001
        kernel.close()
