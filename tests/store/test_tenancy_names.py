"""Model names per tenant in the registry: private, public and admin writes; versions per namespace;
an object of another tenant reads exactly like an absent one."""

from __future__ import annotations

import pytest

from llmos.errors import ModelNotFound, PublicModel
from llmos.runtime import Runtime
from llmos.store.manifest import ManifestData
from llmos.store.registry import Registry


def manifest(source: str) -> ManifestData:
    return ManifestData(files=[], architecture="BertModel", tasks=["embed"], source=source)


def test_two_tenants_same_name_are_two_models(runtime: Runtime) -> None:
    reg = runtime.store.registry
    a = reg.add("name:v1", manifest("a"), tenant="acme")
    b = reg.add("name:v1", manifest("b"), tenant="beta")
    assert a.digest != b.digest and a.key == "acme/name:v1" and b.key == "beta/name:v1"
    assert reg.get("name:v1", tenant="acme").digest == a.digest
    assert reg.get("name:v1", tenant="beta").digest == b.digest
    assert reg.next_version("name", "acme") == reg.next_version("name", "beta") == "name:v2"  # per tenant
    reg.tag("name:v1", "name:latest", tenant="beta")
    assert reg.find("name:latest", tenant="acme") is None  # beta's pointer never moves acme's


def test_another_tenants_model_reads_like_an_absent_one(runtime: Runtime) -> None:
    reg = runtime.store.registry
    reg.add("secret:latest", manifest("s"), tenant="acme")
    with pytest.raises(ModelNotFound) as theirs:
        reg.get("secret", tenant="beta")
    with pytest.raises(ModelNotFound) as nobody:
        reg.get("nothing", tenant="beta")
    assert theirs.value.message.replace("secret", "X") == nobody.value.message.replace("nothing", "X")
    assert "secret" not in str(nobody.value.details)


def test_public_names_take_versions_from_admins_alone(runtime: Runtime) -> None:
    reg: Registry = runtime.store.registry
    reg.add("shared:v1", manifest("p1"), tenant=None)  # built in, or published by an admin
    assert reg.get("shared:v1", tenant="acme").public
    with pytest.raises(PublicModel):
        reg.add("shared:v2", manifest("a"), tenant="acme")
    with pytest.raises(PublicModel):
        reg.check_write("shared", "acme", admin=False)
    assert reg.check_write("shared", "acme", admin=True) is None  # an admin writes the public name
    assert reg.check_write("mine", "acme", admin=True) == "acme"  # and its own names stay its own
    reg.add("shared:v2", manifest("p2"), tenant=reg.check_write("shared", "acme", admin=True))
    assert reg.next_version("shared", None) == "shared:v3"


def test_a_private_name_published_later_stays_its_owners(runtime: Runtime) -> None:
    reg = runtime.store.registry
    mine = reg.add("later:latest", manifest("mine"), tenant="acme")
    reg.add("later:latest", manifest("public"), tenant=None)
    assert reg.get("later", tenant="acme").digest == mine.digest  # its own name shadows the public one
    assert reg.get("later", tenant="beta").public
    assert [i.key for i in reg.list(tenant="acme") if i.name == "later"] == ["acme/later:latest"]


def test_versions_are_read_per_namespace_and_latest_pins_to_its_version(runtime: Runtime) -> None:
    reg = runtime.store.registry
    before = reg.count()
    v1 = reg.add("bot:v1", manifest("one"), tenant="acme")
    v2 = reg.add("bot:v2", manifest("two"), tenant="acme")
    reg.tag("bot:v1", "bot:latest", tenant="acme")
    reg.add("bot:v1", manifest("theirs"), tenant="beta")
    assert [i.tag for i in reg.versions("bot", "acme")] == ["latest", "v1", "v2"]
    assert [i.tag for i in reg.versions("bot", "beta")] == ["v1"]
    assert reg.versions("bot", None) == []  # no public name of it
    latest = reg.get("bot", tenant="acme")
    assert reg.version_of(latest).ref == v1.ref  # what actually serves under the pointer
    reg.tag("bot:v2", "bot:latest", replace=True, tenant="acme")  # a promotion re-points it
    assert reg.version_of(reg.get("bot", tenant="acme")).ref == v2.ref
    assert reg.version_of(v1) is v1  # a version is its own
    assert reg.count() == before + 4 == len(reg.list())


def test_versions_order_by_number_and_latest_pins_to_the_highest_holding_it(runtime: Runtime) -> None:
    reg = runtime.store.registry
    for n in (1, 2, 9):
        reg.add(f"long:v{n}", manifest(f"n{n}"), tenant="acme")
    reg.tag("long:v9", "long:v10", tenant="acme")  # one manifest under two versions
    reg.tag("long:v9", "long:latest", tenant="acme")
    assert [i.tag for i in reg.versions("long", "acme")] == ["latest", "v1", "v2", "v9", "v10"]
    assert reg.version_of(reg.get("long", tenant="acme")).ref == "long:v10"  # not v9, as "v10" < "v9" reads
    assert reg.next_version("long", "acme") == "long:v11"
