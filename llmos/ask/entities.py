"""What a request can name: the caller's own models, datasets, jobs and knowledge bases (its tenant's,
plus public models), and where in the request's words each one is mentioned.

Only names that exist for the caller's tenant are ever matched, so a plan never carries a name the
caller cannot see; a request naming something that does not exist finds no mention, and the planner
asks which one was meant instead of guessing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmos.ask.ops import ParamKind
from llmos.ask.paths import path_tokens
from llmos.data.registry import Datasets
from llmos.jobs import JobRunner
from llmos.kb import KnowledgeBases
from llmos.runtime import Runtime
from llmos.store.files import Files

_NEWEST = re.compile(r"\b(last|latest|newest|most recent|current)\b")
_JOB_ID = re.compile(r"\b(job[_-][0-9a-z]{4,})\b")
_KEY_ID = re.compile(r"\b(key_[0-9a-f]{16})\b")
_TASK_ALIASES = {"generate": ("chat model", "generator", "language model", "llm"),
                 "embed": ("embedding model", "embedder", "embeddings model")}


@dataclass(frozen=True)
class Mention:
    kind: ParamKind
    value: str  # what the route takes (a model or dataset name, a job id...)
    start: int
    end: int


@dataclass
class Entities:
    """The names one tenant can use, each with the phrases that refer to it (lower case)."""

    names: dict[ParamKind, dict[str, list[str]]] = field(default_factory=dict)  # kind -> value -> phrases
    newest_job: str | None = None

    def known(self, kind: ParamKind) -> list[str]:
        return sorted(self.names.get(kind, {}))

    def mentions(self, text: str) -> list[Mention]:
        """Every mention in ``text``, longest phrase first where two overlap."""
        low = text.lower()
        found: list[Mention] = []
        for kind, values in self.names.items():
            for value, phrases in values.items():
                for phrase in phrases:
                    for m in re.finditer(rf"(?<![\w.-]){re.escape(phrase)}(?![\w-]|\.\w)", low):
                        found.append(Mention(kind, value, m.start(), m.end()))
        found += self._job_mentions(low)
        # a key id is taken as written: whether it exists, and whether the caller may see it, is the
        # admin-only route's answer (a 404), since planning does not list other tenants' keys
        found += [Mention(ParamKind.KEY, m.group(1), m.start(), m.end()) for m in _KEY_ID.finditer(low)]
        return _without_overlaps(found)

    def unknown_paths(self, text: str) -> list[str]:
        """Words of ``text`` that look like file paths but name no file the caller can upload."""
        files = self.names.get(ParamKind.FILE, {})
        return [t for t in path_tokens(text) if t not in files]

    def _job_mentions(self, low: str) -> list[Mention]:
        jobs = self.names.get(ParamKind.JOB, {})
        out = []
        for m in _JOB_ID.finditer(low):
            hits = [j for j in jobs if j.lower().startswith(m.group(1))]
            if len(hits) == 1:
                out.append(Mention(ParamKind.JOB, hits[0], m.start(), m.end()))
        if not out and self.newest_job and re.search(r"\bjob\b|\btraining\b|\brun\b", low):
            m = _NEWEST.search(low)
            if m:
                out.append(Mention(ParamKind.JOB, self.newest_job, m.start(), m.end()))
        return out


def _without_overlaps(found: list[Mention]) -> list[Mention]:
    kept: list[Mention] = []
    for m in sorted(found, key=lambda m: (-(m.end - m.start), m.start)):
        if all(m.end <= k.start or m.start >= k.end for k in kept):
            kept.append(m)
    return sorted(kept, key=lambda m: m.start)


def _model_phrases(names: list[str]) -> dict[str, list[str]]:
    """A model's name, and its first segment ("smollm2" for smollm2-135m-instruct) when no other name shares it."""
    phrases = {n: [n.lower(), n.lower().replace("-", " ")] for n in names}
    heads: dict[str, list[str]] = {}
    for n in names:
        head = n.lower().split("-")[0]
        for alias in {head, head.rstrip("0123456789")}:
            if len(alias) >= 4 and alias != n.lower():
                heads.setdefault(alias, []).append(n)
    for alias, owners in heads.items():
        if len(set(owners)) == 1:
            phrases[owners[0]].append(alias)
    return phrases


def gather(runtime: Runtime, jobs: JobRunner | None, tenant: str, local_files: Sequence[str] = ()) -> Entities:
    """The names ``tenant`` can use now; ``local_files``: paths on the asking client's machine."""
    infos = runtime.store.registry.list(tenant=tenant)
    model_names = sorted({i.name for i in infos})
    models = _model_phrases(model_names)
    for task, aliases in _TASK_ALIASES.items():
        able = sorted({i.name for i in infos if task in i.manifest.tasks})
        if len(able) == 1:
            models[able[0]].extend(aliases)
    datasets = {d.name: [d.name.lower(), d.name.lower().replace("-", " ")]
                for d in Datasets.of(runtime, tenant).list()}
    kbs = {k.name: [k.name.lower()] for k in KnowledgeBases.of(runtime, tenant).list()}
    uploaded = Files(runtime.db, runtime.store.blobs, runtime.settings.locks_dir, tenant).list().data
    files = {f.id: [f.id] for f in uploaded}
    files.update({p: [p.lower()] for p in local_files})
    entities = Entities({ParamKind.MODEL: models, ParamKind.DATASET: datasets, ParamKind.KB: kbs,
                         ParamKind.FILE: files})
    if jobs is not None:
        listed = sorted(jobs.list(tenant), key=lambda j: j.created_at)
        entities.names[ParamKind.JOB] = {j.id: [j.id.lower()] for j in listed}
        entities.newest_job = listed[-1].id if listed else None
    return entities
