"""The key contract (create / authenticate / revoke / list), the first admin key, `llmos keys`, and the
client and daemon CLI commands sending a key."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from llmos.daemon import create_app
from llmos.auth import authenticate, create_key, list_audit, list_keys, revoke
from llmos.auth.bootstrap import announce_bootstrap
from llmos.cli import app as cli
from llmos.db.tables import ApiKey
from llmos.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from llmos.runtime import Runtime
from tests.api.server import serving


def test_key_is_shown_once_and_stored_hashed(runtime: Runtime) -> None:
    info, raw = create_key(runtime.db, tenant="acme", name="ci", scopes=["read", "infer", "read"], rate_limit=5,
                           token_quota=1000)
    assert raw.startswith("llmos-") and len(raw) == 49 and info.scopes == ["infer", "read"]
    with runtime.db.session() as s:
        row = s.get(ApiKey, info.id)
        assert raw not in repr([row.id, row.hash, row.name, row.scopes]) and len(row.hash) == 64
    p = authenticate(runtime.db, raw)
    assert p is not None and (p.key_id, p.tenant, p.scopes, p.rate_limit, p.token_quota) == (
        info.id, "acme", frozenset({"infer", "read"}), 5.0, 1000)
    assert authenticate(runtime.db, raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
    assert authenticate(runtime.db, "") is None and authenticate(runtime.db, "x" * 10_000) is None
    first = revoke(runtime.db, info.id)
    assert authenticate(runtime.db, raw) is None and revoke(runtime.db, info.id).revoked_at == first.revoked_at
    other, _ = create_key(runtime.db, tenant="beta", name="b", scopes=["admin"])
    assert [k.id for k in list_keys(runtime.db, "beta")] == [other.id]
    assert {k.id for k in list_keys(runtime.db)} == {info.id, other.id}
    with pytest.raises(NotFound):
        revoke(runtime.db, other.id, tenant="acme")  # another tenant's key is not found


@pytest.mark.parametrize("kw,needle", [
    ({"scopes": ["root"]}, "unknown scope"),
    ({"scopes": []}, "at least one scope"),
    ({"tenant": "../etc"}, "tenant"),
    ({"tenant": ""}, "tenant"),
    ({"name": "x" * 200}, "name"),
    ({"rate_limit": 0}, "rate_limit"),
    ({"token_quota": -5}, "token_quota"),
])
def test_bad_key_settings_are_refused(runtime: Runtime, kw: dict[str, object], needle: str) -> None:
    args: dict[str, object] = {"tenant": "acme", "name": "k", "scopes": ["read"], **kw}
    with pytest.raises(InvalidInput, match=needle):
        create_key(runtime.db, **args)  # type: ignore[arg-type]
    assert list_keys(runtime.db) == []


def test_first_admin_key_is_printed_once_and_never_again(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    raw = announce_bootstrap(runtime.db)
    assert raw is not None and raw in capsys.readouterr().out
    p = authenticate(runtime.db, raw)
    assert p is not None and p.scopes == frozenset({"admin"})
    assert announce_bootstrap(runtime.db) is None and capsys.readouterr().out == ""
    revoke(runtime.db, p.key_id)
    assert announce_bootstrap(runtime.db) is None  # not even when that key is gone
    assert [e.action for e in list_audit(runtime.db)] == ["bootstrap_admin_key"]


def test_keys_cli_creates_lists_revokes_and_audits(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOS_HOME", str(runtime.settings.home))
    monkeypatch.setenv("LLMOS_BUILTINS", "false")
    run = CliRunner().invoke
    r = run(cli, ["keys", "create", "--tenant", "acme", "--name", "bot", "--scope", "infer", "--scope", "read",
                  "--rate-limit", "5", "--quota", "100000"])
    assert r.exit_code == 0, r.output
    raw = re.search(r"llmos-[A-Za-z0-9_-]{43}", r.output).group(0)  # type: ignore[union-attr]
    p = authenticate(runtime.db, raw)
    assert p is not None and p.tenant == "acme" and p.token_quota == 100000
    listed = run(cli, ["keys", "list", "--json"])
    assert p.key_id in listed.output and raw not in listed.output
    assert run(cli, ["keys", "revoke", p.key_id]).exit_code == 0
    assert authenticate(runtime.db, raw) is None
    assert isinstance(run(cli, ["keys", "create", "--scope", "root"]).exception, InvalidInput)  # exit 2 in main()
    assert isinstance(run(cli, ["keys", "revoke", "key_nope"]).exception, NotFound)  # exit 3
    assert [e.action for e in list_audit(runtime.db)] == ["key_revoke", "key_create"]


@pytest.mark.slow
def test_cli_and_client_send_the_key(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime.settings.auth = "on"
    _, raw = create_key(runtime.db, tenant="default", name="ops", scopes=["admin"])
    _, reader = create_key(runtime.db, tenant="default", name="ro", scopes=["read"])
    monkeypatch.setenv("LLMOS_HOME", str(runtime.settings.home))
    run = CliRunner().invoke
    with serving(create_app(runtime)) as url:
        monkeypatch.delenv("LLMOS_API_KEY", raising=False)
        r = run(cli, ["ps", "--url", url])
        assert isinstance(r.exception, Unauthorized) and "missing key" in r.exception.message
        monkeypatch.setenv("LLMOS_API_KEY", raw)
        assert run(cli, ["ps", "--url", url, "--json"]).exit_code == 0
        r = run(cli, ["--api-key", reader, "jobs", "list", "--url", url, "--json"])
        assert r.exit_code == 0, r.output
        r = run(cli, ["--api-key", reader, "unload", "x", "--url", url])
        assert isinstance(r.exception, Forbidden) and "scopes (read)" in r.exception.message
