"""A real NER fine-tune on a CoNLL-2003 slice: IOB2 tags on first sub-tokens, an entity-level report,
and the tagger served through /v1/tag."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from llmos.data import ImportOptions
from llmos.train.task_kinds import IGNORE, align_word_labels
from tests.train.conftest import MINILM, Daemon, Home, finished, report_of, slice_conll

pytestmark = pytest.mark.slow
ENTITIES = {"PER", "ORG", "LOC", "MISC"}


@pytest.fixture(scope="module", autouse=True)
def setup(home: Home, datasets: Path) -> None:
    home.add_builtin(MINILM)
    tmp = home.root.parent / "slices"
    ds = home.datasets
    ds.import_file(slice_conll(datasets / "conll2003/train.txt", tmp / "train.txt", 300), "ner",
                   ImportOptions(split="train"))
    ds.import_file(slice_conll(datasets / "conll2003/valid.txt", tmp / "valid.txt", 100), "ner",
                   ImportOptions(split="validation", append=True))


def test_first_sub_token_carries_the_tag(home: Home) -> None:
    tok = AutoTokenizer.from_pretrained(home.rt.store.registry.snapshot(MINILM))
    words, tags = ["Schwarzenegger", "visited", "Reykjavik", "."], [1, 0, 2, 0]
    enc = tok([words], is_split_into_words=True)
    labels = align_word_labels(enc.word_ids(0), tags)
    assert len(enc["input_ids"][0]) > len(words) + 2  # the names split into several sub-tokens
    assert [label for label in labels if label != IGNORE] == tags
    firsts = [i for i, w in enumerate(enc.word_ids(0)) if w is not None and w != enc.word_ids(0)[i - 1]]
    assert [labels[i] for i in firsts] == tags and labels[0] == labels[-1] == IGNORE  # [CLS] and [SEP]


def test_ner_tagger_learns_entities_and_serves_them(daemon: Daemon, home: Home) -> None:
    job = daemon.ok("/v1/training/jobs", {"model": MINILM, "dataset": "ner", "hyperparameters": {
        "epochs": 2, "max_length": 64, "batch_size": 16, "learning_rate": 2e-4}, "name": "ner-tagger"})
    assert job["plan"]["task"] == "tag" and job["plan"]["method"] == "full"
    assert set(job["plan"]["labels"]) >= {"O", "B-PER", "I-PER", "B-LOC", "B-ORG"}
    info = finished(daemon.jobs, job["id"])
    stored = home.rt.store.registry.get(info.result_model)
    assert stored.manifest.tasks == ["tag", "embed"] and stored.manifest.labels == job["plan"]["labels"]
    report = report_of(home, info.result_model)
    assert report["metrics"]["f1"] > 0 and report["metrics"]["token_accuracy"] > 0.8, report["metrics"]
    assert set(report["per_entity"]) <= ENTITIES and report["unseen_tags"] == {}
    assert (stored.manifest.lineage.metrics or {}).get("f1") == report["metrics"]["f1"]
    text = "Angela Merkel met Emmanuel Macron in Paris on Monday ."
    out = daemon.ok("/v1/tag", {"model": "ner-tagger", "input": [text]})
    for entity in out["data"][0]["entities"]:
        assert entity["label"] in ENTITIES and text[entity["start"]:entity["end"]] == entity["text"]
