"""Which scope each route needs: one ordered table, first match wins, unknown routes need ``admin``.

Rules match the request path by prefix on whole segments, so ``/v1/jobs`` covers ``/v1/jobs/{id}/pause``
but not ``/v1/jobsx``. A route that no rule names falls to the last rule (admin): a new route is closed
until someone decides who may use it. (A path that no route serves is answered 404 before this table
is consulted: see ``llmos.api.access``.) docs/security.md shows this table to people.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmos.auth.scopes import ADMIN, INFER, READ, TRAIN

OPEN = "open"  # no key needed
CONSOLE = "console"  # the web console authenticates its own cookie session

_READ_METHODS = frozenset({"GET", "HEAD"})
_ANY = frozenset({"*"})


@dataclass(frozen=True)
class Rule:
    prefix: str  # "/v1/jobs" matches "/v1/jobs" and "/v1/jobs/..."; a "*" segment matches one segment, whole path
    methods: frozenset[str]  # {"*"} for any method
    scopes: tuple[str, ...]  # any one of them suffices; or (OPEN,) / (CONSOLE,)
    exact: bool = False

    def matches(self, method: str, path: str) -> bool:
        if "*" not in self.methods and method not in self.methods:
            return False
        if "*" in self.prefix:  # one whole segment per "*": /v1/kb/*/search
            want, have = self.prefix.split("/"), path.split("/")
            return len(have) == len(want) and all(w == h or (w == "*" and h) for w, h in zip(want, have))
        if self.exact:
            return path == self.prefix
        return path == self.prefix or path.startswith(self.prefix.rstrip("/") + "/")


def _r(prefix: str, methods: str, *scopes: str, exact: bool = False) -> Rule:
    m = _ANY if methods == "*" else (_READ_METHODS if methods == "GET" else frozenset(methods.split("|")))
    return Rule(prefix, m, scopes, exact)


RULES: tuple[Rule, ...] = (
    _r("/health", "GET", OPEN, exact=True),
    _r("/", "GET", CONSOLE, exact=True),  # the console's front door (redirects to /console/)
    _r("/console", "*", CONSOLE),
    _r("/openapi.json", "GET", OPEN, exact=True),  # the API's shape is public; its data is not
    _r("/docs", "GET", OPEN),
    _r("/redoc", "GET", OPEN, exact=True),
    _r("/metrics", "GET", ADMIN, exact=True),  # labels name every tenant's models
    _r("/admin/keys", "*", ADMIN),  # create, list, revoke keys of any tenant: the operator's
    _r("/admin", "*", ADMIN),
    _r("/v1/models", "GET", READ, INFER, TRAIN),
    _r("/v1/chat/completions", "POST", INFER, exact=True),
    _r("/v1/completions", "POST", INFER, exact=True),
    _r("/v1/embeddings", "POST", INFER, exact=True),
    _r("/v1/classify", "POST", INFER, exact=True),
    _r("/v1/tag", "POST", INFER, exact=True),
    _r("/v1/rerank", "POST", INFER, exact=True),
    _r("/v1/batches", "GET", READ, INFER),
    _r("/v1/batches", "POST", INFER),  # create and cancel: a batch's requests are inference
    _r("/v1/feedback", "POST", INFER),
    _r("/v1/feedback", "GET", READ, INFER),
    _r("/v1/datasets", "GET", READ, TRAIN),
    _r("/v1/datasets", "POST", TRAIN),
    _r("/v1/jobs", "GET", READ, TRAIN),
    _r("/v1/jobs", "POST", TRAIN),
    _r("/v1/training", "GET", READ, TRAIN),
    _r("/v1/training", "POST", TRAIN),
    _r("/v1/fine_tuning", "GET", READ, TRAIN),
    _r("/v1/fine_tuning", "POST", TRAIN),
    _r("/v1/files", "GET", READ, TRAIN, INFER),  # files feed fine-tunes (train) and batches (infer)
    _r("/v1/files", "POST|DELETE", TRAIN, INFER),
    _r("/v1/tuning", "GET", READ, TRAIN),
    _r("/v1/tuning", "POST", TRAIN),
    _r("/v1/evaluations", "GET", READ, TRAIN),
    _r("/v1/evaluations", "POST", TRAIN),
    _r("/v1/prompt_tasks", "POST", TRAIN),  # a prompt-defined task is a new model version
    _r("/v1/kb/*/search", "POST", READ, INFER),  # a search reads; grounded chat needs it with infer
    _r("/v1/kb", "GET", READ, TRAIN, INFER),
    _r("/v1/kb", "POST|DELETE", TRAIN),  # creating, adding documents, deleting change what answers say
    _r("/v1/ask", "POST", READ, INFER, TRAIN),  # planning reads the caller's names; each step needs its own scope
    _r("/v1/loop/tick", "POST", ADMIN, exact=True),  # runs every tenant's loop now
    _r("/v1/loop", "GET", READ, TRAIN),
    _r("/v1/loop", "PUT|POST", TRAIN),
    _r("/v1", "GET", READ),  # other listings under /v1
    _r("/", "*", ADMIN),  # everything else
)


def required_scopes(method: str, path: str) -> tuple[str, ...]:
    """The scopes any one of which lets a key call ``method path``; (OPEN,) or (CONSOLE,) for no key."""
    method = method.upper()
    for rule in RULES:
        if rule.matches(method, path):
            return rule.scopes
    return (ADMIN,)  # unreachable: the last rule matches every path
