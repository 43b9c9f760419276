"""The loop end to end with real models and data: a weak Banking77 intent classifier is served, users'
corrections of its mistakes go through POST /v1/feedback, and the loop retrains, gates, canaries and
promotes a better version; then poisoned corrections make a worse candidate that the gate rejects,
and a user rollback restores the first version."""

from __future__ import annotations

from typing import Any

import pytest

from llmos.db.tables import RequestLog
from llmos.errors import NotFound
from llmos.feedback import FeedbackIn
from tests.feedback.conftest import LoopHome, Slices
from tests.train.conftest import MINILM, Daemon, finished

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # real training: minutes on a busy CPU
WEAK = {"epochs": 1, "max_length": 48, "batch_size": 16, "learning_rate": 1e-5}
RETRAIN = {"epochs": 2, "max_length": 48, "batch_size": 16, "learning_rate": 3e-4, "early_stopping_patience": 0}


def classify(d: Daemon, texts: list[str], model: str = "intent") -> dict[str, Any]:
    return d.ok("/v1/classify", {"model": model, "input": texts})


def accuracy(d: Daemon, rows: list[tuple[str, str]], model: str) -> float:
    out = classify(d, [t for t, _ in rows], model)
    return sum(p["label"] == gold for p, (_, gold) in zip(out["data"], rows)) / len(rows)


def tick(d: Daemon) -> list[str]:
    return d.ok("/v1/loop/tick", {})["actions"]


def serve_and_correct(d: Daemon, rows: list[tuple[str, str]], wrong_label: Any = None) -> int:
    """One request per text; a correction for each mistake (``wrong_label`` poisons every answer instead)."""
    sent = 0
    for text, gold in rows:
        out = classify(d, [text])
        said = out["data"][0]["label"]
        target = wrong_label(said) if wrong_label else gold
        if target != said or wrong_label:
            fb = d.ok("/v1/feedback", {"request_id": out["id"], "rating": -1, "correction": target})
            assert fb["changed"] and fb["correction"] == [target]
            sent += 1
    return sent


def test_corrections_retrain_gate_canary_and_promote(daemon: Daemon, home: LoopHome, slices: Slices) -> None:
    job = daemon.ok("/v1/training/jobs", {"model": MINILM, "dataset": "intents", "hyperparameters": WEAK,
                                             "name": "intent"})
    finished(daemon.jobs, job["id"])
    before = accuracy(daemon, slices.held_out, "intent:v1")
    policy = {"min_feedback": 20, "holdout": 0.25, "margin": 0.05, "val_tolerance": 0.0, "canary_share": 0.5,
              "canary_min": 8, "seed": 3, "hyperparameters": RETRAIN}
    r = daemon.http.put("/v1/loop/intent", json=policy)
    assert r.status_code == 200, r.text
    assert tick(daemon) == []  # no feedback yet: nothing to do

    corrected = serve_and_correct(daemon, slices.traffic)
    assert corrected >= 20, f"the weak model was right on {80 - corrected} of 80: too strong for this test"
    assert tick(daemon) == ["loop.retrain"]
    state = daemon.http.get("/v1/loop/intent/history").json()
    assert state["policy"]["state"] == "training" and state["serving"] == "intent:v1"
    finished(daemon.jobs, state["policy"]["job_id"])
    assert home.rt.store.registry.get("intent:latest").digest == home.rt.store.registry.get("intent:v1").digest
    assert tick(daemon) == ["loop.gate_started"]  # the gate is an evaluate job, run like any job
    gate_job = daemon.http.get("/v1/loop/intent/history").json()["policy"]["job_id"]
    assert daemon.jobs.get(gate_job).kind == "evaluate"
    finished(daemon.jobs, gate_job, )
    assert tick(daemon) == ["loop.gate_passed", "loop.canary_started"]

    # the canary: half the traffic for "intent" goes to v2, split by request id; users rate each answer
    arms: dict[str, int] = {}
    for text, gold in slices.held_out[:40]:
        out = classify(daemon, [text])
        arms[out["model"]] = arms.get(out["model"], 0) + 1
        daemon.ok("/v1/feedback", {"request_id": out["id"], "rating": 1 if out["data"][0]["label"] == gold else -1})
    assert set(arms) == {"intent:v1", "intent:v2"} and arms["intent:v2"] >= 8, arms  # each names its version
    judged = tick(daemon)
    assert judged == ["loop.promoted"], daemon.http.get("/v1/loop/intent/history").json()["events"][-1]
    assert home.rt.store.registry.get("intent:latest").digest == home.rt.store.registry.get("intent:v2").digest

    after = accuracy(daemon, slices.held_out, "intent")
    assert after >= before + 0.1, (before, after)
    history = daemon.http.get("/v1/loop/intent/history").json()
    actions = [e["action"] for e in history["events"]]
    assert actions == ["loop.retrain", "loop.gate_started", "loop.gate_passed", "loop.canary_started", "loop.promoted"]
    gate = history["events"][2]
    assert gate["passed"] and gate["candidate_scores"]["feedback"] >= gate["serving_scores"]["feedback"] + 0.05
    assert gate["rows"]["validation"] == len(slices.validation) and gate["rows"]["feedback"] > 0
    promoted = history["events"][4]
    assert promoted["candidate_arm"]["requests"] >= 8 and promoted["serving_arm"]["requests"] > 0
    assert [v["ref"] for v in history["versions"] if v["serving"]] == ["intent:v2"]


