"""A loop that starts from a prompt task (zero-shot): its first round trains the first fine-tuned
version from the feedback alone, and a round that fails uses up no feedback. The bookkeeping around
it: corrected items (not feedback rows) start a round, a thumbs-down on a batch names its rows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmos.db.tables import RequestLog
from llmos.errors import InvalidInput
from llmos.feedback import FeedbackIn, Loop
from llmos.feedback.zero_shot import ENCODER
from llmos.jobs import JobRunner
from llmos.prompt_tasks.store import create_prompt_task
from llmos.runtime import Runtime
from llmos.store.manifest import ManifestData
from tests.feedback.conftest import INTENTS, LoopHome, Slices
from tests.train.conftest import MINILM, SMOL, Daemon, finished


def log(rt: Runtime, rid: str, model: str, texts: list[str], said: list[str]) -> None:
    with rt.db.session() as s:
        s.add(RequestLog(id=rid, tenant="default", route="classify", model=model, status=200,
                         prompt=json.dumps(texts), output=said))


def traffic(rt: Runtime, loop: Loop, model: str, rows: list[tuple[str, str]], said: str, batch: int = 1) -> int:
    """Requests of ``batch`` texts all answered ``said``; users correct the wrong ones and confirm the
    right ones. Returns how many items were corrected."""
    corrected = 0
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        rid = f"req-{model}-{i}"
        log(rt, rid, model, [t for t, _ in chunk], [said] * len(chunk))
        fix = [None if gold == said else gold for _, gold in chunk]
        body = FeedbackIn(request_id=rid, correction=fix) if any(fix) else FeedbackIn(request_id=rid, rating=1)
        loop.feedback.submit(body, "default")
        corrected += sum(1 for f in fix if f)
    return corrected


def test_a_thumbs_down_on_a_batch_must_name_its_wrong_rows(home: LoopHome) -> None:
    rt = home.rt
    loop = Loop(rt, JobRunner(rt))
    log(rt, "req-batch", "spam:latest", ["a", "b", "c"], ["ham", "ham", "ham"])
    with pytest.raises(InvalidInput, match="3 inputs must name the wrong answers") as bad:
        loop.feedback.submit(FeedbackIn(request_id="req-batch", rating=-1), "default")
    assert bad.value.details["param"] == "rating" and loop.feedback.list("default", model="spam") == []  # nothing stored
    loop.feedback.submit(FeedbackIn(request_id="req-batch", rating=-1, correction=[None, "spam", None]), "default")
    assert [(e.text, e.target) for e in loop.feedback.examples("spam", "default")] == [("b", "spam")]
    # the rows it left null were right: they are confirmed answers the zero-shot start learns from too
    assert [(e.text, e.target) for e in loop.feedback.confirmed("spam", "default")] == [("a", "ham"), ("c", "ham")]


def test_corrected_items_start_a_round_and_a_failed_round_uses_up_nothing(home: LoopHome) -> None:
    rt = home.rt
    for v in ("v1", "v2"):  # described versions without lineage: a retrain cannot be planned for them
        rt.store.registry.add(f"mail:{v}", ManifestData(files=[], architecture="BertForSequenceClassification",
                                                        tasks=["classify"], labels=INTENTS, source=v))
    rt.store.registry.tag("mail:v2", "mail:latest")
    loop = Loop(rt, JobRunner(rt))
    loop.policies.set("mail", "default", {"min_feedback": 5})
    rows = [(f"text {i}", INTENTS[1]) for i in range(9)]
    log(rt, "req-nine", "mail:latest", [t for t, _ in rows], [INTENTS[0]] * 9)
    loop.feedback.submit(FeedbackIn(request_id="req-nine", correction=[g for _, g in rows]), "default")
    assert loop.tick() == ["loop.retrain_failed"]  # one feedback row, nine corrected items: a round starts
    event = loop.history("mail", "default")["events"][-1]
    assert event["corrected_items"] == 9 and "not trained by llmos" in event["reason"]
    state = loop.policies.get("mail", "default")
    assert (state.state, state.feedback_cutoff, state.round_cutoff) == ("idle", 0, state.round_cutoff)
    assert loop.tick() == []  # the same feedback is not retried every tick...
    log(rt, "req-one-more", "mail:latest", ["text 9"], [INTENTS[0]])
    loop.feedback.submit(FeedbackIn(request_id="req-one-more", correction=INTENTS[2]), "default")
    assert loop.tick() == ["loop.retrain_failed"]  # ...but with more of it, the round runs on all of it
    assert loop.history("mail", "default")["events"][-1]["corrected_items"] == 10


def test_a_prompt_tasks_first_round_trains_from_the_feedback_alone(home: LoopHome, slices: Slices) -> None:
    rt = home.rt
    task = create_prompt_task(rt.store.registry, "intent0", MINILM, kind="classify", labels=INTENTS)
    jobs = JobRunner(rt)  # no supervisor: the round's job is only queued here
    loop = Loop(rt, jobs)
    loop.policies.set("intent0", "default", {"min_feedback": 20, "holdout": 0.25})
    corrected = traffic(rt, loop, task.ref, slices.traffic, INTENTS[0], batch=4)
    assert corrected == 60  # every text of the three other intents
    assert loop.tick() == ["loop.retrain"]
    state = loop.policies.get("intent0", "default")
    assert state.state == "training" and state.candidate == "intent0:v1" and state.root_dataset is None
    spec = jobs.get(state.job_id).spec
    plan = spec["plan"]
    assert spec["base"] == f"{ENCODER}:latest" and plan["task"] == "classify" and plan["labels"] == sorted(INTENTS)
    ds = home.datasets.get(spec["dataset"])
    assert ds.name == "intent0-feedback" and ds.derivation is not None and ds.derivation.params["root"] is None
    report = ds.derivation.report
    # 20 confirmed + 60 corrected items, a stable quarter of the texts held out for the gate
    assert report["corrected_items"] == 60 and report["confirmed_items"] == 20
    assert report["feedback_train_rows"] + report["feedback_held_out_rows"] == 80
    assert 10 <= report["feedback_held_out_rows"] <= 30 and ds.counts.splits["validation"] == 0
    event = loop.history("intent0", "default")["events"][-1]
    assert event["action"] == "loop.retrain" and event["zero_shot"] and event["serving"] == "intent0:v0"
    # The module's daemon shares this home: its runner must not pick up the queued round, nor its loop tick it.
    jobs.cancel(state.job_id)
    loop.policies.set("intent0", "default", {"enabled": False})


def test_a_generator_prompt_task_starts_from_the_encoder_unless_the_policy_names_a_base(home: LoopHome) -> None:
    from llmos.feedback.zero_shot import first_base

    home.add_builtin(SMOL)
    reg = home.rt.store.registry
    gen = create_prompt_task(reg, "senti0", SMOL, kind="classify", labels=["negative", "positive"])
    assert first_base(reg, gen, "default", None) == ENCODER
    assert first_base(reg, gen, "default", SMOL) == reg.get(SMOL).ref
    emb = create_prompt_task(reg, "senti1", MINILM, kind="classify", labels=["negative", "positive"])
    assert first_base(reg, emb, "default", None) == reg.get(MINILM).ref


def test_feedback_rows_keep_the_newest_word_and_a_stable_held_out_share() -> None:
    from llmos.feedback.rounds import stable_fraction
    from llmos.feedback.shapes import Example
    from llmos.feedback.zero_shot import feedback_rows

    texts = [f"my card {i}" for i in range(40)]
    first = [Example(i, f"r{i}", "m:v1", "classify", t, "card_arrival") for i, t in enumerate(texts)]
    later = [Example(100, "r100", "m:v1", "classify", texts[0], "lost_or_stolen_card")]
    rows = feedback_rows(later + first, 0.25, 7)  # given in any order: feedback ids say which is newest
    assert len(rows) == 40 and rows[0].label == "lost_or_stolen_card"
    assert [r.split for r in rows] == ["test" if stable_fraction(7, t) < 0.25 else "train" for t in texts]
    assert 0 < sum(r.split == "test" for r in rows) < 20
    assert [r.split for r in feedback_rows(first, 0.25, 7)] == [r.split for r in rows]  # same side every time


# -- through the daemon, with real training ------------------------------------------------------
FIRST = {"max_length": 48, "batch_size": 16, "learning_rate": 3e-4}
# a hastily written prompt: two intents' descriptions mixed up, so the zero-shot task is right about half the time
MIXED_UP = {"card_arrival": "my card was lost or stolen", "lost_or_stolen_card": "when will my new card arrive",
            "exchange_rate": "the exchange rate of a currency", "top_up_failed": "topping up my account failed"}


def tick(d: Daemon) -> list[str]:
    return d.ok("/v1/loop/tick", {})["actions"]


def accuracy(d: Daemon, rows: list[tuple[str, str]], model: str) -> float:
    out = d.ok("/v1/classify", {"model": model, "input": [t for t, _ in rows]})
    return sum(p["label"] == gold for p, (_, gold) in zip(out["data"], rows)) / len(rows)


def correct_through_the_api(d: Daemon, rows: list[tuple[str, str]]) -> dict[str, int]:
    counts = {"corrected": 0, "confirmed": 0}
    for i in range(0, len(rows), 4):
        chunk = rows[i:i + 4]
        out = d.ok("/v1/classify", {"model": "zs", "input": [t for t, _ in chunk]})
        fix: list[Any] = [None if p["label"] == gold else gold for p, (_, gold) in zip(out["data"], chunk)]
        body = {"request_id": out["id"], "rating": -1, "correction": fix} if any(fix) else \
            {"request_id": out["id"], "rating": 1}
        d.ok("/v1/feedback", body)
        counts["corrected"] += sum(1 for f in fix if f)
        counts["confirmed"] += sum(1 for f in fix if not f)
    return counts


@pytest.mark.slow
@pytest.mark.timeout(1500)  # a real fine-tune and gate on a busy CPU
def test_zero_shot_start_through_the_daemon(daemon: Daemon, home: LoopHome, slices: Slices) -> None:
    created = daemon.ok("/v1/prompt_tasks", {"name": "zs", "base": MINILM, "labels": INTENTS,
                                             "descriptions": MIXED_UP})
    policy = {"min_feedback": 10, "holdout": 0.25, "margin": 0.0, "canary_share": 0.5, "canary_min": 8,
              "seed": 1, "hyperparameters": FIRST}
    r = daemon.http.put("/v1/loop/zs", json=policy)
    assert r.status_code == 200, r.text
    before = accuracy(daemon, slices.held_out, "zs")
    counts = correct_through_the_api(daemon, slices.traffic)
    assert counts["corrected"] >= 10, counts
    assert tick(daemon) == ["loop.retrain"]
    state = daemon.http.get("/v1/loop/zs/history").json()["policy"]
    finished(daemon.jobs, state["job_id"])
    assert tick(daemon) == ["loop.gate_started"]
    finished(daemon.jobs, daemon.http.get("/v1/loop/zs/history").json()["policy"]["job_id"])
    assert tick(daemon) == ["loop.gate_passed", "loop.canary_started"]
    for text, gold in slices.held_out[:40]:  # users rate the canary's answers, on both arms
        out = daemon.ok("/v1/classify", {"model": "zs", "input": [text]})
        daemon.ok("/v1/feedback", {"request_id": out["id"], "rating": 1 if out["data"][0]["label"] == gold else -1})
    assert tick(daemon) == ["loop.promoted"]
    reg = home.rt.store.registry
    assert reg.get("zs:latest").digest == reg.get("zs:v1").digest != reg.get(created["ref"]).digest
    after = accuracy(daemon, slices.held_out, "zs")
    history = daemon.http.get("/v1/loop/zs/history").json()
    kinds = {v["ref"]: (v["kind"], v["serving"]) for v in history["versions"]}
    assert kinds == {"zs:v0": ("prompt task", False), "zs:v1": ("fine-tuned", True)}
    v1 = next(v for v in history["versions"] if v["ref"] == "zs:v1")
    assert v1["measured"].startswith("held-out feedback of zs-feedback@1")
    gate = next(e for e in history["events"] if e["action"] == "loop.gate_passed")
    assert gate["serving"] == "zs:v0" and gate["rows"]["feedback"] > 0
    assert after >= before, (before, after)
