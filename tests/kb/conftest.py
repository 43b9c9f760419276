"""A fresh home with the real MiniLM built in, a kernel over it, and knowledge bases in a tenant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.kb import KernelEmbedder, KnowledgeBases
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime
from tests.auth.conftest import make_key, secure_runtime  # noqa: F401 - the two-tenant auth-on fixtures
from tests.conftest import copy_builtin

EMBED = "minilm-l6"


@pytest.fixture
def kb_runtime(runtime: Runtime, builtin_runtime: Runtime) -> Runtime:
    copy_builtin(runtime, builtin_runtime, EMBED)
    return runtime


@pytest.fixture
def kernel(kb_runtime: Runtime) -> Iterator[Kernel]:
    k = Kernel(kb_runtime.settings, kb_runtime.store.registry)
    yield k
    k.close()


@pytest.fixture
def kbs(kb_runtime: Runtime) -> KnowledgeBases:
    return KnowledgeBases.of(kb_runtime, "acme")


@pytest.fixture
def embedder_for(kernel: Kernel):  # type: ignore[no-untyped-def]
    return lambda model: KernelEmbedder.of(kernel, model, "acme")


@pytest.fixture
def docs(tmp_path: Path) -> list[Path]:
    """A few real files of each kind: Markdown, HTML, plain text, CSV rows."""
    (tmp_path / "refunds.md").write_text(
        "# Refunds\n\nA refund for a card payment takes 5 to 7 business days to reach your account.\n\n"
        "## Cancelled orders\n\nIf a merchant cancels an order, the refund is issued automatically.\n")
    (tmp_path / "cards.html").write_text(
        "<html><head><style>p{color:red}</style><script>var x = 'lost card';</script></head><body>"
        "<h1>Lost or stolen cards</h1><p>Freeze your card at once in the app under Card settings, then "
        "order a replacement. A new card arrives within 3 working days.</p></body></html>")
    (tmp_path / "topup.txt").write_text(
        "Top up by bank transfer: use the account number shown in the app. Transfers from abroad may take "
        "up to 2 days. Top-ups by debit card are instant.\n")
    (tmp_path / "faq.csv").write_text(
        "question,answer\n"
        "What is the exchange rate?,We use the interbank exchange rate with no markup on weekdays.\n"
        "How do I change my PIN?,You can change your PIN at any ATM that shows the Visa logo.\n")
    return [tmp_path / n for n in ("refunds.md", "cards.html", "topup.txt", "faq.csv")]
