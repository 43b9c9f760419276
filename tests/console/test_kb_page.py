"""The console's knowledge-base page with the real models: the tenant's knowledge bases and their
documents, a search box, and a grounded answer with its citations (MiniLM-L6 embeds, SmolLM2 answers)."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llmos.auth import create_key
from llmos.daemon import create_app
from llmos.runtime import Runtime
from tests.conftest import make_settings
from tests.console.conftest import sign_in

pytestmark = pytest.mark.slow
MARKUP = "<img src=x onerror=alert(1)>"  # a file name keeps no "/", so no closing tag


def intent_doc(datasets: Path, intent: str, n: int = 25) -> bytes:
    """A Markdown FAQ page of one Banking77 intent: its name as a title, then customer questions."""
    with open(datasets / "banking77" / "train.csv", newline="", encoding="utf-8") as fh:
        rows = [r["text"] for r in csv.DictReader(fh) if r["category"] == intent][:n]
    return (f"# {intent.replace('_', ' ')}\n\n" + "\n\n".join(rows) + "\n").encode()


@pytest.fixture(scope="module")
def console(builtin_runtime: Runtime, datasets: Path) -> Iterator[tuple[TestClient, str, str]]:
    """Signed in as a key of a fresh tenant that owns one knowledge base of two real documents."""
    s = make_settings(builtin_runtime.settings.home, database_url=builtin_runtime.settings.database_url, auth="on")
    rt = Runtime(s, builtin_runtime.db, builtin_runtime.store)
    tenant = f"kbpage-{uuid.uuid4().hex[:8]}"
    key = create_key(rt.db, tenant=tenant, name="user", scopes=["read", "infer", "train"])[1]
    kb = f"faq-{uuid.uuid4().hex[:6]}"
    with TestClient(create_app(rt)) as client:
        auth = {"Authorization": f"Bearer {key}"}
        assert client.post("/v1/kb", headers=auth, json={"name": kb}).status_code == 201
        files = [("files", ("card_arrival.md", intent_doc(datasets, "card_arrival"), "text/markdown")),
                 ("files", ("exchange_rate.md", intent_doc(datasets, "exchange_rate"), "text/markdown")),
                 ("files", (f"{MARKUP}.txt", b"a document whose name carries markup", "text/plain"))]
        r = client.post(f"/v1/kb/{kb}/documents", headers=auth, files=files)
        assert r.status_code == 201, r.text
        csrf = sign_in(client, key)
        yield client, kb, csrf


def test_the_page_lists_knowledge_bases_with_their_documents(console: tuple[TestClient, str, str]) -> None:
    client, kb, _ = console
    r = client.get("/console/kb")
    assert r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]
    assert kb in r.text and "card_arrival.md" in r.text and "exchange_rate.md" in r.text
    assert MARKUP not in r.text and "&lt;img src=x onerror=alert(1)&gt;.txt" in r.text  # names are escaped
    assert 'href="/console/kb"' in r.text


def test_the_search_box_shows_the_best_passages(console: tuple[TestClient, str, str]) -> None:
    client, kb, _ = console
    r = client.get("/console/kb", params={"kb": kb, "q": "my new card has not arrived yet", "mode": "hybrid"})
    assert r.status_code == 200
    results = r.text.split('class="grid results"', 1)[1]
    first_row = results.split("<tr><td>1</td>", 1)[1].split("</tr>", 1)[0]
    assert "card_arrival.md" in first_row
    missing = client.get("/console/kb", params={"kb": "no-such-kb", "q": "card"})
    assert missing.status_code == 200 and 'role="alert"' in missing.text  # the API's 404, said on the page


def test_the_grounded_playground_answers_with_citations(console: tuple[TestClient, str, str]) -> None:
    client, kb, csrf = console
    form = {"kb": kb, "model": "smollm2-135m-instruct", "question": "What is the exchange rate you use?",
            "csrf_token": csrf}
    r = client.post("/console/kb/ask", data=form)
    assert r.status_code == 200, r.text
    answer = r.text.split('class="answer"', 1)[1]
    assert 'class="reply"' in answer and "exchange_rate.md, chunk" in answer
    refused = client.post("/console/kb/ask", data={**form, "csrf_token": "wrong"})
    assert refused.status_code == 403
