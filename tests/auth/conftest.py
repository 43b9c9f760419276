"""An auth-on daemon app over the session store with fake engines, and keys in fresh tenants."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from llmos.daemon import create_app
from llmos.auth import create_key
from llmos.runtime import Runtime
from tests.api.conftest import fake_kernel_factory  # noqa: F401 - the fake-engine kernels
from tests.conftest import make_settings

SMOL = "smollm2-135m-instruct"
CHAT = {"model": SMOL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}
SECURE = {"auth": "on", "max_body_bytes": "64KiB", "max_tokens": 64}


@dataclass
class Key:
    id: str
    raw: str
    tenant: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.raw}"}


MakeKey = Callable[..., Key]


@pytest.fixture
def secure_runtime(builtin_runtime: Runtime) -> Runtime:
    """The session store and database, with auth on and small body / max_tokens limits."""
    s = make_settings(builtin_runtime.settings.home, database_url=builtin_runtime.settings.database_url, **SECURE)
    return Runtime(s, builtin_runtime.db, builtin_runtime.store)


@pytest.fixture
def make_key(builtin_runtime: Runtime) -> MakeKey:
    """``make_key("infer", "read", tenant=None, **limits)``: a key in ``tenant`` (default: a fresh one)."""

    def make(*scopes: str, tenant: str | None = None, **limits: object) -> Key:
        tenant = tenant or f"t-{uuid.uuid4().hex[:8]}"
        info, raw = create_key(builtin_runtime.db, tenant=tenant, name="test key", scopes=list(scopes),
                               **limits)  # type: ignore[arg-type]
        return Key(info.id, raw, tenant)

    return make


@pytest.fixture
def secure_client(secure_runtime: Runtime, fake_kernel_factory) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]  # noqa: F811
    """Requests against the auth-on app; no lifespan, so no job runner starts what tests queue."""
    kernel = fake_kernel_factory(**SECURE)
    client = TestClient(create_app(secure_runtime, kernel))
    yield client
    client.close()
