"""The daemon's key for its own job runners: a batch job's runner sends each request to the daemon's
public routes as the API key that created the batch, without ever holding that key's secret.

The runner key is a random secret in ``<home>/runner.key`` (mode 0600), made once and kept: runners
outlive a daemon restart and are adopted by the next daemon. A request whose bearer token is the runner
key acts for the key named in ``X-Llmos-Acting-Key`` (with auth on): exactly that key's tenant, scopes,
rate limit and quota, so revoking the key stops its batches. It is also marked background (lowest queue
priority, not interactive load for the co-scheduler). Whoever can read the file can act for any key;
that user can read the database and the models anyway.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

RUNNER_KEY_FILE = "runner.key"
ACTING_HEADER = "x-llmos-acting-key"
_PREFIX = "llmos-runner-"


def runner_key(home: Path) -> str:
    """The runner key of the llmos home at ``home``, made (atomically, 0600) on first use."""
    path = home / RUNNER_KEY_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{RUNNER_KEY_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(_PREFIX + secrets.token_urlsafe(32))
    try:
        os.link(tmp, path)  # the first writer wins; a racing one reads the winner's key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def is_runner_key(token: str | None, key: str) -> bool:
    return bool(token) and token.startswith(_PREFIX) and hmac.compare_digest(token, key)  # type: ignore[union-attr]
