"""Prompt tasks end to end on the real built-in models and real data slices, through the daemon's HTTP
API (created, listed, served by /v1/classify and /v1/tag), the CLI and `llmos eval`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmos.data import Datasets, ImportOptions
from llmos.errors import ExitCode
from llmos.feedback.gate import scores
from llmos.prompt_tasks.evaluate import evaluate_stored_task as evaluate_stored
from llmos.train.config import Hyperparameters
from tests.prompt_tasks.conftest import MINILM, SMOL, Daemon, conll_sentences, sst2_dev

SENTIMENT = "{text}\nIs the sentiment of this review positive or negative?"
DESCRIBED = {"negative": "a negative, bad review", "positive": "a positive, good review"}
NER_SHOT = {"text": "Angela Merkel met Emmanuel Macron in Paris.", "entities": [
    {"text": "Angela Merkel", "label": "PER"}, {"text": "Emmanuel Macron", "label": "PER"},
    {"text": "Paris", "label": "LOC"}]}


def _accuracy(daemon: Daemon, model: str, rows: list[tuple[str, str]]) -> float:
    out = daemon.ok("/v1/classify", {"model": model, "input": [t for t, _ in rows]})
    assert out["model"] == f"{model}:v0"  # the exact version that answered
    for item in out["data"]:
        assert set(item["scores"]) == {"negative", "positive"}
        assert sum(item["scores"].values()) == pytest.approx(1.0)
        assert item["label"] == max(item["scores"], key=item["scores"].get)
    return sum(d["label"] == gold for d, (_, gold) in zip(out["data"], rows)) / len(rows)


@pytest.mark.slow
def test_zero_shot_sst2_with_the_generator_beats_chance(daemon: Daemon, datasets: Path) -> None:
    created = daemon.ok("/v1/prompt_tasks", {"name": "sst2-zero", "base": SMOL, "labels": ["negative", "positive"],
                                             "template": SENTIMENT})
    assert created["method"] == "likelihood" and created["ref"] == "sst2-zero:v0" and created["calibrate"]
    models = {m["id"]: m for m in daemon.http.get("/v1/models").json()["data"]}
    assert models["sst2-zero"]["kind"] == "prompt_task" and models["sst2-zero"]["tasks"] == ["classify"]
    # 40 dev rows: measured 0.775 (31/40); chance is 0.5 and 26/40 or more happens by chance 4% of the time
    assert _accuracy(daemon, "sst2-zero", sst2_dev(datasets, 40)) >= 0.65


def test_encoder_similarity_to_label_descriptions(daemon: Daemon, datasets: Path) -> None:
    created = daemon.ok("/v1/prompt_tasks", {"name": "sst2-emb", "base": MINILM, "labels": ["negative", "positive"],
                                             "descriptions": DESCRIBED})
    assert created["method"] == "similarity"
    assert _accuracy(daemon, "sst2-emb", sst2_dev(datasets, 40)) >= 0.7  # measured 0.825


def test_eval_reports_on_a_prompt_task(daemon: Daemon, datasets: Path, tmp_path: Path) -> None:
    rows = sst2_dev(datasets, 40)
    if "sst2-emb" not in daemon.names():
        daemon.ok("/v1/prompt_tasks", {"name": "sst2-emb", "base": MINILM, "labels": ["negative", "positive"],
                                       "descriptions": DESCRIBED})
    served = _accuracy(daemon, "sst2-emb", rows)
    src = tmp_path / "dev.tsv"
    src.write_text("sentence\tlabel\n" + "".join(f"{t}\t{g}\n" for t, g in rows), encoding="utf-8")
    Datasets.of(daemon.rt).import_file(src, "sst2-slice", ImportOptions(split="validation"))
    report = evaluate_stored(daemon.rt.store.registry, Datasets.of(daemon.rt), "sst2-emb", "sst2-slice")
    assert report.task == "classify" and report.rows == 40 and report.split == "validation"
    assert report.metrics["accuracy"] == pytest.approx(served)  # the report scores what is served
    assert report.confusion_matrix is not None and sum(map(sum, report.confusion_matrix.matrix)) == 40
    # the feedback loop's gate can weigh a prompt task against a fine-tuned candidate the same way
    slice_rows = list(Datasets.of(daemon.rt).rows("sst2-slice", 1))
    assert scores(daemon.rt.store.registry, "sst2-emb", {"validation": slice_rows}, "default") == (
        "accuracy", {"validation": pytest.approx(served)})


def test_eval_on_a_daemon_is_an_evaluate_job_with_the_same_report(daemon: Daemon, datasets: Path,
                                                                   tmp_path: Path) -> None:
    if "sst2-emb" not in daemon.names():
        daemon.ok("/v1/prompt_tasks", {"name": "sst2-emb", "base": MINILM, "labels": ["negative", "positive"],
                                       "descriptions": DESCRIBED})
    rows = sst2_dev(datasets, 30)
    src = tmp_path / "dev.tsv"
    src.write_text("sentence\tlabel\n" + "".join(f"{t}\t{g}\n" for t, g in rows), encoding="utf-8")
    Datasets.of(daemon.rt).import_file(src, "sst2-eval", ImportOptions(split="validation"))
    bad = daemon.post("/v1/evaluations", {"model": "sst2-emb", "dataset": "sst2-eval", "split": "test"})
    assert bad.status_code == 400 and "has no rows in split 'test'" in bad.json()["error"]["message"]
    job = daemon.ok("/v1/evaluations", {"model": "sst2-emb", "dataset": "sst2-eval", "max_rows": 25})
    assert job["kind"] == "evaluate" and job["spec"]["base"] == f"{MINILM}:latest"  # reserved by admission
    while job["state"] not in ("succeeded", "failed", "cancelled"):  # polled; pytest's timeout bounds it
        time.sleep(0.1)
        job = daemon.http.get(f"/v1/jobs/{job['id']}").json()
    assert job["state"] == "succeeded", job["error"]
    on_daemon = job["result"]["reports"]["sst2-emb:latest"]["validation"]
    here = evaluate_stored(daemon.rt.store.registry, Datasets.of(daemon.rt), "sst2-emb", "sst2-eval",
                           hyperparameters=Hyperparameters(max_eval_rows=25)).to_json()
    assert on_daemon["rows"] == here["rows"] == 25 and on_daemon["split"] == here["split"] == "validation"
    assert on_daemon["metrics"] == pytest.approx(here["metrics"])
    assert on_daemon["confusion_matrix"] == here["confusion_matrix"]


@pytest.mark.slow
def test_few_shot_extraction_spans_are_real_offsets(daemon: Daemon, datasets: Path, tmp_path: Path) -> None:
    created = daemon.ok("/v1/prompt_tasks", {"name": "ner-shot", "base": SMOL, "kind": "extract",
                                             "labels": ["PER", "LOC", "ORG"], "examples": [NER_SHOT]})
    assert created["method"] == "generate" and created["tasks"] == ["tag"]
    sentences = conll_sentences(datasets, 3)
    texts = [" ".join(tokens) for tokens, _ in sentences]
    out = daemon.ok("/v1/tag", {"model": "ner-shot", "input": texts})
    spans = [(texts[d["index"]], e) for d in out["data"] for e in d["entities"]]
    assert spans, "the model found nothing at all"
    for text, e in spans:
        assert text[e["start"]:e["end"]] == e["text"] and e["label"] in {"PER", "LOC", "ORG"}
    gold = {m for tokens, tags in sentences for m in _mentions(tokens, tags)}
    found = {e["text"] for _, e in spans} & gold
    assert len(found) >= 2, (found, spans)  # measured: Somerset, Paul Johnson, Martin McCague
    # `llmos eval` scores the extractor entity by entity, like a tagger
    conll = tmp_path / "ner.conll"
    conll.write_text("\n\n".join("\n".join(f"{w} X X {t}" for w, t in zip(*s)) for s in sentences) + "\n")
    Datasets.of(daemon.rt).import_file(conll, "ner-slice", ImportOptions(split="validation"))
    report = evaluate_stored(daemon.rt.store.registry, Datasets.of(daemon.rt), "ner-shot", "ner-slice")
    assert report.task == "tag" and report.rows == 3 and report.metrics["f1"] > 0


def _mentions(tokens: list[str], tags: list[str]) -> list[str]:
    out: list[list[str]] = []
    for word, tag in zip(tokens, tags):
        if tag.startswith("B-"):
            out.append([word])
        elif tag.startswith("I-") and out:
            out[-1].append(word)
    return [" ".join(m) for m in out]


@pytest.mark.parametrize("body, status, message", [
    ({"base": "no-such-model", "labels": ["a", "b"]}, 404, "not found"),
    ({"base": MINILM, "kind": "extract", "labels": ["PER"]}, 400, "generator"),
    ({"base": MINILM, "labels": []}, 400, "at least 2"),
    ({"base": MINILM, "labels": ["spam", "ham", "spam"]}, 400, "duplicate labels: spam"),
    ({"base": SMOL, "labels": ["a", "b"], "template": "Classify: {labels}"}, 400, "{text}"),
    ({"base": SMOL, "labels": ["a", "b"], "examples": [{"text": "x", "label": "c"}]}, 400, "not one of"),
])
def test_bad_prompt_tasks_are_refused_and_store_nothing(daemon: Daemon, body: dict, status: int,
                                                        message: str) -> None:
    before = daemon.names()
    r = daemon.post("/v1/prompt_tasks", {"name": "bad-task", **body})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert daemon.names() == before


def test_wrong_route_and_repointing_latest(daemon: Daemon) -> None:
    daemon.ok("/v1/prompt_tasks", {"name": "mood", "base": MINILM, "labels": ["calm", "angry"]})
    r = daemon.post("/v1/tag", {"model": "mood", "input": "all fine"})
    assert r.status_code == 400 and "cannot tag" in r.json()["error"]["message"]
    # A second version moves mood:latest; a later model (e.g. a fine-tuned one) can take it over the same way.
    second = daemon.ok("/v1/prompt_tasks", {"name": "mood", "base": MINILM, "labels": ["calm", "angry"],
                                            "descriptions": {"angry": "furious shouting"}})
    assert second["ref"] == "mood:v1"
    reg = daemon.rt.store.registry
    assert reg.get("mood").digest == reg.get("mood:v1").digest != reg.get("mood:v0").digest
    daemon.ok("/v1/prompt_tasks", {"name": "mood-gen", "base": SMOL, "labels": ["calm", "angry"]})
    reg.tag("mood-gen:latest", "mood:latest", replace=True)  # what the feedback loop's promotion does
    assert daemon.http.get("/v1/prompt_tasks/mood").json()["method"] == "likelihood"
    out = daemon.ok("/v1/classify", {"model": "mood", "input": "I am furious, stop shouting at me!"})
    assert set(out["data"][0]["scores"]) == {"calm", "angry"}
    assert daemon.http.get("/v1/prompt_tasks/mood:v0").json()["method"] == "similarity"  # still readable


def llmos(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMOS_HOME": str(home), "LLMOS_BUILTINS": "false", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "llmos", *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_cli_creates_and_lists_prompt_tasks(daemon: Daemon, tmp_path: Path) -> None:
    home = daemon.rt.settings.home
    shots = tmp_path / "shots.jsonl"
    shots.write_text(json.dumps({"text": "WINNER! Claim your free prize now", "label": "spam"}) + "\n\n"
                     + json.dumps({"text": "see you at lunch", "label": "ham"}) + "\n")
    out = llmos(home, "tasks", "create", "spam-cli", "--base", MINILM, "--labels", "ham,spam", "--examples",
                str(shots), "-d", "spam=an advert for a prize", "--json")
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["name"] == "spam-cli:v0" and len(made["examples"]) == 2 and made["descriptions"]["spam"]
    listed = json.loads(llmos(home, "models", "list", "--json").stdout)
    assert {"name": "spam-cli:latest", "kind": "prompt_task"}.items() <= next(
        m for m in listed if m["name"] == "spam-cli:latest").items()
    assert daemon.ok("/v1/classify", {"model": "spam-cli", "input": "FREE entry! Text WIN to claim"})["data"]
    bad = llmos(home, "tasks", "create", "x", "--base", MINILM, "--labels", "")
    assert bad.returncode == ExitCode.USAGE and "at least 2" in bad.stderr
    missing = llmos(home, "tasks", "create", "x", "--base", "nope", "--labels", "a,b")
    assert missing.returncode == ExitCode.NOT_FOUND
