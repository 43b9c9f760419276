"""The loop for a chat assistant end to end, through the daemon's HTTP API with the real SmolLM2 and
real code_alpaca questions: a served chat model with a loop policy, users' better answers posted as
corrections, a round trained (LoRA SFT on the logged conversations), gated on held-out corrections,
confirmed answers and the root validation split (chrF and answer loss), canaried by request id and
promoted; then a poisoned round the gate rejects, and a rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmos.data import ImportOptions
from tests.feedback.conftest import LoopHome
from tests.train.conftest import SMOL, Daemon, finished

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # three real LoRA fine-tunes and two gates on 2 cores
SEED = {"max_steps": 2, "max_length": 128, "batch_size": 4, "learning_rate": 1e-4, "lora_r": 4,
        "report_rows": 2, "max_new_tokens": 16}
# a round of 2 steps, set here because a round otherwise fits its step count to its own data: 16
# corrections are too few for a longer round to gain on held-out questions (15 steps scored below the
# serving version), which the gate rightly rejects
ROUND = {"epochs": 3, "max_steps": 2, "max_length": 128, "batch_size": 4, "learning_rate": 1e-3, "lora_r": 8,
         "early_stopping_patience": 0, "report_rows": 24, "max_new_tokens": 32}
SYSTEM = "You are a coding assistant. Answer with code only."


def code_rows(datasets: Path) -> list[dict[str, str]]:
    rows = json.loads((datasets / "code_alpaca_2k/code_alpaca_2k.json").read_text())
    return [r for r in rows if not r["input"] and len(r["instruction"]) + len(r["output"]) < 160]


@pytest.fixture(scope="module")
def code(home: LoopHome, datasets: Path) -> list[dict[str, str]]:
    home.add_builtin(SMOL)
    rows = code_rows(datasets)
    path = home.root.parent / "slices" / "seed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", rows[:8]), ("validation", rows[8:14])):
        path.write_text(json.dumps(part))
        home.datasets.import_file(path, "helper-seed", ImportOptions(task="sft", split=split, append=split != "train"))
    return rows[14:]


def ask(d: Daemon, question: str, model: str = "helper") -> dict[str, Any]:
    return d.ok("/v1/chat/completions", {"model": model, "max_tokens": 32, "temperature": 0, "messages": [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]})


def tick(d: Daemon) -> list[str]:
    return d.ok("/v1/loop/tick", {})["actions"]


def run_round(d: Daemon) -> list[str]:
    """Tick through retrain and gate, waiting for each job; the actions taken."""
    actions = tick(d)
    assert actions == ["loop.retrain"], actions
    finished(d.jobs, policy(d)["job_id"])
    actions += tick(d)
    assert actions[-1] == "loop.gate_started", actions
    finished(d.jobs, policy(d)["job_id"])
    return actions + tick(d)


def history(d: Daemon) -> dict[str, Any]:
    return d.http.get("/v1/loop/helper/history").json()


def policy(d: Daemon) -> dict[str, Any]:
    return history(d)["policy"]


def last_event(d: Daemon, action: str) -> dict[str, Any]:
    events = history(d)["events"]
    return [e for e in events if e["action"] == action][-1]


def test_chat_corrections_train_gate_canary_and_promote(daemon: Daemon, home: LoopHome,
                                                        code: list[dict[str, str]]) -> None:
    job = daemon.ok("/v1/training/jobs", {"model": SMOL, "dataset": "helper-seed", "hyperparameters": SEED,
                                          "name": "helper"})
    assert finished(daemon.jobs, job["id"]).result_model == "helper:v1"
    policy = {"min_feedback": 16, "holdout": 0.3, "margin": 0.0, "confidence": 0.75, "val_tolerance": 0.5,
              "canary_share": 0.5, "canary_min": 2, "seed": 1, "hyperparameters": ROUND}
    assert daemon.http.put("/v1/loop/helper", json=policy).status_code == 200
    for row in code[:24]:  # users correct every answer with the reference; half also rate it down
        out = ask(daemon, row["instruction"])
        body = {"request_id": out["id"], "correction": row["output"], **({"rating": -1} if len(row["output"]) % 2 else {})}
        daemon.ok("/v1/feedback", body)
    for row in code[24:30]:  # and some answers are confirmed
        daemon.ok("/v1/feedback", {"request_id": ask(daemon, row["instruction"])["id"], "rating": 1})

    actions = run_round(daemon)
    gate = last_event(daemon, "loop.gate_passed" if "loop.gate_passed" in actions else "loop.gate_rejected")
    assert actions[-2:] == ["loop.gate_passed", "loop.canary_started"], gate
    assert gate["metric"] == "chrf" and gate["lower_bound"] >= 0 and gate["rows"]["validation"] == 6
    candidate = gate["candidate"]
    # the canary: chat requests for the name split by request id; the candidate's answers are rated up
    arms: dict[str, int] = {}
    for row in code[30:60]:
        out = ask(daemon, row["instruction"])
        arms[out["model"]] = arms.get(out["model"], 0) + 1
        daemon.ok("/v1/feedback", {"request_id": out["id"], "rating": 1 if out["model"] == candidate else -1})
        if len(arms) == 2 and min(arms.values()) >= 2:
            break
    assert set(arms) == {"helper:v1", candidate}  # each arm's answers name its version
    assert tick(daemon) == ["loop.promoted"]
    assert ask(daemon, code[0]["instruction"], "helper:latest")["model"] == candidate  # the promoted version answers
    assert history(daemon)["serving"] == candidate


def test_a_poisoned_chat_round_is_rejected_then_a_rollback_restores_v1(daemon: Daemon,
                                                                      code: list[dict[str, str]]) -> None:
    serving = history(daemon)["serving"]
    assert daemon.http.put("/v1/loop/helper", json={"margin": 0.02, "val_tolerance": 0.05}).status_code == 200
    for row in code[60:80]:  # the same wrong "answer" to every question
        out = ask(daemon, row["instruction"])
        daemon.ok("/v1/feedback", {"request_id": out["id"], "rating": -1,
                                   "correction": "Banana bread is my favourite cake."})
    actions = run_round(daemon)
    assert actions[-1] == "loop.gate_rejected", actions
    event = last_event(daemon, "loop.gate_rejected")
    assert not event["passed"] and event["reason"]
    assert history(daemon)["serving"] == serving  # untouched

    r = daemon.post("/v1/loop/helper/rollback", {})
    assert r.status_code == 200, r.text
    assert r.json()["serving"] == "helper:v1"
    assert ask(daemon, code[0]["instruction"])["model"] == "helper:v1"  # the restored version answers
    assert history(daemon)["serving"] == "helper:v1"
