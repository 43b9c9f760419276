"""Knowledge-base retrieval: quality on Banking77 and index latency against a brute-force scan.

Quality: a FAQ base of one document per Banking77 intent, written from that intent's training rows
(the intent's name as a title, then its customer questions), queried with held-out questions of the
same file (a seeded share per intent never written into any document). recall@5: the right intent's
document is among the documents of the top 5 passages. Hybrid (RRF) against vector-only and
keyword-only, the same index and the same query embeddings for all three.

Latency (embedding excluded): index build and per-query time at 10k chunks (the real MiniLM embeddings
of Banking77's rows) and 100k (those vectors, each copied 10 times with Gaussian noise sigma 0.05 and
renormalised, texts repeated), for FAISS flat, FAISS HNSW (M=32, efSearch=128; with its recall@10
against the exact answer), BM25, and a brute-force numpy scan (matrix-vector product + argpartition).
With ``--pgvector URL`` (a PostgreSQL server with the extension; ``pgserver``: start the one bundled in
the pgserver wheel) also pgvector at 10k: the same vectors as one base's chunks, its HNSW index built
(M=32, ef_construction 80) and searched through llmos's own path (``PgVectors.search``: a transaction,
its settings, the query vector as text, the rows back), against FAISS HNSW in the same run.

    .venv/bin/python bench/kb.py [--holdout 10] [--no-100k] [--pgvector URL|pgserver]
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.engines import cpu_flags  # noqa: E402
from llmos.config import load_settings  # noqa: E402
from llmos.kb import KernelEmbedder, KnowledgeBases  # noqa: E402
from llmos.kb import index as kb_index  # noqa: E402
from llmos.kb.retrieval import fuse, open_index  # noqa: E402
from llmos.kernel.core import Kernel  # noqa: E402
from llmos.runtime import open_runtime  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "banking77" / "train.csv"


def load_rows() -> dict[str, list[str]]:
    by_intent: dict[str, list[str]] = defaultdict(list)
    with open(DATA, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_intent[row["category"]].append(row["text"].strip())
    return by_intent


def split(by_intent: dict[str, list[str]], holdout: int, seed: int = 0) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    rng = random.Random(seed)
    docs, queries = {}, []
    for intent, rows in sorted(by_intent.items()):
        rows = rows[:]
        rng.shuffle(rows)
        queries += [(q, intent) for q in rows[:holdout]]
        docs[intent] = rows[holdout:]
    return docs, queries


def faq_document(intent: str, questions: list[str]) -> str:
    title = intent.replace("_", " ")
    return f"# {title}\n\nCustomer questions about {title}:\n\n" + "\n".join(f"- {q}" for q in questions) + "\n"


def quality(kbs: KnowledgeBases, embedder: KernelEmbedder, docs: dict[str, list[str]],
            queries: list[tuple[str, str]]) -> None:
    kbs.create("banking77-faq", embedder)
    files = [(f"{intent}.md", faq_document(intent, rows).encode()) for intent, rows in docs.items()]
    t0 = time.perf_counter()
    report = kbs.add("banking77-faq", files, lambda _m: embedder)
    print(f"faq base: {len(report.added)} documents, {report.chunks} chunks, built in {time.perf_counter() - t0:.1f} s "
          "(parsing, chunking, embedding through the kernel, storing)")
    index = open_index(kbs, kbs.get("banking77-faq"))
    t0 = time.perf_counter()
    qvecs = embedder.embed([q for q, _ in queries])
    print(f"{len(queries)} held-out queries embedded in {time.perf_counter() - t0:.1f} s")
    doc_of = {cid: doc for cid, (doc, _, _) in kbs.passages([int(i) for i in index.ids]).items()}
    hits = {"hybrid": 0, "vector": 0, "keyword": 0}
    times = {m: [] for m in hits}
    for (q, intent), qv in zip(queries, qvecs):
        t0 = time.perf_counter()
        vec = index.vector_search(qv, 50)
        t1 = time.perf_counter()
        kw = index.keyword_search(q, 50)
        t2 = time.perf_counter()
        fused = fuse(vec, kw, 5)
        t3 = time.perf_counter()
        times["vector"].append(t1 - t0)
        times["keyword"].append(t2 - t1)
        times["hybrid"].append(t3 - t0)
        want = f"{intent}.md"
        for mode, ids in (("vector", [h.chunk_id for h in vec[:5]]), ("keyword", [h.chunk_id for h in kw[:5]]),
                          ("hybrid", [r.chunk_id for r in fused])):
            hits[mode] += want in {doc_of[c] for c in ids}
    print("\n| mode | recall@5 | median query (ms, embedding excluded) |\n|---|---|---|")
    for mode in ("hybrid", "vector", "keyword"):
        print(f"| {mode} | {hits[mode] / len(queries):.3f} | {statistics.median(times[mode]) * 1000:.2f} |")


def _timed(fn, repeat: int = 1) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def latency(vectors: np.ndarray, texts: list[str], queries: np.ndarray, qtexts: list[str], label: str) -> None:
    import faiss

    n, d = vectors.shape
    flat = faiss.IndexFlatIP(d)
    t_flat = _timed(lambda: flat.add(vectors))
    hnsw = faiss.IndexHNSWFlat(d, kb_index.HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = kb_index.EF_CONSTRUCTION
    t_hnsw = _timed(lambda: hnsw.add(vectors))
    hnsw.hnsw.efSearch = kb_index.EF_SEARCH
    t_bm25 = _timed(lambda: kb_index._bm25_index(texts))
    bm25 = kb_index._bm25_index(texts)
    ids = np.arange(n, dtype=np.int64)
    kw_index = kb_index.VersionIndex(ids, flat, bm25)

    def per_query(fn) -> float:  # type: ignore[no-untyped-def]
        samples = []
        for i in range(len(queries)):
            t0 = time.perf_counter()
            fn(i)
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples) * 1000

    def brute(i: int) -> np.ndarray:
        scores = vectors @ queries[i]
        top = np.argpartition(-scores, 10)[:10]
        return top[np.argsort(-scores[top])]

    q = queries.astype(np.float32)
    t_brute = per_query(brute)
    t_fq = per_query(lambda i: flat.search(q[i:i + 1], 10))
    t_hq = per_query(lambda i: hnsw.search(q[i:i + 1], 10))
    t_kw = per_query(lambda i: kw_index.keyword_search(qtexts[i], 50))
    exact = [set(brute(i).tolist()) for i in range(len(q))]
    _, found = hnsw.search(q, 10)
    recall = statistics.mean(len(exact[i] & set(found[i].tolist())) / 10 for i in range(len(q)))
    print(f"\n{label}: {n:,} chunks x {d} dims, {len(q)} queries")
    print("| what | build (s) | median query (ms) | vs numpy scan |\n|---|---|---|---|")
    print(f"| numpy brute-force scan (exact) | - | {t_brute:.3f} | 1.0x |")
    print(f"| FAISS flat (exact) | {t_flat:.3f} | {t_fq:.3f} | {t_brute / t_fq:.1f}x |")
    print(f"| FAISS HNSW (recall@10 {recall:.3f}) | {t_hnsw:.2f} | {t_hq:.3f} | {t_brute / t_hq:.1f}x |")
    print(f"| BM25 (bm25s) | {t_bm25:.2f} | {t_kw:.3f} | - |")


def pg_latency(server: str, vectors: np.ndarray, texts: list[str], queries: np.ndarray) -> None:
    """pgvector's HNSW against FAISS HNSW at the size of ``vectors``, one base in a fresh database."""
    import contextlib
    import uuid

    import faiss
    from sqlalchemy import create_engine, text

    from llmos.db.engine import open_database
    from llmos.db.tables import KbChunk, KbDocument, KnowledgeBase
    from llmos.kb.pgvector import vectors_for

    with contextlib.ExitStack() as stack:
        if server == "pgserver":
            from tests import postgres  # the tests' throwaway-server helper
            from tests.conftest import package_dir

            server = stack.enter_context(postgres.server(package_dir("pgserver") / "pginstall" / "bin"))
        name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        db = open_database(f"{server}/{name}")
        stack.callback(db.close)
        pg = vectors_for(db)
        assert pg is not None, "the server has no pgvector extension"
        n, d = vectors.shape
        with db.session() as s:
            kb = KnowledgeBase(tenant="bench", name="bench", embed_model="minilm-l6", embed_digest="sha256:bench",
                               chunk_size=500, overlap=50, version=2)
            s.add(kb)
            s.flush()
            doc = KbDocument(kb_id=kb.id, name="rows", kind="text", digest="sha256:x", source_digest="sha256:x",
                             chars=0, version=2)
            s.add(doc)
            s.flush()
            s.add_all([KbChunk(kb_id=kb.id, document_id=doc.id, ordinal=i, start=0, end=0, digest="sha256:x",
                               text=texts[i], embedding=vectors[i].tobytes(), embed_digest="sha256:bench")
                       for i in range(n)])
            s.flush()
            kb_id = kb.id
        with db.session() as s:
            ids = np.asarray(s.scalars(text(f"SELECT id FROM kb_chunks WHERE kb_id = {kb_id} ORDER BY id")).all())
        t_pg = _timed(lambda: pg.sync(kb_id, "sha256:bench", n, lambda: (ids, vectors)))
        hnsw = faiss.IndexHNSWFlat(d, kb_index.HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = kb_index.EF_CONSTRUCTION
        t_faiss = _timed(lambda: hnsw.add(vectors))
        hnsw.hnsw.efSearch = kb_index.EF_SEARCH
        q = queries.astype(np.float32)
        exact = [set(np.argsort(-(vectors @ q[i]))[:10].tolist()) for i in range(len(q))]
        row_of = {int(c): r for r, c in enumerate(ids)}
        pg_found, pg_times, faiss_times, faiss_found = [], [], [], []
        for i in range(len(q)):
            t0 = time.perf_counter()
            hits = pg.search(kb_id, q[i], 10)
            pg_times.append(time.perf_counter() - t0)
            pg_found.append({row_of[h.chunk_id] for h in hits})
            t0 = time.perf_counter()
            _, rows = hnsw.search(q[i:i + 1], 10)
            faiss_times.append(time.perf_counter() - t0)
            faiss_found.append(set(rows[0].tolist()))
        plan = pg.plan(kb_id, q[0], 10)
        r_pg = statistics.mean(len(exact[i] & pg_found[i]) / 10 for i in range(len(q)))
        r_faiss = statistics.mean(len(exact[i] & faiss_found[i]) / 10 for i in range(len(q)))
        m_pg, m_faiss = statistics.median(pg_times) * 1000, statistics.median(faiss_times) * 1000
        print(f"\npgvector vs FAISS, {n:,} chunks x {d} dims, {len(q)} queries (plan: {plan.splitlines()[1].strip()})")
        print("| what | build (s) | median query (ms) | recall@10 |\n|---|---|---|---|")
        print(f"| pgvector HNSW (rows written + index built; search through PgVectors) | {t_pg:.2f} | {m_pg:.3f} | {r_pg:.3f} |")
        print(f"| FAISS HNSW (in process) | {t_faiss:.2f} | {m_faiss:.3f} | {r_faiss:.3f} |")
        print(f"pgvector / FAISS median query time: {m_pg / m_faiss:.1f}x")
        with admin.connect() as conn:
            db.close()
            conn.execute(text(f'DROP DATABASE "{name}"'))
        admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--holdout", type=int, default=10, help="held-out questions per intent")
    ap.add_argument("--no-100k", action="store_true")
    ap.add_argument("--quality-only", action="store_true", help="skip the latency part (it embeds all 10k rows)")
    ap.add_argument("--pgvector", metavar="URL", help="also pgvector at 10k on this PostgreSQL server (a URL without "
                    "database name, e.g. postgresql+psycopg://user@host:5432), or 'pgserver' for the bundled one")
    args = ap.parse_args()
    print(f"cpu flags: {cpu_flags()}")
    with tempfile.TemporaryDirectory() as home:
        rt = open_runtime(load_settings(home=Path(home)))
        kernel = Kernel(rt.settings, rt.store.registry)
        try:
            embedder = KernelEmbedder.of(kernel, "minilm-l6", "default")
            docs, queries = split(load_rows(), args.holdout)
            quality(KnowledgeBases.of(rt), embedder, docs, queries)
            if args.quality_only:
                return
            rows = [r for rs in load_rows().values() for r in rs]
            t0 = time.perf_counter()
            vectors = embedder.embed(rows)
            print(f"\n{len(rows):,} Banking77 rows embedded in {time.perf_counter() - t0:.1f} s (not part of the index figures)")
            rng = np.random.default_rng(0)
            pick = rng.choice(len(queries), size=min(200, len(queries)), replace=False)
            qtexts = [queries[i][0] for i in pick]
            qv = embedder.embed(qtexts)
            latency(vectors[:10_000], rows[:10_000], qv, qtexts, "10k")
            if args.pgvector:
                pg_latency(args.pgvector, vectors[:10_000], rows[:10_000], qv)
            if not args.no_100k:
                big = np.concatenate([vectors + rng.normal(0, 0.05, vectors.shape).astype(np.float32) for _ in range(10)])
                big /= np.linalg.norm(big, axis=1, keepdims=True)
                latency(big.astype(np.float32), rows * 10, qv, qtexts, "100k")
        finally:
            kernel.close()
            rt.close()


if __name__ == "__main__":
    main()
