"""HFEngine embed / classify / tag on MiniLM and on classification heads made from it."""

from __future__ import annotations

import math

import pytest
import torch

from llmos.engines.hf import HFEngine
from llmos.errors import InvalidInput, WrongTask

from .conftest import CLASS_LABELS, TAG_LABELS

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on stage.",
    "The stock market fell sharply today.",
]


def _cos(a: list[float], b: list[float]) -> float:
    return float(torch.nn.functional.cosine_similarity(torch.tensor(a), torch.tensor(b), dim=0))


def test_embeddings_match_sentence_transformers(minilm_engine, minilm_dir):
    from sentence_transformers import SentenceTransformer

    vectors = minilm_engine.embed(SENTENCES)
    assert len(vectors) == 3 and all(len(v) == 384 for v in vectors)
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-5) for v in vectors)
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(SENTENCES)
    for mine, theirs in zip(vectors, reference.tolist()):
        assert _cos(mine, theirs) > 0.999
    assert _cos(vectors[0], vectors[1]) > _cos(vectors[0], vectors[2]) + 0.2


def test_embeddings_do_not_depend_on_the_batch(minilm_engine):
    together = minilm_engine.embed(SENTENCES)
    alone = [minilm_engine.embed([s])[0] for s in SENTENCES]
    for a, b in zip(together, alone):
        assert _cos(a, b) > 0.99999
    assert minilm_engine.embed([]) == []


def test_encoder_info_and_wrong_tasks(minilm_engine, smollm2_dir):
    info = minilm_engine.info()
    assert info.tasks == ["embed"] and info.context_length == 512
    with pytest.raises(WrongTask):
        minilm_engine.classify(["x"])
    with pytest.raises(WrongTask):
        minilm_engine.prefill([])
    with pytest.raises(InvalidInput):
        minilm_engine.embed("not a list")  # type: ignore[arg-type]
    with pytest.raises(WrongTask, match="cannot classify"):
        HFEngine(smollm2_dir, name="no", tasks=["classify"])


def test_classify(classifier_engine):
    results = classifier_engine.classify(SENTENCES)
    assert len(results) == 3
    for probs in results:
        assert set(probs) == set(CLASS_LABELS.values())
        assert math.isclose(sum(probs.values()), 1.0, rel_tol=1e-5)
    info = classifier_engine.info()
    assert info.labels == ["negative", "positive"] and info.tasks == ["classify", "embed"]
    assert len(classifier_engine.embed(SENTENCES[:1])[0]) == 384  # the head's encoder embeds too


def test_classify_with_an_adapter(classifier_engine, classifier_lora_dir):
    base = classifier_engine.classify(SENTENCES)
    classifier_engine.add_adapter("c1", str(classifier_lora_dir))
    try:
        tuned = classifier_engine.classify(SENTENCES, adapter="c1")
        for now, before in zip(classifier_engine.classify(SENTENCES), base):  # base rows untouched
            assert now == pytest.approx(before, abs=1e-6)
        assert all(t["positive"] > b["positive"] + 0.2 for t, b in zip(tuned, base))
        assert all(math.isclose(sum(t.values()), 1.0, rel_tol=1e-5) for t in tuned)
        with pytest.raises(InvalidInput, match="loaded adapters: c1"):
            classifier_engine.classify(SENTENCES, adapter="c2")
    finally:
        classifier_engine.remove_adapter("c1")
    assert classifier_engine.classify(SENTENCES) == base  # the base head is back, not the adapter's copy


def test_tag_spans_point_into_the_text(tagger_engine):
    texts = ["Angela Merkel visited Washington yesterday.", "Zürich's Hauptbahnhof is busy", ""]
    results = tagger_engine.tag(texts)
    assert len(results) == 3 and results[2] == []
    labels = {v.split("-")[-1] for v in TAG_LABELS.values()}
    for text, spans in zip(texts, results):
        for span in spans:
            assert text[span.start : span.end] == span.text and span.text.strip() == span.text
            assert span.label in labels and 0.0 < span.score <= 1.0
        assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))
    assert tagger_engine.info().labels == list(TAG_LABELS.values())


def test_loading_refuses_bad_folders_and_options(minilm_dir, tmp_path):
    from llmos.errors import EngineFailed, UnsafeFormat

    with pytest.raises(InvalidInput, match="config.json"):
        HFEngine(tmp_path, name="empty")
    (tmp_path / "config.json").write_text((minilm_dir / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UnsafeFormat):
        HFEngine(tmp_path, name="pickled")
    with pytest.raises(InvalidInput, match="dtype"):
        HFEngine(minilm_dir, name="x", dtype="float8")
    with pytest.raises(InvalidInput, match="max_batch_size"):
        HFEngine(minilm_dir, name="x", max_batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(EngineFailed, match="cuda"):
            HFEngine(minilm_dir, name="x", device="cuda")


def test_closed_engine_refuses_work(minilm_dir):
    from llmos.errors import EngineFailed

    engine = HFEngine(minilm_dir, name="short-lived", max_batch_size=2)
    assert len(engine.embed(SENTENCES)) == 3  # more texts than max_batch_size: chunked
    engine.close()
    assert engine.footprint() == 0
    with pytest.raises(EngineFailed, match="closed"):
        engine.embed(SENTENCES)
    engine.release(["anything"])  # still harmless


def test_the_stored_chat_template_wins(minilm_dir):
    from llmos.engines.base import ChatMessage

    template = (
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}bot:{% endif %}"
    )
    engine = HFEngine(minilm_dir, name="templated", chat_template=template)
    try:
        ids = engine.encode_chat([ChatMessage("user", "hello there")])
        assert ids == engine.encode("user: hello there\nbot:")[1:-1]  # no [CLS] / [SEP] added
    finally:
        engine.close()
    with pytest.raises(InvalidInput, match="no chat template"):
        HFEngine(minilm_dir, name="plain").encode_chat([ChatMessage("user", "hi")])
