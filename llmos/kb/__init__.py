"""Knowledge bases: stored, versioned, tenant-scoped document collections searched by meaning and by
keyword, and the passages grounded chat answers cite."""

from llmos.kb.embed import Embedder, KernelEmbedder
from llmos.kb.info import AddReport, KbDetail, KbInfo, Passage, SearchMode, SearchResult
from llmos.kb.retrieval import search
from llmos.kb.store import KnowledgeBases

__all__ = ["AddReport", "Embedder", "KbDetail", "KbInfo", "KernelEmbedder", "KnowledgeBases", "Passage",
           "SearchMode", "SearchResult", "search"]
