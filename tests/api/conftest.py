from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from llmos.daemon import create_app
from llmos.engines.base import Engine, FakeEngine
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime
from tests.conftest import make_settings


class SlowFakeEngine(FakeEngine):
    """A FakeEngine whose steps take real time, so requests overlap like real ones do."""

    step_s = 0.02

    def prefill(self, seqs):  # type: ignore[no-untyped-def]
        time.sleep(self.step_s)
        return super().prefill(seqs)

    def decode(self, ids):  # type: ignore[no-untyped-def]
        time.sleep(self.step_s)
        return super().decode(ids)


@pytest.fixture
def fake_kernel_factory(builtin_runtime: Runtime, tmp_path) -> Iterator[Callable[..., Kernel]]:  # type: ignore[no-untyped-def]
    """Kernels over the real store whose engines are fakes; the engines made are in ``.engines``."""
    made: list[Kernel] = []

    def build(engine_factory: Callable[[str], Engine] | None = None, **settings: object) -> Kernel:
        settings.setdefault("engine", "hf")  # the fakes stand in for a step engine, keyed as the transformers one
        s = make_settings(builtin_runtime.settings.home, database_url=builtin_runtime.settings.database_url,
                          **settings)
        engines: dict[str, Engine] = {}

        def factory(ref: str) -> Engine:
            engines[ref] = (engine_factory or (lambda r: SlowFakeEngine(r)))(ref)
            return engines[ref]

        k = Kernel(s, builtin_runtime.store.registry, engine_factory=factory)
        k.engines = engines  # type: ignore[attr-defined]
        made.append(k)
        return k

    yield build
    for k in made:
        k.close()


@pytest.fixture
def fake_client(builtin_runtime: Runtime, fake_kernel_factory) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    kernel = fake_kernel_factory()
    with TestClient(create_app(builtin_runtime, kernel)) as client:
        client.kernel = kernel  # type: ignore[attr-defined]
        yield client
