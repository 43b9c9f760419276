"""``/admin/keys`` over HTTP: create (the raw key once), list (never a secret), revoke; admin only."""

from __future__ import annotations

from fastapi.testclient import TestClient

from llmos.auth import list_audit
from llmos.runtime import Runtime
from tests.auth.conftest import MakeKey


def test_admin_creates_lists_and_revokes_a_key_of_another_tenant(secure_client: TestClient, make_key: MakeKey,
                                                                   builtin_runtime: Runtime) -> None:
    admin = make_key("admin")
    r = secure_client.post("/admin/keys", headers=admin.headers,
                           json={"tenant": "acme-ops", "scopes": ["read", "infer"], "name": "ci", "rate_limit": 5})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["tenant"] == "acme-ops" and made["scopes"] == ["infer", "read"] and made["key"].startswith("llmos-")
    new = {"Authorization": f"Bearer {made['key']}"}
    assert secure_client.get("/v1/models", headers=new).status_code == 200  # the key works at once

    listed = secure_client.get("/admin/keys", headers=admin.headers, params={"tenant": "acme-ops"}).json()["data"]
    assert [k["id"] for k in listed] == [made["id"]]
    assert "key" not in listed[0] and made["key"] not in secure_client.get("/admin/keys", headers=admin.headers).text

    r = secure_client.delete(f"/admin/keys/{made['id']}", headers=admin.headers)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert secure_client.get("/v1/models", headers=new).status_code == 401
    actions = {(e.action, e.target) for e in list_audit(builtin_runtime.db, tenant="acme-ops")}
    assert {("key_create", made["id"]), ("key_revoke", made["id"])} <= actions


def test_tenant_defaults_to_the_admins_own(secure_client: TestClient, make_key: MakeKey) -> None:
    admin = make_key("admin")
    made = secure_client.post("/admin/keys", headers=admin.headers, json={"scopes": ["train"]}).json()
    assert made["tenant"] == admin.tenant


def test_non_admin_keys_are_refused_and_nothing_is_made(secure_client: TestClient, make_key: MakeKey) -> None:
    admin, user = make_key("admin"), make_key("read", "infer", "train")
    before = secure_client.get("/admin/keys", headers=admin.headers).json()["data"]
    for method, path, body in (("POST", "/admin/keys", {"scopes": ["admin"], "tenant": user.tenant}),
                               ("GET", "/admin/keys", None), ("DELETE", f"/admin/keys/{admin.id}", None)):
        r = secure_client.request(method, path, headers=user.headers, json=body)
        assert r.status_code == 403, (method, r.text)
        assert set(r.json()["error"]) == {"message", "type", "code", "param"}
    assert secure_client.get("/admin/keys", headers=admin.headers).json()["data"] == before
    assert secure_client.get("/v1/models", headers=admin.headers).status_code == 200  # not revoked


def test_bad_input_is_an_openai_shaped_4xx_and_unknown_ids_404(secure_client: TestClient, make_key: MakeKey) -> None:
    admin = make_key("admin")
    for body, param in (({"scopes": ["root"]}, "scopes"), ({"scopes": ["read"], "tenant": "../x"}, "tenant"),
                        ({"scopes": []}, None), ({"scopes": ["read"], "token_quota": 0}, None),
                        ({"scopes": ["read"], "extra": 1}, None)):
        r = secure_client.post("/admin/keys", headers=admin.headers, json=body)
        assert r.status_code in (400, 422), (body, r.text)  # 422: the body's shape, 400: its values
        err = r.json()["error"]
        assert set(err) == {"message", "type", "code", "param"} and (param is None or err["param"] == param)
    r = secure_client.delete("/admin/keys/key_0000000000000000", headers=admin.headers)
    assert r.status_code == 404 and r.json()["error"]["type"]
