"""The loop's parts without training: feedback validation and tenancy, the round's dataset (dedupe,
stable held-out share), the canary split (deterministic, the same after a restart) and its judgement."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos.data import Datasets, ImportOptions
from llmos.db.tables import LoopPolicy, RequestLog
from llmos.auth.audit import audit
from llmos.errors import Conflict, InvalidInput, NotFound
from llmos.feedback import Example, FeedbackIn, FeedbackStore, normalise
from llmos.feedback.shapes import spans_to_tags
from llmos.feedback.canary import Arm, CanaryRouter, Verdict, judge, to_candidate, votes
from llmos.feedback.rounds import build_round, stable_fraction
from llmos.jobs import JobRunner, JobState
from llmos.feedback import Loop
from llmos.feedback.policy import LoopSettings, Policies
from llmos.runtime import Runtime
from llmos.store.manifest import ManifestData


def log_request(rt: Runtime, rid: str, tenant: str, route: str = "classify", prompt: str = '["a", "b"]') -> None:
    with rt.db.session() as s:
        s.add(RequestLog(id=rid, tenant=tenant, route=route, model="spam:latest", status=200, prompt=prompt,
                         output=["ham", "ham"]))


def test_feedback_of_another_tenant_is_the_same_not_found(runtime: Runtime) -> None:
    log_request(runtime, "req-a", "acme")
    store = FeedbackStore(runtime.db, runtime.store.registry)
    with pytest.raises(NotFound) as foreign:
        store.submit(FeedbackIn(request_id="req-a", rating=1), "globex")
    with pytest.raises(NotFound) as unknown:
        store.submit(FeedbackIn(request_id="req-zz", rating=1), "globex")
    assert str(foreign.value).replace("req-a", "X") == str(unknown.value).replace("req-zz", "X")
    assert store.list("globex") == [] and store.list("acme") == []
    ok = store.submit(FeedbackIn(request_id="req-a", correction=[None, "spam"]), "acme")
    assert ok.changed and store.examples("spam", "acme")[0].text == "b"
    again = store.submit(FeedbackIn(request_id="req-a", correction=[None, "spam"]), "acme")
    assert not again.changed and again.id == ok.id and len(store.list("acme")) == 1


def test_corrections_must_fit_the_route() -> None:
    assert normalise("classify", "spam", ["x"], 1, ["ham", "spam"]) == ["spam"]
    with pytest.raises(InvalidInput, match="a classify correction is a label"):
        normalise("classify", {"label": "spam"}, ["x"], 1, ["ham", "spam"])
    spans = [{"start": 0, "end": 4, "label": "PER"}]
    assert normalise("tag", spans, ["John lives here"], 1, ["O", "B-PER", "I-PER"]) == [spans]
    with pytest.raises(InvalidInput, match="outside the input text"):
        normalise("tag", [{"start": 0, "end": 99, "label": "PER"}], ["John"], 1, ["O", "B-PER"])
    with pytest.raises(InvalidInput, match="unknown entity type 'LOC'"):
        normalise("tag", [{"start": 0, "end": 4, "label": "LOC"}], ["John"], 1, ["O", "B-PER"])
    with pytest.raises(InvalidInput, match="better answer"):
        normalise("chat", "", None, 1, [])
    assert spans_to_tags("New York Times is big", [{"start": 0, "end": 14, "label": "ORG"}]) == (
        ["New", "York", "Times", "is", "big"], ["B-ORG", "I-ORG", "I-ORG", "O", "O"])


def test_a_round_dataset_dedupes_and_keeps_a_stable_held_out_share(runtime: Runtime, datasets: Path,
                                                                   tmp_path: Path) -> None:
    lines = (datasets / "sms_spam/SMSSpamCollection").read_text(encoding="utf-8").splitlines()[:60]
    (tmp_path / "sms.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = Datasets.of(runtime)
    root = ds.import_file(tmp_path / "sms.tsv", "sms", ImportOptions(format="tsv", header=False))
    texts = [line.split("\t", 1)[1] for line in lines]
    examples = [Example(i + 1, f"r{i}", "spam:v1", "classify", t, "spam") for i, t in enumerate(texts[:30])]
    examples.append(Example(99, "r99", "spam:v1", "classify", texts[0], "ham"))  # a newer word on the same text
    first = build_round(ds, "spam", root.ref, examples, holdout=0.3, seed=7)
    rows = list(ds.rows(first.dataset.name, first.dataset.version))
    assert first.trained_feedback + first.held_out_feedback == 30
    train = [r.text for r in rows if r.split == "train"]
    judged = {r.text for r in rows if r.split != "train"}
    assert len(set(train)) == len(train) and not set(train) & judged  # nothing trained on is judged on
    assert {r.label for r in rows if r.text == texts[0] and r.split != "validation"} == {"ham"}
    held = {r.text for r in rows if r.split == "test"}
    validation = {r.text for r in rows if r.split == "validation"}
    assert validation and held == {t for t in texts[:30] if stable_fraction(7, t) < 0.3 or t in validation}
    more = examples + [Example(100, "r100", "spam:v1", "classify", texts[40], "spam")]
    again = build_round(ds, "spam", root.ref, more, holdout=0.3, seed=7)
    assert held <= {r.text for r in ds.rows(again.dataset.name, again.dataset.version) if r.split == "test"}
    assert again.dataset.derivation is not None and again.dataset.derivation.operation == "feedback"


def test_the_canary_split_is_deterministic_and_survives_a_restart(runtime: Runtime) -> None:
    Policies(runtime.db).set("spam", "default", {"canary_share": 0.3})
    with runtime.db.session() as s:
        row = s.get(LoopPolicy, ("default", "spam"))
        row.state, row.canary = "canary", {"candidate": "spam:v2", "share": 0.3, "salt": "abc", "min_requests": 5,
                                           "serving": "spam:v1", "started_at": "2026-01-01T00:00:00+00:00"}
    ids = [f"req-{i}" for i in range(2000)]
    first = [CanaryRouter(runtime.db).route("spam", i, "default") for i in ids[:200]]
    restarted = CanaryRouter(runtime.db)  # a new daemon reads the same split from the database
    assert [restarted.route("spam", i, "default") for i in ids[:200]] == first
    share = sum(restarted.route("spam", i, "default") == "spam:v2" for i in ids) / len(ids)
    assert 0.26 < share < 0.34
    assert restarted.route("spam:v1", ids[0], "default") == "spam:v1"
    assert restarted.route("other", ids[0], "default") == "other"
    assert all(restarted.route("spam", i, "another-tenant") == "spam" for i in ids)  # its own spam: no canary
    assert to_candidate("abc", "x", 0.3) == to_candidate("abc", "x", 0.3)


def arm(up: int, down: int) -> Arm:
    return Arm(up + down, up + down, (up - down) / (up + down) if up + down else None, up)


def test_the_canary_is_judged_by_a_significance_test_not_a_difference_of_means() -> None:
    # the rollback a user met: +0.857 from 14 ratings vs +0.909 from 22, one rating apart: no evidence
    close = judge(arm(13, 1), arm(21, 1))
    assert close.promote and close.p_value is not None and close.p_value > 0.05 and "not significantly" in close.reason
    worse = judge(arm(10, 20), arm(50, 10))  # 33% good vs 83% good on 30 and 60 ratings
    assert not worse.promote and worse.p_value is not None and worse.p_value < 0.001
    assert judge(arm(20, 10), arm(10, 20)).promote  # better: promoted
    assert judge(arm(0, 0), arm(40, 20)) == Verdict(True, "no live ratings on one arm: the gate's result stands")
    assert not judge(arm(12, 18), arm(38, 22)).promote  # 40% vs 63% good: p < 0.05
    assert judge(arm(12, 18), arm(38, 22), alpha=0.01).promote  # a stricter policy needs more evidence


def test_votes_count_items_not_requests() -> None:
    assert votes(None, ["a", None, None, "b"], 4) == [-1, 1, 1, -1]  # a batch: a vote per row it judged
    assert votes(-1, ["a", None], 2) == [-1, 1]  # the -1 applies to the rows the correction names
    assert votes(1, None, 3) == [1, 1, 1]  # every answer right
    assert votes(None, "better answer", 1) == [-1] and votes(1, "better answer", 1) == [1]
    assert votes(None, None, 5) == []  # a comment alone judges nothing


def test_policy_settings_are_validated(runtime: Runtime) -> None:
    with pytest.raises(InvalidInput, match="holdout"):
        Policies(runtime.db).set("spam", "default", {"holdout": 0.9})
    with pytest.raises(InvalidInput, match="bogus"):
        LoopSettings.parse({"bogus": 1})
    assert Policies(runtime.db).list() == []  # nothing half-written


def two_versions(rt: Runtime) -> None:
    """Two described versions of ``spam`` (no weights: the loop's decisions here never load them)."""
    for i in (1, 2):
        rt.store.registry.add(f"spam:v{i}", ManifestData(files=[], architecture="BertForSequenceClassification",
                                                         tasks=["classify"], labels=["ham", "spam"], source=f"t{i}"),
                              tenant="default")
    rt.store.registry.tag("spam:v2", "spam:latest")


def test_a_rollback_while_a_retrain_runs_discards_its_candidate(runtime: Runtime) -> None:
    two_versions(runtime)
    loop = Loop(runtime, JobRunner(runtime))  # no supervisor: the job below is driven by hand
    audit(runtime.db, "loop", "default", "loop.promoted", "spam", previous="spam:v1", promoted="spam:v2")
    loop.policies.set("spam", "default", {})
    job = loop.jobs.store.create("job-retrain", "train", {"dataset": "spam-feedback@1"}, "default")
    v2 = runtime.store.registry.get("spam:v2").digest
    loop.policies.update("spam", "default", state="training", job_id=job.id, candidate="spam:v3", baseline=v2, round_cutoff=5)

    out = loop.rollback("spam", "default", "alice")
    assert out == {"name": "spam", "serving": "spam:v1", "previous": "spam:v2"}
    assert runtime.store.registry.get("spam:latest").digest == runtime.store.registry.get("spam:v1").digest
    assert loop.tick() == []  # the job still runs; nothing to decide
    assert loop.jobs.store.transition(job.id, JobState.RUNNING)
    assert loop.jobs.store.transition(job.id, JobState.SUCCEEDED, job={"result_model": "spam:v3"})
    assert loop.tick() == ["loop.discarded"]
    assert runtime.store.registry.get("spam:latest").digest == runtime.store.registry.get("spam:v1").digest
    state = loop.policies.get("spam", "default")
    assert (state.state, state.job_id, state.feedback_cutoff) == ("idle", None, 5)
    events = loop.history("spam", "default")["events"]
    assert [e["action"] for e in events] == ["loop.promoted", "loop.rollback", "loop.discarded"]
    assert events[1]["actor"] == "alice" and events[1]["training_job"] == job.id
    with pytest.raises(Conflict, match="no earlier serving version"):
        loop.rollback("spam", "default", "alice")  # v1 never replaced anything the history knows


def test_a_rollback_during_a_canary_ends_it_and_keeps_the_serving_version(runtime: Runtime) -> None:
    two_versions(runtime)
    loop = Loop(runtime, JobRunner(runtime))
    loop.policies.set("spam", "default", {})
    canary = {"candidate": "spam:v3", "serving": "spam:v2", "share": 0.5, "salt": "s", "min_requests": 5,
              "started_at": "2026-01-01T00:00:00+00:00"}
    loop.policies.update("spam", "default", state="canary", canary=canary)
    assert loop.router.route("spam", "req-1", "default") in ("spam", "spam:v3")
    out = loop.rollback("spam", "default", "alice")
    assert out["ended_canary"] == "spam:v3" and out["serving"] == "spam:v2"
    assert all(loop.router.route("spam", f"req-{i}", "default") == "spam" for i in range(50))  # routing ended at once
    assert runtime.store.registry.get("spam:latest").digest == runtime.store.registry.get("spam:v2").digest
    assert loop.policies.get("spam", "default").state == "idle"


def test_a_failed_gate_job_ends_the_round_without_a_verdict(runtime: Runtime) -> None:
    two_versions(runtime)
    loop = Loop(runtime, JobRunner(runtime))  # no supervisor: the gate's job is ended by hand
    loop.policies.set("spam", "default", {})
    job = loop.jobs.store.create("job-gate", "evaluate", {"models": ["spam:v3", "spam:v2"], "dataset": "x@1"},
                                 "default")
    v2 = runtime.store.registry.get("spam:v2").digest
    loop.policies.update("spam", "default", state="gating", job_id=job.id, candidate="spam:v3", baseline=v2,
                         round_cutoff=9)
    assert loop.tick() == []  # still queued: nothing to decide
    assert loop.jobs.store.transition(job.id, JobState.RUNNING)
    assert loop.jobs.store.transition(job.id, JobState.FAILED, job={"error": "out of memory"})
    assert loop.tick() == ["loop.gate_failed"]
    state = loop.policies.get("spam", "default")
    # no verdict: the round's feedback is not used up, and the next round waits for more of it
    assert (state.state, state.job_id, state.candidate, state.feedback_cutoff, state.round_cutoff) == \
        ("idle", None, None, 0, 9)
    assert loop.history("spam", "default")["events"][-1]["reason"] == "out of memory"
    assert runtime.store.registry.get("spam:latest").digest == v2


def test_every_answer_names_the_exact_version(runtime: Runtime) -> None:
    from llmos.kernel.core import Kernel

    two_versions(runtime)  # spam:latest -> spam:v2
    kernel = Kernel(runtime.settings, runtime.store.registry)
    try:
        latest = kernel.resolve("spam", "classify")
        assert (latest.name, latest.exact) == ("spam:v2", "spam:v2")  # not "spam", nor "spam:latest"
        assert kernel.resolve("spam:latest", "classify").name == "spam:v2"
        named = kernel.resolve("spam:v1", "classify")
        assert (named.name, named.exact) == ("spam:v1", "spam:v1")
        runtime.store.registry.tag("spam:v1", "spam:latest", replace=True)  # a rollback: the next answer says so
        assert kernel.resolve("spam", "classify").name == "spam:v1"
    finally:
        kernel.close()


def test_a_canary_short_of_ratings_at_its_deadline_ends_with_the_gates_verdict(runtime: Runtime) -> None:
    two_versions(runtime)
    runtime.store.registry.tag("spam:v1", "spam:latest", replace=True)
    loop = Loop(runtime, JobRunner(runtime))
    loop.policies.set("spam", "default", {"canary_min": 30})
    canary = {"candidate": "spam:v2", "serving": "spam:v1", "share": 0.5, "salt": "s", "min_ratings": 30,
              "alpha": 0.05, "started_at": "2026-01-01T00:00:00+00:00", "deadline": "2099-01-01T00:00:00+00:00"}
    loop.policies.update("spam", "default", state="canary", canary=canary)
    assert loop.tick() == []  # no ratings yet and time left: it waits
    loop.policies.update("spam", "default", canary={**canary, "deadline": "2026-01-02T00:00:00+00:00"})
    assert loop.tick() == ["loop.promoted"]
    event = loop.history("spam", "default")["events"][-1]
    assert "time ran out with 0 of 30 ratings" in event["reason"] and event["p_value"] is None
    assert runtime.store.registry.get("spam:latest").digest == runtime.store.registry.get("spam:v2").digest


def test_a_round_fits_step_counts_to_its_own_data() -> None:
    """The serving version's epochs and step counts were fitted to its data; a round's data is another
    size, so they are dropped (a v1 trained with max_steps 2 capped every round at 2 steps), while the
    rest is kept and the policy's settings win."""
    from llmos.feedback.loop import round_hyperparameters

    served = {"epochs": 3.0, "max_steps": 2, "eval_steps": 5, "early_stopping_patience": 2,
              "learning_rate": 1e-4, "lora_r": 4, "not_a_setting": 1}
    assert round_hyperparameters(served, {}) == {"learning_rate": 1e-4, "lora_r": 4}
    assert round_hyperparameters(served, {"max_steps": 7, "lora_r": 8}) == \
        {"learning_rate": 1e-4, "lora_r": 8, "max_steps": 7}
