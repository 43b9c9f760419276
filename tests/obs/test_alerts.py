"""Alert rules: they fire and resolve from real traffic and state, reach a webhook, and bad files stop
the daemon with a message naming the rule and field."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from llmos.cli import app as cli_app
from llmos.engines.base import FakeEngine
from llmos.errors import ConfigError
from llmos.feedback.canary_signals import record_canary_outcome
from llmos.obs.measure import quantile
from llmos.obs.metrics import HttpEvent, Rolling
from llmos.obs.rules import default_rules_text, parse_duration, parse_rules
from tests.api.server import serving
from tests.kernel.conftest import FakeClock
from tests.obs.conftest import Receiver, scrape, value, write_rules
from tests.waiting import wait_until

SMOL = "smollm2-135m-instruct"
CHAT = {"model": SMOL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 3}


class FailingEngine(FakeEngine):
    """Every generation fails inside the engine after 50 ms (a 500 for a one-shot request)."""

    def prefill(self, seqs):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        raise RuntimeError("device lost")


def on_test_clock(client: Any) -> FakeClock:
    """The app's rolling windows and alert evaluation on a clock the test moves (from now on)."""
    clock = FakeClock(time.monotonic())
    obs = client.app.state.obs
    obs.metrics.clock = obs.alerts.clock = clock
    return clock


def states(client: Any) -> dict[str, str]:
    return {r["name"]: r["state"] for r in client.get("/admin/alerts").json()["rules"]}


RULES = """
rules:
  - name: api-errors
    kind: error_rate
    threshold: 0.5
    min_requests: 2
    window: 3s
    severity: critical
    summary: most API calls fail
  - name: slow-median
    kind: latency
    quantile: 0.5
    threshold: 0.01
    min_requests: 2
    window: 3s
"""


