"""`llmos ask` planning quality: plain-language requests against the plans they should give.

bench/ask_cases.py holds requests written for this bench (varied wording, some ambiguous,
some naming things that do not exist, some sent with a key that may not do them), each with the
expected outcome: a plan (operation + arguments per step), "question" or "refused". A daemon app with
auth on (in-process, the real built-in models: MiniLM-L6 picks the operation, SmolLM2 fills open
arguments under constrained decoding) holds a tenant with a private model, two datasets (Banking77 and
SST-2 slices from ../shared/datasets), two knowledge bases, two queued jobs, an uploaded JSONL file and
two files in a folder standing for the asking machine (its paths are sent as ``local_files``, as
``llmos ask`` does). Plans are only made,
never run: a plan runs only when confirmed, so no plan in this bench runs unconfirmed.

Shares reported: exact (the expected plan, or the expected question / refusal), safe (a question or a
refusal, expected or not: nothing would run), wrong plans (a plan other than the expected one: it would
be shown, and run only if a person confirmed it).

    .venv/bin/python bench/ask.py [--show-all]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient  # noqa: E402

from bench.ask_cases import CASES  # noqa: E402
from bench.engines import cpu_flags  # noqa: E402
from llmos.auth import create_key  # noqa: E402
from llmos.cli.ask import local_files  # noqa: E402
from llmos.config import load_settings  # noqa: E402
from llmos.daemon import create_app  # noqa: E402
from llmos.runtime import Runtime, open_runtime  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "datasets"
TENANT = "bench"
KEYS = {"admin": ["admin"], "reader": ["read"], "trainer": ["train", "read", "infer"]}


def _csv_slice(path: Path, n: int, delimiter: str = ",") -> bytes:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))[: n + 1]
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def _files(client: TestClient, headers: dict[str, str], folder: Path) -> dict[str, str]:
    """Files on "the asking machine" ({dir}: an SST-2 slice and a Markdown note) and an uploaded one ({file1})."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reviews_slice.tsv").write_bytes(_csv_slice(DATA / "sst2" / "dev.tsv", 30, "\t"))
    (folder / "cards.md").write_text("# Cards\nA lost card is blocked at once.\n", encoding="utf-8")
    rows = list(csv.reader(io.StringIO(_csv_slice(DATA / "sst2" / "dev.tsv", 30, "\t").decode())))[1:]
    jsonl = "".join(json.dumps({"text": r[0], "label": r[1]}) + "\n" for r in rows).encode()
    r = client.post("/v1/files", headers=headers, data={"purpose": "fine-tune"},
                    files={"file": ("reviews.jsonl", jsonl, "application/jsonl")})
    assert r.status_code == 200, r.text
    return {"{dir}": str(folder), "{file1}": r.json()["id"]}


def build_world(rt: Runtime, client: TestClient, folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Keys by role and the placeholders of the requests ({job1}, {job2}, {dir}, {file1})."""
    keys = {role: create_key(rt.db, tenant=TENANT, name=role, scopes=scopes)[1] for role, scopes in KEYS.items()}
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    smol = rt.store.registry.get("smollm2-135m-instruct", tenant=None).manifest
    rt.store.registry.add("support-bot:v1", smol.model_copy(update={"source": "support-bot-v1"}), tenant=TENANT)
    rt.store.registry.tag("support-bot:v1", "support-bot:latest", tenant=TENANT)
    for name, path, delim in (("intents", DATA / "banking77" / "train.csv", ","),
                              ("reviews", DATA / "sst2" / "dev.tsv", "\t")):
        r = client.post("/v1/datasets", headers=admin, data={"name": name, "task": "classify"},
                        files={"file": (f"{name}.csv", _csv_slice(path, 300, delim), "text/csv")})
        assert r.status_code == 201, r.text
    for kb in ("faq", "handbook"):
        assert client.post("/v1/kb", headers=admin, json={"name": kb}).status_code == 201
    doc = ("# Cards\nA new card arrives within 7 working days.\n\n# Refunds\nRefunds take 5 days.\n").encode()
    assert client.post("/v1/kb/faq/documents", headers=admin, files=[("files", ("faq.md", doc, "text/markdown"))]
                       ).status_code == 201
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    ids = [jobs.submit("train", {"bench": i}, tenant=TENANT) for i in range(2)]  # queued: no lifespan, no runner
    trainer = {"Authorization": f"Bearer {keys['trainer']}"}
    return keys, {"{job1}": ids[0], "{job2}": ids[1], **_files(client, trainer, folder)}


def _fill(value: Any, marks: dict[str, str]) -> Any:
    text = json.dumps(value)
    for mark, real in marks.items():
        text = text.replace(mark, real)
    return json.loads(text)


def judge(expect: Any, got: dict[str, Any]) -> str:
    """exact | safe (a question or refusal that was not the expected outcome) | wrong (another plan)."""
    status = got["status"]
    if isinstance(expect, str):
        if status == expect:
            return "exact"
        return "safe" if status in ("question", "refused") else "wrong"
    if status != "planned":
        return "safe"
    steps = [[s["operation"], s["arguments"]] for s in got["steps"]]
    return "exact" if steps == expect else "wrong"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--show-all", action="store_true", help="print every request, not only the misses")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        rt = open_runtime(load_settings(home=Path(home), auth="on", job_cpu_priority="normal"))
        client = TestClient(create_app(rt))  # no lifespan: jobs stay queued, nothing is started
        keys, marks = build_world(rt, client, Path(home) / "caller")
        outcomes: dict[str, int] = {"exact": 0, "safe": 0, "wrong": 0}
        latencies = []
        for case in CASES:
            text, expect = _fill(case.text, marks), _fill(case.expect, marks)
            headers = {"Authorization": f"Bearer {keys[case.key]}"}
            t0 = time.perf_counter()
            # as `llmos ask` does: the paths in the words that exist on the asking machine go along
            r = client.post("/v1/ask", headers=headers, json={"text": text, "local_files": local_files(text)})
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            got = r.json()
            verdict = judge(expect, got)
            outcomes[verdict] += 1
            if verdict != "exact" or args.show_all:
                shown = [[s["operation"], s["arguments"]] for s in got["steps"]] if got["status"] == "planned" else (
                    f"{got['status']}: {got['message'][:120]}")
                print(f"{verdict:5}  [{case.key}] {text!r}\n       expected {expect}\n       got      {shown}")
        client.app.state.kernel.close()  # type: ignore[attr-defined]
        rt.close()
    n = len(CASES)
    print(f"\nrequests: {n} (embedding: minilm-l6; chat model: smollm2-135m-instruct)")
    print(f"exact plans / outcomes: {outcomes['exact'] / n:.3f}  ({outcomes['exact']})")
    print(f"safe (question or refusal where a plan or another answer was expected): {outcomes['safe'] / n:.3f}  "
          f"({outcomes['safe']})")
    print(f"wrong plans shown for confirmation: {outcomes['wrong'] / n:.3f}  ({outcomes['wrong']}); "
          "run without confirmation: 0 (a plan runs only when confirmed)")
    print(f"planning latency: median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    print(f"\ncpu flags: {cpu_flags()}")
    print(f"os.cpu_count: {os.cpu_count()}; load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
