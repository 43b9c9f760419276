"""The planner's parts without a model: clauses, mentions of the caller's names, arguments from words,
the route call each operation makes, the scope check, and plans held for one key."""

from __future__ import annotations

import numpy as np
import pytest

from llmos.ask.entities import Entities, _model_phrases
from llmos.ask.fill import fill
from llmos.ask.intent import CUE_BONUS, IntentIndex, Scored, cue_hit, decide, masked
from llmos.ask.ops import BY_NAME, OPERATIONS, ParamKind
from llmos.ask.planner import _checked, _step, clauses
from llmos.ask.plans import TTL_S, Plans
from llmos.ask.types import AskOut
from llmos.errors import NotFound

JOB = "job-0123456789abcdef0123"


@pytest.fixture
def names() -> Entities:
    models = _model_phrases(["smollm2-135m-instruct", "minilm-l6", "support-bot"])
    return Entities({ParamKind.MODEL: models, ParamKind.DATASET: {"intents": ["intents"]},
                     ParamKind.KB: {"faq": ["faq"]}, ParamKind.JOB: {JOB: [JOB]}}, newest_job=JOB)


def test_clauses_split_on_then_and_on_and_before_a_verb() -> None:
    assert clauses("unload smollm2, then load minilm-l6") == ["unload smollm2", "load minilm-l6"]
    assert clauses("list my datasets and list my models") == ["list my datasets", "list my models"]
    assert clauses("train smollm2 on intents and reviews") == ["train smollm2 on intents and reviews"]


def test_mentions_are_the_callers_names_only(names: Entities) -> None:
    found = names.mentions("unload smollm2 and gpt-9, then search faq")
    assert [(m.kind, m.value) for m in found] == [(ParamKind.MODEL, "smollm2-135m-instruct"), (ParamKind.KB, "faq")]
    assert masked("unload smollm2", found[:1]) == "unload the model"
    assert [m.value for m in names.mentions("abort the latest job")] == [JOB]
    assert [m.value for m in names.mentions(f"pause {JOB[:10]}")] == [JOB]


def test_arguments_come_from_the_words_and_missing_names_are_questions(names: Entities) -> None:
    text = "run a hyperparameter search for minilm-l6 on intents with 12 trials"
    got = fill(BY_NAME["tune"], text, names.mentions(text), names)
    assert got.sets == [{"model": "minilm-l6", "dataset": "intents", "trials": 12}] and not got.open
    text = "set up the loop for support-bot and canary it on 10% of traffic"
    assert fill(BY_NAME["set_loop"], text, names.mentions(text), names).sets == [
        {"model": "support-bot", "canary_share": 0.1}]
    text = "find passages about exchange rates in faq"
    assert fill(BY_NAME["search_kb"], text, names.mentions(text), names).sets == [
        {"kb": "faq", "query": "exchange rates"}]
    text = "unload smollm2 and minilm-l6"  # one step per name
    assert [s["model"] for s in fill(BY_NAME["unload_model"], text, names.mentions(text), names).sets] == [
        "smollm2-135m-instruct", "minilm-l6"]
    asked = fill(BY_NAME["unload_model"], "unload gpt-9", [], names)
    assert asked.question and asked.options == ["minilm-l6", "smollm2-135m-instruct", "support-bot"]
    text = "look up refunds in faq"  # no "for"/"about": the query is left to the chat model
    assert [p.name for p in fill(BY_NAME["search_kb"], text, names.mentions(text), names).open] == ["query"]


def test_each_operation_makes_its_routes_call() -> None:
    assert BY_NAME["pause_job"].call({"job": JOB}).model_dump(exclude_none=True) == {
        "method": "POST", "path": f"/v1/jobs/{JOB}/pause", "body": {}}
    assert BY_NAME["set_loop"].call({"model": "bot", "canary_share": 0.1}).model_dump(exclude_none=True) == {
        "method": "PUT", "path": "/v1/loop/bot", "body": {"canary_share": 0.1}}
    assert BY_NAME["list_models"].call({}).body is None
    for op in OPERATIONS:  # every path parameter is filled
        args = {p.name: "x" for p in op.params}
        assert "{" not in op.call(args).path, op.name


