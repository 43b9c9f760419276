"""kill -9 of a real `llmos serve` while it streams, and of its training runner while it writes a
checkpoint; then a restart. Every acknowledged request keeps its request-log row, the job resumes from
its last complete checkpoint (never the half-written one) and finishes, a feedback row acknowledged
just before a kill is kept, a canary's split is the same across a kill, and `llmos doctor` is clean."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import httpx
import psutil
import pytest

from llmos.data import Datasets, ImportOptions
from llmos.db.tables import Feedback, LoopPolicy, RequestLog
from llmos.feedback.canary import to_candidate
from llmos.feedback.policy import Policies
from tests.obs.conftest import scrape, value
from tests.reliability.conftest import Daemon, kill_runners, llmos, open_home
from tests.heldjobs import held_marker
from tests.waiting import BACKSTOP_S, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # two trainings and three daemon starts
HP = {"epochs": 1, "batch_size": 8, "max_length": 32, "checkpoint_steps": 3}  # 8 steps: saves at 3, 6, 8
HELD_TRAINING = {"train": "tests.heldjobs:train_held_in_checkpoint"}  # stops inside its second checkpoint


def import_slice(root: Path, datasets: Path) -> None:
    lines = (datasets / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    src = root.parent / "sst2-crash.tsv"
    rt = open_home(root)
    for split, rows in {"train": lines[3001:3065], "validation": lines[5001:5033]}.items():
        src.write_text(lines[0] + "".join(rows), encoding="utf-8")
        Datasets.of(rt).import_file(src, "sst2-crash", ImportOptions(split=split, append=split == "validation"))
    rt.close()


def acknowledged_requests(http: httpx.Client) -> list[str]:
    """A few requests of each kind that returned 200: their ids must survive any crash that follows."""
    ids = []
    for i in range(3):
        r = http.post("/v1/completions", json={"model": "smollm2-135m-instruct", "prompt": f"Count to {i + 3}:",
                                               "max_tokens": 4, "temperature": 0})
        e = http.post("/v1/embeddings", json={"model": "minilm-l6", "input": [f"sentence {i}"]})
        assert r.status_code == e.status_code == 200, (r.text, e.text)
        ids += [r.json()["id"], e.json()["id"]]
    return ids


class OpenStream(threading.Thread):
    """A long streaming chat that is still running when the daemon dies."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.chunks, self.error = url, 0, None

    def run(self) -> None:
        body = {"model": "smollm2-135m-instruct", "stream": True, "max_tokens": 2000, "temperature": 0,
                "messages": [{"role": "user", "content": "Tell a very long story about a lighthouse."}]}
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json=body, timeout=BACKSTOP_S) as r:
                for line in r.iter_lines():
                    self.chunks += line.startswith("data: ")
        except httpx.HTTPError as exc:
            self.error = exc


def job_over_http(http: httpx.Client, job_id: str) -> dict:
    return http.get(f"/v1/jobs/{job_id}").json()


def ended_over_http(http: httpx.Client, job_id: str) -> str | None:
    info = job_over_http(http, job_id)
    return f"job {job_id} has {info['state']}: {info.get('error')}" if info["state"] in FINAL else None


FINAL = ("succeeded", "failed", "cancelled")


def checkpoints(run_dir: Path) -> tuple[list[int], Path | None]:
    """The complete checkpoints' steps and the folder of one being written (if any), cheaply."""
    try:
        names = os.listdir(run_dir / "checkpoints" / "trainer")
    except FileNotFoundError:
        return [], None
    done = sorted(int(n.rsplit("-", 1)[1]) for n in names if n.startswith("checkpoint-"))
    partial = next((n for n in names if n.startswith(".tmp-checkpoint-")), None)
    return done, run_dir / "checkpoints" / "trainer" / partial if partial else None


