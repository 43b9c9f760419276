"""The daemon over a real local Ray cluster (a head and two one-CPU workers on loopback): the built-in
models served by engine actors on the workers, the official openai client unchanged, a worker killed
and its model placed again, a fine-tune run by a worker and then served, a job whose worker dies
resumed from its checkpoint on the other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from llmos.daemon import create_app
from llmos.jobs import register_job_kind
from llmos.runtime import Runtime
from tests.api.server import serving
from tests.cluster.conftest import LocalCluster, alive_workers
from tests.jobs.jobkinds import release
from tests.train.conftest import MINILM, SMOL, Home, finished, import_sst2
from tests.waiting import BACKSTOP_S, wait_until

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "Name one colour."}]


def cluster_settings(rt_settings, cluster: LocalCluster):  # type: ignore[no-untyped-def]
    return rt_settings.model_copy(update={"cluster": cluster.address, "cluster_cache": str(cluster.temp / "cache"),
                                          "keep_alive": 600.0})


@pytest.fixture
def daemon(ray_cluster: LocalCluster, builtin_runtime: Runtime) -> Iterator[tuple[str, object]]:
    rt = Runtime(cluster_settings(builtin_runtime.settings, ray_cluster), builtin_runtime.db, builtin_runtime.store)
    app = create_app(rt)
    with serving(app) as url:
        yield url, app


def placed(url: str) -> dict[str, str]:
    ps = httpx.get(url + "/admin/ps", timeout=BACKSTOP_S).json()
    return {m["model"].split(":")[0]: m["device"] for m in ps["models"] if m["loaded"]}


def test_the_openai_client_is_served_by_actors_and_a_dead_worker_s_model_is_placed_again(
        daemon: tuple[str, object], ray_cluster: LocalCluster) -> None:
    import ray

    url, app = daemon
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=8, temperature=0)
    text = answer.choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=SMOL, messages=QUESTION, max_tokens=8, temperature=0, stream=True) if c.choices)
    assert text and streamed == text  # the stream came back through the actor's output queue, whole
    vectors = client.embeddings.create(model=MINILM, input=["a cat", "a dog"]).data
    assert len(vectors) == 2 and len(vectors[0].embedding) == 384
    where = placed(url)
    assert where[SMOL].startswith("node-") and where[MINILM].startswith("node-")

    # The worker node hosting SmolLM2 dies; the next request is served from the other worker.
    key = next(m["model"] for m in httpx.get(url + "/admin/ps", timeout=BACKSTOP_S).json()["models"] if m["model"].startswith(SMOL))
    pool = app.state.kernel.resources  # type: ignore[attr-defined]
    engine = pool.acquire(f"{key}@llamacpp")
    _, pid = ray.get(engine._actor.where.remote())  # noqa: SLF001 - which worker process group to kill
    pool.release(f"{key}@llamacpp")
    ray_cluster.kill(ray_cluster.node_of(pid))
    again = client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=8, temperature=0)
    assert again.choices[0].message.content == text
    assert placed(url)[SMOL].startswith("node-") and placed(url)[SMOL] != where[SMOL]

    # A node that comes back (Ray gives it a new id) becomes a device again. Ray first marks the killed
    # node dead (its health check), so that the count of live workers below means the new one.
    wait_until(lambda: alive_workers() == 1, "the killed worker marked dead", interval=0.2)
    ray_cluster.add_worker()
    wait_until(lambda: alive_workers() == 2, "a worker node back", interval=0.2)
    wait_until(lambda: len([d for d in httpx.get(url + "/admin/ps", timeout=BACKSTOP_S).json()["devices"] if d["kind"] == "node"]) == 3,
               "the new node among the daemon's devices", interval=0.2)


def test_a_fine_tune_runs_on_a_worker_and_its_model_is_served(ray_cluster: LocalCluster, builtin_runtime: Runtime,
                                                               datasets: Path, tmp_path: Path) -> None:
    import ray

    home = Home(tmp_path / "home", builtin_runtime)
    try:
        home.add_builtin(MINILM)
        import_sst2(home, datasets, train=48, dev=16)
        rt = home.open()
        rt.settings = cluster_settings(rt.settings, ray_cluster)
        app = create_app(rt)
        with serving(app) as url, httpx.Client(base_url=url, timeout=BACKSTOP_S) as http:
            r = http.post("/v1/training/jobs", json={
                "model": MINILM, "dataset": "sst2", "method": "full", "name": "ray-sst2",
                "hyperparameters": {"epochs": 1, "batch_size": 8, "max_length": 32, "max_eval_rows": 16}})
            assert r.status_code == 200, r.text
            info = finished(app.state.jobs, r.json()["id"])
            workers = {n["NodeID"] for n in ray.nodes() if n["Resources"].get("CPU", 0) > 0}
            [(_, node_id)] = app.state.jobs._spawn.started  # noqa: SLF001 - where the runner ran
            assert node_id in workers  # a worker ran it, not the head (no CPUs) or the daemon's process
            out = http.post("/v1/classify", json={"model": info.result_model, "input": ["a wonderful, moving film"]})
            assert out.status_code == 200, out.text
            assert len(out.json()["data"][0]["scores"]) == 2  # the two SST-2 labels
            where = placed(url)
            assert any("ray-sst2" in m and d.startswith("node-") for m, d in where.items()), where
    finally:
        home.close()


def test_a_job_whose_node_dies_resumes_from_its_checkpoint_on_another_node(
        ray_cluster: LocalCluster, builtin_runtime: Runtime, tmp_path: Path) -> None:
    register_job_kind("count", "tests.jobs.jobkinds:count", replace=True)
    home = Home(tmp_path / "home", builtin_runtime)
    try:
        rt = home.open()
        rt.settings = cluster_settings(rt.settings, ray_cluster)
        app = create_app(rt)
        with serving(app):
            jobs, spawn = app.state.jobs, app.state.jobs._spawn  # noqa: SLF001 - where each runner ran
            job_id = jobs.submit("count", {"n": 30, "delay": 0.02, "checkpoint_every": 5, "hold_after": 12})
            wait_until(lambda: jobs.get(job_id).progress.step >= 12, "the job held at step 12", job=(jobs, job_id))
            [(pid, first_node)] = spawn.started
            ray_cluster.kill(ray_cluster.node_of(pid))  # the runner goes down with its node
            wait_until(lambda: len(spawn.started) == 2, "the job started again", job=(jobs, job_id))
            release(jobs.settings.jobs_dir / job_id / "work")
            info = finished(jobs, job_id)
            assert (info.result["started_at"], info.attempts) == (10, 2)  # from its checkpoint at step 10
            assert spawn.started[1][1] != first_node  # on the node still alive
            reasons = [e.data.get("reason") for e in jobs.events(job_id) if e.kind == "state"]
            assert "node lost" in reasons
    finally:
        home.close()
        wait_until(lambda: alive_workers() == 1, "the killed worker marked dead", interval=0.2)
        ray_cluster.add_worker()


def test_the_gpu_probe_runs_on_each_node_and_finds_no_gpu_on_a_cpu_build(ray_cluster: LocalCluster) -> None:
    import ray
    import torch

    from llmos.cluster.ray_cluster import RayCluster, probe_node_gpus

    cluster = RayCluster(ray_cluster.address, owned=False)  # probes nodes Ray counts GPUs on: none here
    workers = [cluster.node(d) for d in cluster.devices()]
    assert len(workers) == alive_workers() == 2
    for node in workers:  # a task pinned to the node, told to see all its GPUs: torch there has no CUDA
        assert probe_node_gpus(node) == [] and not torch.cuda.is_available()
    assert ray.is_initialized()
