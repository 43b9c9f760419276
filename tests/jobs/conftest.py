"""The jobs tests share the kernel tests' hand-moved clock."""

from tests.kernel.conftest import FakeClock, clock  # noqa: F401
