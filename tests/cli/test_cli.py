"""The CLI as a script uses it: real processes, real stores, exit codes and messages."""

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmos.errors import ExitCode
from llmos.runtime import Runtime
from tests.cli.proc import llmos


@pytest.fixture(scope="module")
def home(builtin_runtime: Runtime) -> Path:
    return builtin_runtime.settings.home


def test_models_list_and_show(home: Path) -> None:
    out = llmos(home, "models", "list", "--json")
    assert out.returncode == 0, out.stderr
    names = {m["name"] for m in json.loads(out.stdout)}
    assert {"smollm2-135m-instruct:latest", "minilm-l6:latest"} <= names
    show = json.loads(llmos(home, "models", "show", "smollm2-135m-instruct", "--json").stdout)
    assert show["architecture"] == "LlamaForCausalLM" and "<|im_start|>" in show["chat_template"]
    table = llmos(home, "models", "list")
    assert "smollm2-135m-instruct:latest" in table.stdout


def test_unknown_model_exit_code_and_suggestion(home: Path) -> None:
    out = llmos(home, "models", "show", "smollm")
    assert out.returncode == ExitCode.NOT_FOUND
    assert "Did you mean smollm2-135m-instruct" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_import_tag_rm_gc_cycle(tmp_path: Path, minilm_dir: Path) -> None:
    h = tmp_path / "h"
    out = llmos(h, "models", "import", str(minilm_dir), "enc:v1", builtins=False)
    assert out.returncode == 0, out.stderr
    assert "imported enc:v1" in out.stdout
    assert llmos(h, "models", "tag", "enc:v1", "enc:prod", builtins=False).returncode == 0
    assert llmos(h, "models", "import", str(minilm_dir), "enc:v1", builtins=False).returncode == ExitCode.CONFLICT
    out = llmos(h, "models", "rm", "enc:v1", builtins=False)
    assert out.returncode == 0 and "freed 0 B" in out.stdout  # enc:prod still uses the blobs
    out = llmos(h, "models", "rm", "enc:prod", builtins=False)
    assert out.returncode == 0 and "MiB" in out.stdout
    assert llmos(h, "gc", builtins=False).stdout.startswith("removed 0 blob(s)")
    assert json.loads(llmos(h, "models", "list", "--json", builtins=False).stdout) == []


@pytest.mark.parametrize("args,code,needle", [
    (("models", "import", "/no/such/path", "x"), ExitCode.USAGE, "no such file"),
    (("models", "import", "{minilm}", "../evil"), ExitCode.USAGE, "invalid model name"),
    (("models", "import", "{minilm}/vocab.txt", "x"), ExitCode.USAGE, "unknown model format"),
])
def test_bad_imports(tmp_path: Path, minilm_dir: Path, args: tuple[str, ...], code: int, needle: str) -> None:
    args = tuple(a.replace("{minilm}", str(minilm_dir)) for a in args)
    out = llmos(tmp_path / "h", *args, builtins=False)
    assert out.returncode == code, out.stderr
    assert needle in out.stderr and "Traceback" not in out.stderr


def test_bad_setting_stops_with_a_clear_message(tmp_path: Path) -> None:
    out = llmos(tmp_path / "h", "models", "list", env={"LLMOS_PORT": "http"})
    assert out.returncode == ExitCode.USAGE
    assert "LLMOS_PORT" in out.stderr and "Traceback" not in out.stderr


def test_doctor_reports_a_corrupt_blob(tmp_path: Path, minilm_dir: Path) -> None:
    h = tmp_path / "h"
    assert llmos(h, "models", "import", str(minilm_dir), "enc", builtins=False).returncode == 0
    healthy = llmos(h, "doctor", builtins=False)
    assert healthy.returncode == 0, healthy.stdout
    assert "blob(s) verified" in healthy.stdout
    blob = next(p for p in (h / "blobs" / "sha256").iterdir() if p.stat().st_size == 612)  # config.json
    blob.chmod(0o644)
    blob.write_text(blob.read_text().replace("384", "385"))
    sick = llmos(h, "doctor", builtins=False)
    assert sick.returncode == ExitCode.INTEGRITY
    assert "corrupt_blob" in sick.stdout and "enc:latest" in sick.stdout


@pytest.mark.slow
def test_run_in_process_when_no_daemon_listens(home: Path) -> None:
    """llmos() points LLMOS_PORT at a port nothing listens on: the model runs in the CLI's process.
    On its default engine (llama.cpp, the Q4_1 file) SmolLM2 needs a plainer system prompt than its
    built-in one to answer this; the transformers engine answers with either."""
    out = llmos(home, "run", "smollm2-135m-instruct", "What is the capital of France?", "-n", "20",
                "--system", "Answer in one short sentence.")
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    hf = llmos(home, "run", "smollm2-135m-instruct", "What is the capital of France?", "-n", "20",
               env={"LLMOS_ENGINE": "hf"})
    assert hf.returncode == 0, hf.stderr
    assert "Paris" in hf.stdout


@pytest.mark.slow
def test_chat_in_process_streams_a_conversation_from_stdin(home: Path) -> None:
    out = llmos(home, "chat", "smollm2-135m-instruct", "-t", "0", "-n", "16",
                stdin="What is the capital of France?\nAnd of Germany?\n", env={"LLMOS_ENGINE": "hf"})
    assert out.returncode == 0, out.stderr
    replies = [line for line in out.stdout.splitlines() if line.strip()]
    assert "Paris" in replies[0] and "Berlin" in out.stdout


def test_run_on_a_model_that_cannot_generate(home: Path) -> None:
    out = llmos(home, "run", "minilm-l6", "hello")
    assert out.returncode == ExitCode.USAGE
    assert "cannot generate" in out.stderr and "smollm2-135m-instruct" in out.stderr


def test_run_reports_a_server_that_answers_with_an_error(home: Path, tmp_path: Path) -> None:
    """Something answers at the daemon's address, with a 404: reported, not bypassed by an in-process run."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))  # no /health there
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        out = llmos(home, "run", "smollm2-135m-instruct", "What is the capital of France?", "--url", url)
        server.shutdown()
    assert out.returncode == ExitCode.NOT_FOUND and out.stdout == "", out.stderr
    assert "answered 404" in out.stderr and "<html" not in out.stderr and "Traceback" not in out.stderr
