"""Chat rounds without training: corrections of chat and completion answers become SFT rows of the logged
conversation and the better answer, thumbs-down answers become preference pairs, thumbs-up answers are
held out (and trained on only when the policy says so). Real code_alpaca prompts and answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos.data import Datasets, ImportOptions
from llmos.data.rows import SftRow
from llmos.db.tables import RequestLog
from llmos.errors import InvalidInput
from llmos.feedback import FeedbackIn, FeedbackStore
from llmos.feedback.policy import LoopSettings
from llmos.feedback.rated import confirmed, preferred_over_rejected, rated, with_rejected
from llmos.feedback.rounds import build_round, stable_fraction, trained_pairs
from llmos.feedback.shapes import conversation
from llmos.runtime import Runtime

SYSTEM = "You are a helpful coding assistant."
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


@pytest.fixture
def code(datasets: Path) -> list[dict[str, str]]:
    rows = json.loads((datasets / "code_alpaca_2k/code_alpaca_2k.json").read_text())
    return [r for r in rows if not r["input"] and len(r["instruction"]) + len(r["output"]) < 200][:40]


def chat(rt: Runtime, rid: str, question: str, answer: str, status: int = 200) -> None:
    prompt = json.dumps([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
    with rt.db.session() as s:
        s.add(RequestLog(id=rid, tenant="default", route="chat", model="helper:v1", status=status, prompt=prompt,
                         output=answer))


def root(rt: Runtime, code: list[dict[str, str]], tmp: Path) -> str:
    path = tmp / "root.json"
    path.write_text(json.dumps(code[:10]))
    return Datasets.of(rt).import_file(path, "helper-data", ImportOptions(task="sft")).ref


def test_corrections_pairs_and_confirmed_answers_make_a_chat_round(runtime: Runtime, code: list[dict[str, str]],
                                                                   tmp_path: Path) -> None:
    store = FeedbackStore(runtime.db, runtime.store.registry)
    traffic = code[10:40]
    for i, r in enumerate(traffic):
        chat(runtime, f"req-{i}", r["instruction"], "I am not sure." if i < 20 else r["output"])
    for i in range(12):  # a thumbs-down with the better answer
        store.submit(FeedbackIn(request_id=f"req-{i}", rating=-1, correction=traffic[i]["output"]), "default")
    for i in range(12, 16):  # a correction alone
        store.submit(FeedbackIn(request_id=f"req-{i}", correction=traffic[i]["output"]), "default")
    for i in range(20, 30):  # thumbs-up answers
        store.submit(FeedbackIn(request_id=f"req-{i}", rating=1), "default")

    answers = rated(runtime.db, "helper", "default")
    examples = with_rejected(store.examples("helper", "default"), answers)
    assert len(examples) == 16 and sum(1 for e in examples if e.rejected) == 12
    assert all(e.rejected == "I am not sure." for e in examples[:12])
    good = confirmed(answers)
    assert [e.target for e in good] == [r["output"] for r in traffic[20:30]]

    built = build_round(Datasets.of(runtime), "helper", root(runtime, code, tmp_path), examples, 0.25, 0, good)
    rows = list(Datasets.of(runtime).rows(built.dataset.name, built.dataset.version))
    fed = [r for r in rows if isinstance(r, SftRow) and r.messages]
    held_good = built.dataset.derivation.report["confirmed_held_out_rows"]
    assert all(isinstance(r, SftRow) for r in rows) and len(fed) == 16 + held_good > 16  # corrections + held-out
    # thumbs-up answers
    first = next(r for r in fed if r.messages[1].content == traffic[0]["instruction"])
    assert [m.role for m in first.messages] == ["system", "user", "assistant"]  # the logged conversation, then
    assert first.messages[0].content == SYSTEM and first.messages[2].content == traffic[0]["output"]  # the answer
    held = [r for r in fed if r.split == "test"]
    trained = [r for r in fed if r.split == "train"]
    assert all(stable_fraction(0, "\n".join(m.content for m in r.messages[:-1])) < 0.25 for r in held)
    # confirmed answers only judge: none is trained on without thumbs_up_train
    confirmed_texts = {r["output"] for r in traffic[20:30]}
    assert not [r for r in trained if r.messages[-1].content in confirmed_texts]
    assert built.preference_pairs == sum(1 for r in trained if r.rejected) == trained_pairs(examples, 0.25, 0) > 0
    assert held_good == len([r for r in held if r.messages[-1].content in confirmed_texts])

    with_good = build_round(Datasets.of(runtime), "helper", root(runtime, code, tmp_path), examples, 0.25, 0, good,
                            train_confirmed=True)
    assert with_good.trained_feedback > built.trained_feedback  # thumbs-up answers joined the training rows


def test_a_thumbs_down_beside_a_thumbs_up_to_the_same_prompt_is_a_pair(runtime: Runtime,
                                                                       code: list[dict[str, str]]) -> None:
    store = FeedbackStore(runtime.db, runtime.store.registry)
    q = code[0]
    chat(runtime, "req-bad", q["instruction"], "No idea.")
    chat(runtime, "req-good", q["instruction"], q["output"])
    chat(runtime, "req-cut", code[1]["instruction"], "def f(", status=499)  # the client left mid-stream
    store.submit(FeedbackIn(request_id="req-bad", rating=-1), "default")
    store.submit(FeedbackIn(request_id="req-good", rating=1), "default")
    cut = store.submit(FeedbackIn(request_id="req-cut", rating=1), "default")
    assert cut.cut_off  # accepted and marked
    answers = rated(runtime.db, "helper", "default")
    pairs = preferred_over_rejected(answers)
    assert [(p.target, p.rejected) for p in pairs] == [(q["output"], "No idea.")]
    assert [e.request_id for e in confirmed(answers)] == ["req-good"]  # a cut-off answer is never confirmed


def test_text_corrections_must_be_non_empty_and_fit_the_context(runtime: Runtime) -> None:
    chat(runtime, "req-1", "Write hello world in Python.", "print('hi')")
    store = FeedbackStore(runtime.db, runtime.store.registry)
    for bad in ("", "   ", ["a list"]):
        with pytest.raises(InvalidInput, match="non-empty string"):
            store.submit(FeedbackIn(request_id="req-1", correction=bad), "default")
    assert store.list("default") == []  # nothing stored


def test_a_logged_chat_prompt_reads_back_as_its_text_turns() -> None:
    turns = conversation(json.dumps([{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                                     {"role": "tool", "content": "ignored"}, {"role": "user", "content": "q2"}]))
    assert turns is not None and [(t.role, t.content) for t in turns] == [("system", "s"), ("user", "q"),
                                                                           ("user", "q2")]
    assert conversation("a chat logged as plain text") is None


def test_loop_methods_are_checked() -> None:
    with pytest.raises(InvalidInput, match="unknown method 'dpx'"):
        LoopSettings.parse({"method": "dpx"})
    assert LoopSettings.parse({"method": "dpo"}).min_pairs == 4


def test_a_dpo_round_waits_for_pairs_and_says_why_once(runtime: Runtime) -> None:
    from llmos.feedback import Loop
    from llmos.jobs import JobRunner
    from llmos.store.manifest import Lineage, LineageBase, LineageDataset, ManifestData

    lineage = Lineage(base=LineageBase(ref="smollm2-135m-instruct:latest"), method="lora", task="sft",
                      dataset=LineageDataset(name="helper-data", version=1))
    runtime.store.registry.add("helper:v1", ManifestData(files=[], architecture="LlamaForCausalLM", tasks=["generate"],
                                                         source="t", lineage=lineage), tenant="default")
    runtime.store.registry.tag("helper:v1", "helper:latest")
    loop = Loop(runtime, JobRunner(runtime))  # nothing is queued: the round waits before planning
    loop.policies.set("helper", "default", {"min_feedback": 2, "method": "dpo", "min_pairs": 4})
    store = FeedbackStore(runtime.db, runtime.store.registry)
    for i in range(3):  # corrections without a thumbs-down: no rejected answer, no pair
        chat(runtime, f"req-{i}", f"Question {i}?", "Not sure.")
        store.submit(FeedbackIn(request_id=f"req-{i}", correction=f"Answer {i}."), "default")
    assert loop.tick() == ["loop.waiting"]
    assert loop.tick() == []  # the same reason is recorded once
    state = loop.policies.get("helper", "default")
    assert (state.state, state.feedback_cutoff) == ("idle", 0)  # the feedback is kept for the round
    event = loop.history("helper", "default")["events"][-1]
    assert event["action"] == "loop.waiting" and "waits for 4 trained preference pairs" in event["reason"]


def test_a_dpo_round_continues_the_serving_lora_adapter(runtime: Runtime, code: list[dict[str, str]],
                                                         tmp_path: Path) -> None:
    """A preference round refines the serving adapter (DPO's reference too), not a fresh one over the base."""
    from llmos.feedback import Loop
    from llmos.jobs import JobRunner
    from llmos.store.manifest import Lineage, LineageBase, LineageDataset, ManifestData

    reg = runtime.store.registry
    base = reg.add("smollm2-135m-instruct:latest", ManifestData(files=[], architecture="LlamaForCausalLM",
                                                                 tasks=["generate"], source="t",
                                                                 context_length=2048, chat_template=TEMPLATE))
    lineage = Lineage(base=LineageBase(ref=base.ref, digest=base.digest), method="lora", peft_type="LORA",
                      task="sft", dataset=LineageDataset(name="helper-data", version=1))
    reg.add("helper:v1", ManifestData(kind="adapter", files=[], architecture="LlamaForCausalLM",
                                      tasks=["generate"], source="t", lineage=lineage), tenant="default")
    reg.tag("helper:v1", "helper:latest")
    root(runtime, code, tmp_path)
    jobs = JobRunner(runtime)  # no supervisor: the round's job is only queued
    loop = Loop(runtime, jobs)
    loop.policies.set("helper", "default", {"min_feedback": 4, "method": "dpo", "min_pairs": 2, "holdout": 0.2})
    store = FeedbackStore(runtime.db, reg)
    for i, r in enumerate(code[10:30]):  # thumbs-down answers with their corrections: preference pairs
        chat(runtime, f"req-{i}", r["instruction"], "I am not sure.")
        store.submit(FeedbackIn(request_id=f"req-{i}", rating=-1, correction=r["output"]), "default")
    assert loop.tick() == ["loop.retrain"], loop.history("helper", "default")["events"][-1]
    state = loop.policies.get("helper", "default")
    spec = jobs.get(state.job_id).spec
    assert spec["method"] == "dpo" and spec["base"] == base.ref and spec["start_from"] == "helper:v1"
    assert spec["plan"]["start_from"] == {"ref": "helper:v1", "digest": reg.get("helper:v1").digest,
                                          "context_length": None}
    jobs.cancel(state.job_id)
