"""Devices the kernel places models on: the host's memory and each CUDA GPU, with a budget each.

A *probe* lists the devices (``probe_devices`` asks psutil and torch.cuda; tests inject one that
reports fake GPUs), and ``budgets`` turns the settings into the bytes the kernel may fill on each:
the host gets ``memory_budget``, every GPU ``gpu_budget`` (a share of its memory, or a size).
A cluster's nodes and their GPUs are devices too (kinds NODE and NODE_GPU, listed by
``llmos.cluster``). Which engine kinds can use a GPU is decided here too: transformers whenever torch sees CUDA,
llama.cpp only when its wheel was built with a GPU backend (the CPU wheels are not).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import psutil

log = logging.getLogger(__name__)

CPU = "cpu"
CUDA = "cuda"
NODE = "node"  # a cluster node (``llmos.cluster``): its engines run in Ray actors there
NODE_GPU = "node-gpu"  # one GPU of a cluster node: ``node-<id>/cuda:<its CUDA id on that node>``
GPU_KINDS = (CUDA, NODE_GPU)


@dataclass(frozen=True)
class Device:
    """One place a model can live: ``cpu`` (host memory) or ``cuda:N``."""

    id: str  # "cpu", "cuda:0", "node-<id>" ...
    kind: str  # CPU, CUDA or NODE
    name: str  # what the hardware calls itself
    total_bytes: int  # its memory
    free_bytes: int  # free when probed

    @property
    def index(self) -> int | None:
        """The CUDA ordinal (None for the host)."""
        return int(self.id.split(":", 1)[1]) if self.kind == CUDA else None

    @property
    def gpu(self) -> bool:
        return self.kind in GPU_KINDS

    @property
    def rank(self) -> int:
        """Placement order: GPUs first, then cluster nodes' CPUs, then the host."""
        return 0 if self.gpu else 1 if self.kind == NODE else 2


DeviceProbe = Callable[[], list[Device]]
"""Lists the devices now: the host first, then each GPU (style rule 5: injected, so tests fake GPUs)."""


def host_device() -> Device:
    vm = psutil.virtual_memory()
    return Device(CPU, CPU, "host memory", vm.total, vm.available)


def probe_devices() -> list[Device]:
    """The host, and every CUDA GPU torch can see with its free memory (none on a CPU build)."""
    return [host_device(), *probe_cuda()]


def probe_cuda() -> list[Device]:
    import torch  # only when the kernel starts: the CLI never pays for it

    if not torch.cuda.is_available():
        return []
    found = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        found.append(Device(f"{CUDA}:{i}", CUDA, torch.cuda.get_device_name(i), int(total), int(free)))
    return found


def cpu_only() -> list[Device]:
    """A probe for ``LLMOS_DEVICES=cpu``: the host alone, GPUs ignored."""
    return [host_device()]


def gpu_budget(device: Device, setting: float) -> int:
    """Bytes the kernel may fill on a GPU: ``setting`` <= 1 is a share of its free memory when probed
    (other processes may hold the rest), a larger number is bytes (never more than it has)."""
    if setting <= 1:
        return int(device.free_bytes * setting)
    return min(int(setting), device.free_bytes)


def budgets(devices: list[Device], host_budget: int, gpu_setting: float) -> dict[str, int]:
    """Device id -> budget bytes; devices with no room at all are left out."""
    out: dict[str, int] = {}
    for d in devices:
        if d.gpu:
            nbytes = gpu_budget(d, gpu_setting)
        else:  # the host, or a cluster node: the same budget, never more than the node has
            nbytes = host_budget if d.kind == CPU else min(host_budget, d.free_bytes)
        if nbytes > 0:
            out[d.id] = nbytes
        else:
            log.warning("device %s (%s) has no memory to give models; not used", d.id, d.name)
    return out


@lru_cache(maxsize=1)
def llamacpp_has_gpu() -> bool:
    """Whether the installed llama.cpp binding was built with a GPU backend (its CPU wheels are not)."""
    try:
        import xllamacpp

        return any(int(d["type"]) in (1, 2) for d in xllamacpp.get_device_info())  # GPU, IGPU
    except Exception:  # noqa: BLE001 - no binding, or one that cannot list devices: CPU only
        return False


def can_use(engine: str, device: Device) -> bool:
    """Whether an engine kind can run on ``device`` (every kind runs on the host)."""
    if device.kind in (CPU, NODE):
        return True  # a node runs every kind on its CPUs
    if engine == "llamacpp":
        return llamacpp_has_gpu()
    return True  # transformers (and any engine built on torch) runs wherever torch does


def cpu_note(engine: str, devices: list[Device]) -> str | None:
    """Why ``engine`` stays on the host although there are GPUs (said plainly in ``ps``), or None."""
    if any(d.gpu for d in devices) and not any(can_use(engine, d) for d in devices if d.gpu):
        return f"{engine} runs on CPU: its installed build has no GPU backend"
    return None