def test_kill_9_mid_stream_and_mid_checkpoint_loses_nothing_acknowledged(home: Path, datasets: Path) -> None:
    import_slice(home, datasets)
    daemon = Daemon(home).start(kinds=HELD_TRAINING)
    try:
        with daemon.client() as http:
            acked = acknowledged_requests(http)
            job = http.post("/v1/training/jobs", json={"model": "minilm-l6", "dataset": "sst2-crash",
                                                          "method": "full", "hyperparameters": HP,
                                                          "name": "crash-clf"}).json()
            run_dir = home / "jobs" / job["id"]
            # The runner stops with one checkpoint complete and the next half-written; a stream is under
            # way; then the plug is pulled on both.
            wait_until(held_marker(home / "jobs", job["id"]).exists, "the runner inside its second checkpoint",
                       ended=lambda: ended_over_http(http, job["id"]))
            done, half = checkpoints(run_dir)
            assert done == [3] and half is not None and half.name.endswith("-6")
            stream = OpenStream(daemon.url)
            stream.start()
            wait_until(lambda: stream.chunks > 1, "the stream under way",
                       ended=lambda: None if stream.is_alive() else f"the stream ended: {stream.error}")
            runner = psutil.Process(job_over_http(http, job["id"])["pid"])
            runner.send_signal(signal.SIGKILL)
            daemon.kill()
        assert half.exists()  # the kill left it half-written
        last_good = checkpoints(run_dir)[0][-1]
        stream.join(BACKSTOP_S)
        assert stream.chunks > 1 and stream.error is not None  # it was cut mid-stream

        rt = open_home(home)
        with rt.db.session() as s:
            logged = {rid for (rid,) in s.query(RequestLog.id).filter(RequestLog.id.in_(acked))}
        assert logged == set(acked)  # every acknowledged request is in the log
        assert [i.ref for i in rt.store.registry.list() if i.name == "crash-clf"] == []  # no half result
        rt.close()

        daemon.start()  # the restart requeues the job from its last complete checkpoint
        with daemon.client() as http:
            info = wait_until(lambda: _finished(http, job["id"]), "the resumed job to finish", interval=0.5)
            assert info["state"] == "succeeded", http.get(f"/v1/jobs/{job['id']}/logs").text[-3000:]
            logs = http.get(f"/v1/jobs/{job['id']}/logs").text
            assert f"resuming training from checkpoint {run_dir}" in logs
            assert f"checkpoint-{last_good}" in logs.split("resuming training from checkpoint")[1].splitlines()[0]
            out = http.post("/v1/classify", json={"model": "crash-clf", "input": ["a gorgeous, witty film"]})
            assert out.status_code == 200 and out.json()["data"][0]["label"] in {"0", "1"}
            start_canary(home, info["result_model"])
            # the daemon's router reads canaries from the database now and then; its metrics show when
            wait_until(lambda: value(scrape(http), "llmos_canary_share", model="crash-clf", version="v2") == 0.5,
                       "the daemon routing the canary")
            routed = classify_many(http, 8)
            fb = http.post("/v1/feedback", json={"request_id": out.json()["id"], "rating": -1, "correction": "0"})
            assert fb.status_code == 200, fb.text
            daemon.kill()  # mid-canary, the moment the feedback is acknowledged
        rt = open_home(home)
        with rt.db.session() as s:
            assert s.get(Feedback, fb.json()["id"]).request_id == out.json()["id"]
        rt.close()
        daemon.start()
        with daemon.client() as http:
            routed += classify_many(http, 8)
        daemon.stop()
        check_canary_split(home, routed)
        report = json.loads((registry_snapshot(home, info["result_model"]) /
                             "eval_report.json").read_text())
        steps = [step for step, _ in report["training"]["loss_history"]]
        assert steps == list(range(1, report["training"]["max_steps"] + 1))  # each step exactly once
        doctor = llmos(home, "doctor")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    finally:
        daemon.stop()
        kill_runners(home)


def _finished(http: httpx.Client, job_id: str) -> dict | None:
    info = job_over_http(http, job_id)
    return info if info["state"] in FINAL else None


CANARY = {"candidate": "crash-clf:v2", "serving": "crash-clf:v1", "share": 0.5, "salt": "pinned-salt",
          "min_requests": 10_000, "started_at": "2026-01-01T00:00:00+00:00"}


def start_canary(home: Path, result: str) -> None:
    """Half of crash-clf's traffic goes to a candidate (v2: the same weights in a manifest of its own, so a
    response names the version that answered)."""
    rt = open_home(home)
    trained = rt.store.registry.get(result)
    rt.store.registry.add("crash-clf:v2", trained.manifest.model_copy(
        update={"source": f"{trained.manifest.source} (candidate)"}), tenant=trained.tenant)
    Policies(rt.db).set("crash-clf", "default", {"canary_share": 0.5})
    with rt.db.session() as s:
        row = s.get(LoopPolicy, ("default", "crash-clf"))
        row.state, row.canary = "canary", dict(CANARY)
    rt.close()


def classify_many(http: httpx.Client, n: int) -> list[str]:
    ids = []
    for i in range(n):
        r = http.post("/v1/classify", json={"model": "crash-clf", "input": [f"film number {i}"]})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    return ids


def check_canary_split(home: Path, ids: list[str]) -> None:
    """Every request, before and after the kill, went to the arm the stored salt and share choose,
    and the canary itself is unchanged."""
    rt = open_home(home)
    with rt.db.session() as s:
        routed = dict(s.query(RequestLog.id, RequestLog.model).filter(RequestLog.id.in_(ids)).all())
        row = s.get(LoopPolicy, ("default", "crash-clf"))
        assert (row.state, row.canary) == ("canary", CANARY)
    rt.close()
    assert len(routed) == len(ids)
    assert set(routed.values()) == {"crash-clf:v2", "crash-clf:v1"}  # both arms served, each naming its version
    for rid, model in routed.items():
        assert (model == "crash-clf:v2") == to_candidate(CANARY["salt"], rid, CANARY["share"]), (rid, model)


def registry_snapshot(home: Path, ref: str) -> Path:
    """The folder of ``ref``, a model the daemon trained in the default tenant's namespace."""
    registry = open_home(home).store.registry
    return registry.snapshot(registry.get(ref))
