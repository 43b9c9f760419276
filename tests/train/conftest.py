"""Fixtures for the fine-tuning tests: a fresh store per module (built-ins copied in), real job runners,
small slices of the real datasets, and the daemon's app served on a loopback port."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from llmos.daemon import create_app
from llmos.data import Datasets, ImportOptions
from llmos.data.info import DatasetInfo
from llmos.kernel.core import Kernel
from llmos.jobs import JobInfo, JobRunner, JobState
from llmos.runtime import Runtime, open_runtime
from tests.api.server import serving
from tests.conftest import ModuleDirs, copy_builtin, make_settings
from tests.waiting import BACKSTOP_S, wait_for_job

TRAINING_BACKSTOP_S = 6 * BACKSTOP_S
FAST = {"job_progress_interval": 0.0, "job_poll_interval": 0.05, "job_stop_timeout": BACKSTOP_S, "keep_alive": 600}
MINILM, SMOL = "minilm-l6", "smollm2-135m-instruct"


class Home:
    """One module's llmos home: runtime, job runners over it (a second one plays a restarted daemon)."""

    def __init__(self, root: Path, builtin: Runtime) -> None:
        self.root = root
        self.builtin = builtin
        self.rt = self.open()
        self.runners: list[tuple[JobRunner, Runtime]] = []

    def open(self) -> Runtime:
        return open_runtime(make_settings(self.root, **FAST), builtins=False)

    def add_builtin(self, name: str) -> None:
        """Give this store a built-in model (hard links: the session store's built-ins are never touched)."""
        copy_builtin(self.rt, self.builtin, name)

    def runner(self) -> JobRunner:
        rt = self.open()
        jobs = JobRunner(rt)
        jobs.startup()
        self.runners.append((jobs, rt))
        return jobs

    @property
    def datasets(self) -> Datasets:
        return Datasets.of(self.rt)

    def close(self) -> None:
        for jobs, rt in self.runners:
            crash(jobs)
            for info in jobs.list():
                if info.pid and psutil.pid_exists(info.pid):
                    os.kill(info.pid, signal.SIGKILL)
            rt.close()
        self.rt.close()


def crash(jobs: JobRunner) -> None:
    """The daemon dies: its supervisor stops without pausing anything (its runners live on)."""
    jobs._stopping.set()  # noqa: SLF001 - simulating a crash needs the insides
    if jobs._thread is not None:  # noqa: SLF001
        jobs._thread.join()  # noqa: SLF001
    jobs._active = False  # noqa: SLF001


@pytest.fixture(scope="module")
def home(builtin_runtime: Runtime, module_dirs: ModuleDirs) -> Iterator[Home]:
    h = Home(module_dirs("train") / "home", builtin_runtime)
    yield h
    h.close()


def finished(jobs: JobRunner, job_id: str) -> JobInfo:
    """The job's info once it has succeeded; fails at once, with its error and log, if it ends otherwise.
    A real fine-tune on a crowded machine can take many minutes: the test's own time limit is the guard."""
    return wait_for_job(jobs, job_id, JobState.SUCCEEDED, timeout=TRAINING_BACKSTOP_S)


# -- dataset slices -------------------------------------------------------------------------------
def slice_lines(src: Path, out: Path, n: int, *, skip: int = 0, header: bool = False) -> Path:
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    head, body = (lines[:1], lines[1:]) if header else ([], lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(head + body[skip:skip + n]), encoding="utf-8")
    return out


def slice_conll(src: Path, out: Path, n: int) -> Path:
    blocks = [b for b in src.read_text(encoding="utf-8").split("\n\n") if b.strip()][:n]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return out


def import_sst2(home: Home, datasets: Path, name: str = "sst2", train: int = 320, dev: int = 120) -> DatasetInfo:
    """A balanced-enough SST-2 slice: training rows from train.tsv, validation rows from dev.tsv."""
    tmp = home.root.parent / "slices"
    ds = home.datasets
    ds.import_file(slice_lines(datasets / "sst2/train.tsv", tmp / "train.tsv", train, skip=2000, header=True), name,
                   ImportOptions(split="train"))
    return ds.import_file(slice_lines(datasets / "sst2/dev.tsv", tmp / "dev.tsv", dev, header=True), name,
                          ImportOptions(split="validation", append=True))


# -- serving --------------------------------------------------------------------------------------
class Daemon:
    def __init__(self, url: str, kernel: Kernel, jobs: JobRunner) -> None:
        self.url = url
        self.kernel = kernel
        self.jobs = jobs
        self.http = httpx.Client(base_url=url, timeout=BACKSTOP_S)

    def post(self, path: str, body: dict) -> httpx.Response:
        return self.http.post(path, json=body)

    def ok(self, path: str, body: dict) -> dict:
        r = self.post(path, body)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def daemon(home: Home) -> Iterator[Daemon]:
    rt = home.open()
    kernel = Kernel(rt.settings, rt.store.registry)
    jobs = JobRunner(rt)
    home.runners.append((jobs, rt))
    with serving(create_app(rt, kernel, jobs)) as url:
        d = Daemon(url, kernel, jobs)
        yield d
        d.http.close()


def report_of(home: Home, ref: str) -> dict:
    """The evaluation report stored with a model version."""
    reg = home.rt.store.registry
    return json.loads((reg.snapshot(reg.get(ref)) / "eval_report.json").read_text())