def test_the_nearest_operation_needs_a_clear_lead() -> None:
    ops = (BY_NAME["load_model"], BY_NAME["unload_model"])
    index = IntentIndex(np.eye(2, dtype=np.float32), [0, 1])
    ranked = index.rank(np.array([0.6, 0.6], dtype=np.float32), "unload it", ops)
    assert ranked[0].op.name == "unload_model" and ranked[0].score == pytest.approx(0.6 + CUE_BONUS)
    assert cue_hit(BY_NAME["unload_model"], "unload it") and not cue_hit(BY_NAME["load_model"], "unload it")
    assert decide([Scored(ops[0], 0.2), Scored(ops[1], 0.1)]) == []
    assert decide([Scored(ops[0], 0.80), Scored(ops[1], 0.79)]) == list(ops)


def test_a_step_the_key_may_not_call_refuses_the_whole_plan() -> None:
    steps = [_step(BY_NAME["list_models"], {}), _step(BY_NAME["unload_model"], {"model": "m"})]
    refused = _checked("list then unload", steps, {"read"})
    assert refused.status == "refused" and "needs the admin scope" in refused.message
    assert _checked("list then unload", steps, {"admin"}).status == "planned"


def test_a_plan_runs_once_for_the_key_that_asked() -> None:
    now = [0.0]
    plans = Plans(clock=lambda: now[0])
    plan = AskOut(status="planned", text="x", message="x")
    first, second = plans.put(plan, "t", "k1"), plans.put(plan, "t", "k1")
    with pytest.raises(NotFound):
        plans.take(first, "t", "k2")
    with pytest.raises(NotFound):
        plans.take(first, "other", "k1")
    assert plans.take(first, "t", "k1").id == first
    with pytest.raises(NotFound):
        plans.take(first, "t", "k1")
    now[0] = TTL_S + 1
    with pytest.raises(NotFound):
        plans.take(second, "t", "k1")


def test_a_request_of_separators_alone_is_a_question() -> None:
    import asyncio

    from llmos.ask.planner import Planner

    answer = asyncio.run(Planner(kernel=None).plan(" ; . ", Entities(), "t", {"read"}))  # type: ignore[arg-type]
    assert answer.status == "question" and answer.steps == []


def test_paths_in_the_words_are_found_as_written() -> None:
    from llmos.ask.paths import path_tokens

    assert path_tokens("import ./data/sst2.tsv as reviews, then add 'notes.md' to faq.") == ["./data/sst2.tsv",
                                                                                            "notes.md"]
    assert path_tokens("load minilm-l6 and see https://example.org/x.html") == []


def test_file_steps_are_multipart_calls_of_their_routes() -> None:
    from llmos.ask.ops import BY_NAME

    imp = BY_NAME["import_dataset"]
    args = imp.with_defaults({"file": "/tmp/in/sst2 sample.tsv"})
    assert args["name"] == "sst2-sample"
    call = imp.call(args)
    assert (call.method, call.path, call.body, call.form) == ("POST", "/v1/datasets", None, {"name": "sst2-sample"})
    assert call.upload is not None and call.upload.path == "/tmp/in/sst2 sample.tsv" and call.upload.field == "file"
    fid = "file-" + "ab" * 12
    add = BY_NAME["add_documents"].call({"kb": "faq", "file": fid})
    assert add.path == "/v1/kb/faq/documents" and add.upload is not None
    assert (add.upload.field, add.upload.file_id, add.upload.path) == ("files", fid, None)


def test_key_and_file_arguments_come_from_the_words(names: Entities) -> None:
    from llmos.ask.ops import BY_NAME

    create = BY_NAME["create_key"]
    text = "create a key for tenant acme-ops with read and inference scopes named ci"
    filled = fill(create, text, names.mentions(text), names)
    assert filled.question is None and filled.sets == [{"scopes": ["read", "infer"], "tenant": "acme-ops",
                                                        "name": "ci"}]
    vague = fill(create, "create a new api key", [], names)
    assert vague.question is not None and "scopes" in vague.question and vague.sets == []
    revoke = "revoke key_0123456789abcdef"
    assert fill(BY_NAME["revoke_key"], revoke, names.mentions(revoke), names).sets == [{"key": "key_0123456789abcdef"}]
    missing = "import ./nowhere/rows.csv as rows"
    asked = fill(BY_NAME["import_dataset"], missing, names.mentions(missing), names)
    assert asked.question is not None and "./nowhere/rows.csv" in asked.question


def test_a_path_the_client_found_is_a_file_mention(names: Entities) -> None:
    names.names[ParamKind.FILE] = {"./rows.csv": ["./rows.csv"]}
    text = "import ./rows.csv as rows"
    found = [m for m in names.mentions(text) if m.kind == ParamKind.FILE]
    assert [(m.value, text[m.start:m.end]) for m in found] == [("./rows.csv", "./rows.csv")]
    assert names.unknown_paths(text) == []