@pytest.mark.slow
def test_rules_fire_and_resolve_and_reach_the_webhook(make_app, tmp_path: Path, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    client = make_app(engine_factory=lambda ref: FailingEngine(ref), alerts_file=write_rules(tmp_path / "a.yaml", RULES),
                      alert_interval=0.1, alert_webhook=receiver.url)
    clock = on_test_clock(client)  # the evaluator's thread runs on, reading the windows at the test's time
    assert states(client) == {"api-errors": "ok", "slow-median": "ok"}
    for _ in range(3):
        r = client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 500 and "device lost" in r.json()["error"]["message"]
    wait_until(lambda: states(client) == {"api-errors": "firing", "slow-median": "firing"}, "both rules firing")
    samples = scrape(client)
    assert value(samples, "llmos_alerts_firing", alert="api-errors", severity="critical") == 1
    view = client.get("/admin/alerts").json()
    assert {a["name"] for a in view["firing"]} == {"api-errors", "slow-median"}
    first = next(n for n in view["history"] if n["alert"] == "api-errors")
    assert first["state"] == "firing" and first["value"] == 1.0
    assert re.search(r"(\d) of \1 response\(s\) were 5xx", first["detail"]), first["detail"]

    # no traffic: the windows empty, both rules lack data and resolve
    clock.advance(10.0)
    wait_until(lambda: states(client) == {"api-errors": "ok", "slow-median": "ok"}, "both rules resolved")
    wait_until(lambda: len(receiver.bodies) == 4, "four webhook calls")
    got = sorted((b["alert"], b["state"]) for b in receiver.bodies)
    assert got == [("api-errors", "firing"), ("api-errors", "resolved"),
                   ("slow-median", "firing"), ("slow-median", "resolved")]
    hook = next(b for b in receiver.bodies if b["alert"] == "api-errors" and b["state"] == "firing")
    assert hook["severity"] == "critical" and hook["summary"] == "most API calls fail" and hook["threshold"] == 0.5
    history = client.get("/admin/alerts").json()["history"]
    assert history[0]["state"] == "resolved"
    wait_until(lambda: all(n["webhook"] == "delivered" for n in client.get("/admin/alerts").json()["history"]),
               "every notice delivered")
    assert value(scrape(client), "llmos_alerts_firing", alert="api-errors", severity="critical") == 0


def test_for_keeps_a_rule_pending_and_a_webhook_failure_is_recorded(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rules = write_rules(tmp_path / "a.yaml", "rules:\n  - {name: rollback, kind: canary_rolled_back, window: 1s, "
                        "for: 0.3s}\n")
    client = make_app(alerts_file=rules, alert_interval=3600, alert_webhook="http://127.0.0.1:9/nowhere")
    manager = client.app.state.obs.alerts
    clock = on_test_clock(client)
    record_canary_outcome("support-bot", "v7", "rolled_back")  # stamped now: not before the test's clock
    assert manager.evaluate() == [] and states(client) == {"rollback": "pending"}
    clock.advance(0.35)
    (fired,) = manager.evaluate()
    assert fired.state == "firing" and "support-bot:v7" in fired.detail
    clock.advance(1000.0)  # far past the 1 s window
    (resolved,) = manager.evaluate()
    assert resolved.state == "resolved"
    history = wait_until(lambda: [n for n in client.get("/admin/alerts").json()["history"]
                                  if n["webhook"] not in ("pending", None)], "the webhook's failure recorded")
    assert history[0]["webhook"].startswith("failed: ")


def test_alerts_list_on_the_command_line(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rules = write_rules(tmp_path / "a.yaml", "rules:\n  - {name: rollback, kind: canary_rolled_back, window: 60s,"
                        " summary: canary went back}\n  - {name: queue, kind: queue_full}\n")
    client = make_app(alerts_file=rules, alert_interval=3600)
    record_canary_outcome("support-bot", "v9", "rolled_back")
    client.app.state.obs.alerts.evaluate()
    with serving(client.app) as url:
        out = CliRunner().invoke(cli_app, ["alerts", "list", "--url", url])
        as_json = CliRunner().invoke(cli_app, ["alerts", "list", "--url", url, "--json"])
    assert out.exit_code == 0, out.output
    assert "rollback" in out.output and "firing" in out.output and "queue" in out.output
    assert "recent notifications" in out.output
    assert '"firing"' in as_json.output and str(rules) in as_json.output.replace("\n", "")


def test_the_shipped_defaults_parse_and_apply_without_a_file(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    defaults = parse_rules(default_rules_text(), "defaults")
    assert {r.kind for r in defaults} >= {"latency", "ttft", "error_rate", "queue_full", "job_failed",
                                          "canary_rolled_back"}
    client = make_app(alert_interval=3600)  # the test home has no alerts.yaml
    view = client.get("/admin/alerts").json()
    assert view["source"].startswith("built-in defaults") and len(view["rules"]) == len(defaults)
    with pytest.raises(ConfigError, match="missing.yaml .LLMOS_ALERTS_FILE. does not exist"):
        make_app(alerts_file=tmp_path / "missing.yaml")  # named explicitly: a typo is not silently ignored


@pytest.mark.parametrize("text,needles", [
    ("rules:\n  - {name: slow, kind: latency, threshold: -1}\n", ["rule 'slow' (rules[0])", "'threshold'"]),
    ("rules:\n  - {name: a, kind: queue_full}\n  - {name: x, kind: latencyy, threshold: 1}\n",
     ["rule 'x' (rules[1])", "'kind'", "latency"]),
    ("rules:\n  - {name: slow, kind: latency, threshold: 1, window: 5 minutes}\n",
     ["rule 'slow'", "'window'", "not a duration"]),
    ("rules:\n  - {name: slow, kind: ttft, threshold: 1, quantil: 0.9}\n", ["rule 'slow'", "'quantil'", "not permitted"]),
    ("rules:\n  - {kind: job_failed}\n", ["rules[0]", "'name'", "required"]),
    ("rules:\n  - {name: a, kind: job_failed}\n  - {name: a, kind: queue_full}\n", ["two rules are named 'a'"]),
    ("rules: [unclosed\n", ["not valid YAML"]),
    ("- just a list\n", ["top level must be a mapping"]),
])
def test_bad_rule_files_are_clear_errors(text: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_rules(text, "/etc/llmos/alerts.yaml")
    message = exc.value.message
    assert "/etc/llmos/alerts.yaml" in message
    for needle in needles:
        assert needle in message, message


def test_a_bad_rule_file_stops_the_daemon_at_start(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = write_rules(tmp_path / "alerts.yaml", "rules:\n  - {name: errs, kind: error_rate, threshold: 2}\n")
    with pytest.raises(ConfigError, match=r"rule 'errs' \(rules\[0\]\), field 'threshold'"):
        make_app(alerts_file=bad)
    with pytest.raises(ConfigError, match="LLMOS_ALERT_WEBHOOK"):
        make_app(alert_webhook="ftp://example")


def test_memory_rule_follows_loaded_models(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rules = write_rules(tmp_path / "a.yaml", "rules:\n  - {name: mem, kind: memory, threshold: 0.5}\n")
    client = make_app(engine_factory=lambda ref: FakeEngine(ref, footprint_bytes=150_000_000),
                      memory_budget="200MB", alerts_file=rules, alert_interval=3600)
    manager = client.app.state.obs.alerts
    assert manager.evaluate() == []
    assert client.post("/admin/load", json={"model": "minilm-l6"}).status_code == 200
    (fired,) = manager.evaluate()
    assert fired.state == "firing" and fired.value == 0.75
    assert client.post("/admin/unload", json={"model": "minilm-l6"}).json()["unloaded"]
    (resolved,) = manager.evaluate()
    assert resolved.state == "resolved" and resolved.value == 0.0


def test_windows_quantiles_and_durations() -> None:
    assert quantile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert quantile([float(i) for i in range(1, 101)], 0.95) == 95.0
    assert quantile([7.0], 0.99) == 7.0
    assert [parse_duration(v) for v in (30, "250ms", "30s", "5m", "1.5h")] == [30.0, 0.25, 30.0, 300.0, 5400.0]
    now = [100.0]
    window = Rolling(10.0, clock=lambda: now[0])
    for t in (91.0, 95.0, 99.0):
        window.add(HttpEvent(t, "GET", "/x", 200))
    assert [e.at for e in window.since(0)] == [91.0, 95.0, 99.0]
    now[0] = 104.0  # 91 is now older than the 10 s the window keeps
    assert [e.at for e in window.since(0)] == [95.0, 99.0]
    assert [e.at for e in window.since(97.0)] == [99.0]