def test_poisoned_corrections_are_rejected_then_a_rollback_restores_v1(daemon: Daemon, home: LoopHome,
                                                                       slices: Slices) -> None:
    reg = home.rt.store.registry
    serving = reg.get("intent:latest").digest
    swap = {a: b for a, b in zip(slices_intents(), slices_intents()[1:] + slices_intents()[:1])}
    # a user who "corrects" every answer to the next intent: the newest word replaces the good corrections
    serve_and_correct(daemon, slices.traffic, wrong_label=swap.get)
    assert tick(daemon) == ["loop.retrain"]
    job_id = daemon.http.get("/v1/loop/intent/history").json()["policy"]["job_id"]
    finished(daemon.jobs, job_id)
    assert tick(daemon) == ["loop.gate_started"]
    finished(daemon.jobs, daemon.http.get("/v1/loop/intent/history").json()["policy"]["job_id"])
    assert tick(daemon) == ["loop.gate_rejected"]
    assert reg.get("intent:latest").digest == serving  # the serving version is untouched
    event = daemon.http.get("/v1/loop/intent/history").json()["events"][-1]
    assert event["action"] == "loop.gate_rejected" and not event["passed"] and event["reason"]

    r = daemon.post("/v1/loop/intent/rollback", {})
    assert r.status_code == 200, r.text
    assert r.json()["serving"] == "intent:v1" and reg.get("intent:latest").digest == reg.get("intent:v1").digest
    history = daemon.http.get("/v1/loop/intent/history").json()
    assert history["events"][-1]["action"] == "loop.rollback" and history["serving"] == "intent:v1"


def slices_intents() -> list[str]:
    from tests.feedback.conftest import INTENTS
    return list(INTENTS)


def test_feedback_bad_inputs_get_clear_errors_and_change_nothing(daemon: Daemon, home: LoopHome) -> None:
    out = classify(daemon, ["my card has not arrived yet", "what is the exchange rate"])
    rid = out["id"]
    missing = daemon.post("/v1/feedback", {"request_id": "req-nope", "rating": 1})
    assert missing.status_code == 404
    with pytest.raises(NotFound) as foreign:  # another tenant's caller: the same answer as an unknown id
        daemon.app.state.loop.feedback.submit(FeedbackIn(request_id=rid, rating=1), "other-tenant")
    assert foreign.value.http_status == 404 and missing.json()["error"]["type"] == foreign.value.code
    wrong = daemon.post("/v1/feedback", {"request_id": rid, "correction": "card_arrival"})
    assert wrong.status_code == 400 and "list of 2 labels" in wrong.json()["error"]["message"]
    unknown = daemon.post("/v1/feedback", {"request_id": rid, "correction": ["card_arrival", "no_such_intent"]})
    assert unknown.status_code == 400 and "unknown label 'no_such_intent'" in unknown.json()["error"]["message"]
    spans = daemon.post("/v1/feedback", {"request_id": rid, "correction": [{"start": 0, "end": 2, "label": "X"}]})
    assert spans.status_code == 400
    empty = daemon.post("/v1/feedback", {"request_id": rid})
    assert empty.status_code == 422
    assert all(f["request_id"] != rid for f in daemon.http.get("/v1/feedback").json()["data"])  # nothing stored
    body = {"request_id": rid, "rating": -1, "correction": ["card_arrival", None], "comment": "first is wrong"}
    first = daemon.ok("/v1/feedback", body)
    again = daemon.ok("/v1/feedback", body)
    assert first["changed"] and not again["changed"] and again["id"] == first["id"]
    changed = daemon.ok("/v1/feedback", {**body, "comment": "see ticket"})
    assert changed["changed"] and changed["comment"] == "see ticket"
    mine = [f for f in daemon.http.get("/v1/feedback", params={"model": "intent"}).json()["data"]
            if f["request_id"] == rid]
    assert len(mine) == 1 and mine[0]["correction"] == ["card_arrival", None]


def test_inputs_of_a_model_with_a_policy_are_kept_for_learning(daemon: Daemon, home: LoopHome) -> None:
    out = classify(daemon, ["my card has not arrived yet", "what is the exchange rate"])
    with home.rt.db.session() as s:
        row = s.get(RequestLog, out["id"])
        assert row is not None and row.prompt is not None and row.output == [d["label"] for d in out["data"]]
