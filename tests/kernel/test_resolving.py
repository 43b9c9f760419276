"""Remembered resolutions: a name resolves from memory while the registry's clock stands still, and
every write of the store (by this process or another) is seen by the very next request."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from llmos.errors import Conflict, ModelNotFound
from llmos.kernel.core import Kernel
from llmos.kernel.resolving import ClockedCache
from llmos.runtime import Runtime
from llmos.store.manifest import ManifestData


def described(source: str) -> ManifestData:
    return ManifestData(files=[], architecture="BertForSequenceClassification", tasks=["classify"],
                        labels=["ham", "spam"], source=source)


@pytest.fixture
def kernel(runtime: Runtime) -> Iterator[Kernel]:
    reg = runtime.store.registry
    for i in (1, 2):
        reg.add(f"spam:v{i}", described(f"t{i}"), tenant="default")
    reg.tag("spam:v1", "spam:latest")
    k = Kernel(runtime.settings, reg)
    yield k
    k.close()


def test_the_cache_answers_only_for_the_clock_it_was_filled_at() -> None:
    cache: ClockedCache[str] = ClockedCache(max_entries=2)
    cache.put("a", 7, "A")
    assert cache.get("a", 7) == "A" and cache.get("a", 8) is None and cache.get("b", 7) is None
    cache.put("b", 7, "B")
    assert cache.get("a", 7) == "A"  # a is now the most recently used
    cache.put("c", 7, "C")  # over the bound: b, the least recently used, goes
    assert (cache.get("a", 7), cache.get("b", 7), cache.get("c", 7)) == ("A", None, "C")
    assert len(cache) == 2


def test_the_clock_moves_with_every_write_and_no_read(runtime: Runtime) -> None:
    reg = runtime.store.registry
    start = reg.clock()
    reg.add("m:v1", described("m"), tenant="acme")
    after_add = reg.clock()
    reg.get("m:v1", tenant="acme"), reg.list(), reg.versions("m", "acme")
    assert reg.clock() == after_add > start  # reads leave it alone
    reg.tag("m:v1", "m:latest", tenant="acme")
    after_tag = reg.clock()
    reg.add("m:latest", described("m2"), replace=True, tenant="acme")  # re-pointing a name is a write
    after_repoint = reg.clock()
    reg.remove("m:latest", tenant="acme")
    assert start < after_add < after_tag < after_repoint < reg.clock()
    with pytest.raises(Conflict):
        reg.add("m:v1", described("m"), tenant="acme")  # a refused write (the tag exists) moves nothing
    assert reg.clock() == after_repoint + 1


def test_a_repeated_resolution_comes_from_memory(kernel: Kernel) -> None:
    first = kernel.resolve("spam", "classify")
    hits = kernel.resolutions.hits
    again = kernel.resolve("spam", "classify")
    assert again is first and again.name == "spam:v1"
    assert kernel.resolutions.hits == hits + 1
    with pytest.raises(ModelNotFound):  # another tenant's reading is its own: default's spam is not its
        kernel.resolve("spam", "classify", tenant="beta")


def test_a_write_in_this_process_is_seen_by_the_next_request(kernel: Kernel) -> None:
    reg = kernel.registry
    assert kernel.resolve("spam", "classify").name == "spam:v1"
    reg.tag("spam:v2", "spam:latest", replace=True, tenant="default")  # a promotion
    assert kernel.resolve("spam", "classify").name == "spam:v2"
    reg.remove("spam:v2", tenant="default")
    reg.remove("spam:latest", tenant="default")
    with pytest.raises(ModelNotFound):
        kernel.resolve("spam", "classify")
    assert kernel.resolve("spam:v1", "classify").name == "spam:v1"


def test_a_write_by_another_process_is_seen_by_the_next_request(kernel: Kernel, runtime: Runtime) -> None:
    """A job runner registers and re-points names from its own process, on its own connection."""
    assert kernel.resolve("spam", "classify").name == "spam:v1"
    script = ("import sys\n"
              "from llmos.config import load_settings\n"
              "from llmos.runtime import open_runtime\n"
              "rt = open_runtime(load_settings(home=sys.argv[1]), builtins=False)\n"
              "rt.store.registry.tag('spam:v2', 'spam:latest', replace=True, tenant='default')\n"
              "rt.close()\n")
    subprocess.run([sys.executable, "-c", script, str(runtime.settings.home)], check=True, timeout=300)
    assert kernel.resolve("spam", "classify").name == "spam:v2"
