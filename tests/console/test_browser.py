"""The console in a real browser: Playwright driving Debian's chromium against a daemon on a loopback
port with auth on. It signs in, fine-tunes a small classifier, chats with the real SmolLM2 (streaming),
posts feedback, opens every page, and saves one screenshot per page: into a temporary folder, or with
``--console-shots DIR`` there (``make screenshots`` renews docs/console/ this way)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmos.daemon import create_app
from llmos.auth import create_key
from llmos.data import Datasets, ImportOptions
from llmos.kernel.core import Kernel
from llmos.jobs import JobRunner
from llmos.runtime import Runtime, open_runtime
from tests.api.server import serving
from tests.console.conftest import SCRIPT, TENANT
from tests.conftest import ModuleDirs, copy_builtin, make_settings
from tests.waiting import BACKSTOP_S

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra (make test)")

CHROMIUM = Path("/usr/bin/chromium")
SMOL, MINILM = "smollm2-135m-instruct", "minilm-l6"
FAST = {"job_progress_interval": 0.0, "job_poll_interval": 0.05, "keep_alive": 600, "auth": "on"}


@dataclass
class Daemon:
    url: str
    key: str
    job_id: str


def _slice(src: Path, out: Path, n: int, skip: int = 0, inject: bool = False) -> Path:
    lines = src.read_text(encoding="utf-8").splitlines()
    body = lines[1 + skip:1 + skip + n]
    extra = [f"{SCRIPT} a fine film\t1"] if inject else []
    out.write_text("\n".join([lines[0], *extra, *body]) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def daemon(builtin_runtime: Runtime, datasets: Path, module_dirs: ModuleDirs) -> Iterator[Daemon]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")
    root = module_dirs("console-browser")
    rt = open_runtime(make_settings(root / "home", **FAST), builtins=False)
    for name in (SMOL, MINILM):  # the session store's built-ins, linked in (they are never touched)
        copy_builtin(rt, builtin_runtime, name)
    ds = Datasets.of(rt, TENANT)
    ds.import_file(_slice(datasets / "sst2/train.tsv", root / "train.tsv", 48, skip=2000, inject=True), "sst2",
                   ImportOptions(split="train"))
    ds.import_file(_slice(datasets / "sst2/dev.tsv", root / "dev.tsv", 24), "sst2",
                   ImportOptions(split="validation", append=True))
    _, key = create_key(rt.db, tenant=TENANT, name="console-admin", scopes=["admin"])
    jobs = JobRunner(rt)
    kernel = Kernel(rt.settings, rt.store.registry)
    with serving(create_app(rt, kernel, jobs)) as url:
        r = httpx.post(url + "/v1/training/jobs", headers={"Authorization": f"Bearer {key}"}, timeout=BACKSTOP_S,
                       json={"model": MINILM, "dataset": "sst2", "method": "lora", "name": "sentiment",
                             "hyperparameters": {"epochs": 1, "max_steps": 6, "eval_steps": 3, "max_length": 32,
                                                 "batch_size": 8}})
        assert r.status_code == 200, r.text
        yield Daemon(url, key, r.json()["id"])
    rt.close()


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest, module_dirs: ModuleDirs) -> Path:
    """Where the screenshots go: a temporary folder unless ``--console-shots`` names one."""
    chosen = request.config.getoption("--console-shots")
    folder = Path(chosen) if chosen else module_dirs("console-shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(daemon: Daemon, shots: Path) -> Iterator[object]:
    # Waits are for states (a text, a URL); the backstop only guards against a hang on a crowded machine.
    sync_api.expect.set_options(timeout=BACKSTOP_S * 1000)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-background-networking"])
        context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=daemon.url)
        context.set_default_timeout(BACKSTOP_S * 1000)
        pg = context.new_page()
        pg.shots = shots  # type: ignore[attr-defined]
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        pg.errors = errors  # type: ignore[attr-defined]
        yield pg
        browser.close()


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(page.shots / f"{name}.png"))


def test_console_end_to_end(page, daemon: Daemon) -> None:  # type: ignore[no-untyped-def]
    expect = sync_api.expect
    # Sign in: the console sends an anonymous visitor to the sign-in page.
    page.goto("/console/playground")
    expect(page).to_have_url(re.compile(r"/console/login\?next=/console/playground"))
    page.fill("#key", "llmos-wrong-key")
    page.click("button[type=submit]")
    expect(page.locator("p.error")).to_contain_text("not valid")
    shot(page, "login")
    expected_errors = len(page.errors)  # the refused sign-in's 401; nothing may fail after it
    page.fill("#key", daemon.key)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console/playground$"))
    expect(page.locator(".who")).to_contain_text(f"tenant {TENANT}")

    # A streaming chat with the real SmolLM2, then thumbs down with a correction.
    page.fill("#chat-input", "What is the capital of France? Answer in one word.")
    page.fill("#chat-max", "16")
    with page.expect_response("**/console/api/chat") as answer:
        page.click("#chat-send")
    assert answer.value.headers["content-type"].startswith("text/event-stream")
    reply = page.locator(".msg.assistant").first
    expect(page.locator("#chat-log .feedback")).to_be_visible()  # shown once the stream ends
    assert reply.inner_text().strip() and "error" not in (reply.get_attribute("class") or "")
    assert reply.get_attribute("data-finish") in ("stop", "length")
    box = page.locator("#chat-log .feedback")
    box.locator(".thumb.down").click()
    box.locator(".correction").fill("Paris.")
    box.locator(".comment").fill(f"too long {SCRIPT}")
    box.locator(".send").click()
    expect(box.locator(".feedback-status")).to_have_text("feedback saved")
    shot(page, "playground")

    # Datasets with previews: the injected row is text on the page, never a script.
    page.goto("/console/datasets")
    shot(page, "datasets")
    page.click("text=sst2@2")
    expect(page.locator("table.preview")).to_contain_text(SCRIPT)
    shot(page, "dataset")

    # Queue and loaded models, live metrics, alerts.
    page.goto("/console/")
    expect(page.locator("#ps-table")).to_contain_text(SMOL)
    shot(page, "overview")
    page.goto("/console/metrics")
    expect(page.locator("#live-charts svg path")).not_to_have_count(0)  # lines drawn (flat ones too)
    expect(page.locator("#live-charts svg path").first).to_have_attribute("d", re.compile(r"(L[^L]+){2}"))  # 3 samples
    shot(page, "metrics")
    page.goto("/console/alerts")
    expect(page.locator("h1")).to_have_text("Alerts")
    expect(page.locator("main")).to_contain_text("Recent notifications")
    shot(page, "alerts")

    # The fine-tuning job: live progress, then a loss curve and a new model version with its report.
    page.goto(f"/console/jobs/{daemon.job_id}")
    expect(page.locator("#job-state")).to_have_text("succeeded")
    expect(page.locator("#loss-chart svg path")).not_to_have_count(0)
    shot(page, "job")
    page.goto("/console/jobs")
    expect(page.locator("#jobs-table")).to_contain_text("sentiment:v1")
    shot(page, "jobs")
    page.click("text=sentiment:v1")
    expect(page.locator("h1")).to_have_text("sentiment:v1")
    expect(page.locator("text=Evaluation report")).to_be_visible()
    expect(page.locator("table.grid.compact")).to_contain_text("accuracy")
    assert page.locator("img.curve").evaluate("img => img.complete && img.naturalWidth > 0")
    expect(page.locator(".lineage")).to_contain_text(f"{MINILM}:latest")
    shot(page, "model")
    page.goto("/console/models")
    expect(page.locator("table.grid")).to_contain_text(SMOL)
    shot(page, "models")

    # Classify with the new model in the playground; the feedback list shows the escaped comment.
    page.goto("/console/playground")
    expect(page.locator("#feedback-table")).to_contain_text(f"too long {SCRIPT}")  # as text, not markup
    form = page.locator("form[data-task=classify]")
    form.locator("select").select_option("sentiment")
    form.locator("textarea").fill("a warm, funny and moving film")
    form.locator("button").click()
    result = page.locator("#classify-result")
    expect(result.locator(".msg")).to_contain_text(re.compile(r"^[01] \("))
    result.locator(".thumb.up").click()
    result.locator(".send").click()
    expect(result.locator(".feedback-status")).to_have_text("feedback saved")

    assert page.errors[expected_errors:] == [], page.errors
    assert not page.evaluate("() => window.pwned === true")
