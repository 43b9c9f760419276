"""Engines on cluster nodes: the kernel's loader for cluster mode.

``ClusterLoader(key, device)`` is what the kernel's ``DevicePool`` calls to load one engine on the
node it chose: it starts an ``EngineHost`` actor pinned to that node (hard node affinity; Ray's
``memory`` resource reserves the model's estimate there), ships the model's files from the store by
digest unless the node's cache already holds them, builds the engine there and hands the kernel a
``RemoteEngine``. Only the files the engine kind reads travel (the GGUF for llama.cpp, the rest for
transformers). A LoRA adapter over the base travels the same way when a request first names it.

On one of a node's GPUs (a NODE_GPU device) the actor sees that GPU alone (``gpu_env``) and the
engine runs there as on a local GPU: transformers in ``gpu_dtype`` on ``cuda:0``, llama.cpp with
every layer offloaded. Ray is not asked for the GPU: placement is the kernel's, as for the CPUs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from llmos.cluster.ray_cluster import gpu_env
from llmos.config import Settings
from llmos.engines.base import Engine
from llmos.engines.loader import base_of, runs_on, shares_base
from llmos.engines.remote import EngineHost, EngineSpec, RemoteEngine, ship_folder
from llmos.errors import EngineFailed, InvalidInput
from llmos.kernel.devices import Device
from llmos.kernel.placement import HF, split_key
from llmos.store.registry import Registry

log = logging.getLogger(__name__)

ACTOR_START_S = 120.0  # an actor that cannot start on its node in this long is a failed load


def _keep(kind: str) -> Callable[[str], bool]:
    if kind == HF:
        return lambda rel: not rel.endswith(".gguf")
    return lambda rel: not rel.endswith((".safetensors", ".bin", ".pt"))


class ClusterLoader:
    """Loads engines as Ray actors on the node the kernel placed them on."""

    def __init__(self, settings: Settings, registry: Registry, *, node_of: Callable[[Device], Any],
                 on_lost: Callable[[str], None], estimate: Callable[[str], int] | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self._node_of = node_of  # device -> its NodeInfo
        self._on_lost = on_lost
        self.estimate = estimate  # the kernel's, set once the kernel exists (it is built with this loader)

    def __call__(self, key: str, device: Device) -> Engine:
        import ray

        model_key, kind = split_key(key)
        info = runs_on(self.registry, self.registry.get_key(model_key))
        if info.manifest.kind == "adapter" and not shares_base(info):
            raise InvalidInput(f"{info.ref} is a prompt-learning adapter; cluster mode serves full models and "
                               "LoRA adapters only")
        base = base_of(self.registry, info)
        node = self._node_of(device)
        actor = self._start_actor(node, key, device)
        try:
            folder_key = f"{base.digest.replace(':', '-')}-{kind}"
            ship_folder(actor, self.registry.snapshot(base), folder_key, lambda ref: ray.get(ref, timeout=ACTOR_START_S),
                        keep=_keep(kind))
            spec = EngineSpec(kind, folder_key, base.key, list(base.manifest.tasks), base.manifest.chat_template,
                              engine_options(self.settings, kind, base, node.cpus, device.gpu))
            engine_info, streams = ray.get(actor.load.remote(spec))
        except Exception as exc:
            ray.kill(actor, no_restart=True)
            if isinstance(exc, ray.exceptions.RayTaskError):
                raise EngineFailed(f"loading {base.ref} on node {device.id} failed: {exc.cause}") from None
            raise
        engine = RemoteEngine(actor, engine_info, streams, device.id, on_lost=self._on_lost)
        if base is not info:
            engine.add_adapter(info.key, str(self.registry.snapshot(info)))
        log.info("loaded %s (%s) on cluster node %s", base.ref, kind, device.id)
        return engine

    def _start_actor(self, node: Any, key: str, device: Device) -> Any:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        host = ray.remote(EngineHost).options(
            num_cpus=0,  # placement is the kernel's (node affinity); the node's cores are the engine's threads
            memory=max(self.estimate(key) if self.estimate else 0, 1),
            max_concurrency=4,  # the stream poller beside the kernel's calls
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
            runtime_env={"env_vars": gpu_env(device.id)} if device.gpu else None,
        )
        return host.remote(self.settings.cluster_cache)


def engine_options(settings: Settings, kind: str, base: Any, cpus: float, gpu: bool) -> dict[str, Any]:
    """How a node builds the engine: its cores as threads; on a GPU (the only one the actor sees) in
    ``gpu_dtype`` or with every llama.cpp layer offloaded."""
    threads = max(int(cpus), 1)
    if kind == HF:
        return {"max_batch_size": settings.max_batch, "dtype": settings.gpu_dtype if gpu else settings.dtype,
                "device": "cuda:0" if gpu else "cpu", "torch_threads": threads}
    return {"max_batch_size": settings.max_batch, "threads": settings.llamacpp_threads or threads,
            "kv_tokens": settings.llamacpp_kv_tokens, "kv_layout": settings.llamacpp_kv,
            "context_length": base.manifest.context_length, "gpu_layers": -1 if gpu else 0, "main_gpu": 0,
            "lora_cache": f"{settings.cluster_cache}/lora-gguf"}
