"""SmolLM2 on a GPU through the llmos daemon, in one run: the transformers engine serving a streaming
load (1 client, then N clients at once, then 4N), and a short LoRA fine-tune (chat SFT on a code_alpaca
slice) as a daemon job, with where each ran as ``/admin/ps`` showed it. The same script runs on a
CPU-only machine (``LLMOS_DEVICES=cpu`` or no CUDA), which gives the CPU side of the comparison.

    python bench/gpu.py --alpaca code_alpaca_2k.json --out results.json [--clients 16] [--max-tokens 64]
                        [--train-steps 60] [--log-dir DIR]

The daemon runs with ``LLMOS_ENGINE=hf`` (so the transformers engine serves SmolLM2, on CUDA in
``LLMOS_GPU_DTYPE`` when a GPU is there) and only SmolLM2 registered (``LLMOS_BUILTINS=false``; it is
imported here the way the built-ins are, so the sentence encoder's package is not needed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("alembic").setLevel(logging.WARNING)
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from common import Result, drive, free_port, stop, wait_healthy

SMOL = "smollm2-135m-instruct"
TERMINAL = ("succeeded", "failed", "cancelled")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def versions() -> dict[str, Any]:
    import torch
    import transformers

    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "cuda_available": torch.cuda.is_available()}
    try:
        import peft

        out["peft"] = peft.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["cuda"] = torch.version.cuda
        out["gpu_count"] = torch.cuda.device_count()
    return out


def prepare(home: Path, alpaca: Path, train_rows: int) -> dict[str, Any]:
    """SmolLM2 in the store as the built-in registration puts it there (dequantised once), and an SFT
    slice of short code_alpaca rows imported as a dataset."""
    from llmos.config import load_settings
    from llmos.data import Datasets, ImportOptions
    from llmos.runtime import open_runtime
    from llmos.store.builtin import BUILTINS, _source, locate
    from llmos.store.importer import ImportOptions as ModelImport
    from llmos.store.manifest import Lineage

    rt = open_runtime(load_settings(home=home), builtins=False)
    t0 = time.perf_counter()
    if not rt.store.registry.exists(SMOL):
        model = BUILTINS.get(SMOL)
        rt.store.importer.import_path(locate(model), f"{SMOL}:latest", ModelImport(
            license=model.license, source=_source(model),
            lineage=Lineage(builtin=True, description=model.description)))
    import_s = time.perf_counter() - t0
    rows = json.loads(alpaca.read_text(encoding="utf-8"))
    short = [r for r in rows if len(r["instruction"]) + len(r.get("input", "")) + len(r["output"]) < 400][:train_rows]
    path = Path(tempfile.mkdtemp(prefix="llmos-gpu-data-")) / "code.json"
    path.write_text(json.dumps(short), encoding="utf-8")
    ds = Datasets.of(rt)
    if not any(d.name == "code" for d in ds.list()):
        ds.import_file(path, "code", ImportOptions(task="sft"))
    rt.close()
    return {"import_s": round(import_s, 1), "train_rows": len(short)}


def prompts_from(alpaca: Path, n: int) -> list[str]:
    rows = json.loads(alpaca.read_text(encoding="utf-8"))
    return [r["instruction"] + (f"\n{r['input']}" if r.get("input") else "") for r in rows[:n]]


def summary(res: Result) -> dict[str, Any]:
    return {"tokens": res.tokens, "wall_s": round(res.wall_s, 3), "tok_s": round(res.tok_s, 1),
            "ttft_p50_s": round(res.p50, 3), "ttft_p95_s": round(res.pct(0.95), 3), "requests": len(res.ttft_s)}


def find_key(obj: Any, key: str) -> Any:
    """The first value under ``key`` anywhere in a JSON tree (None when absent)."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            found = find_key(v, key)
            if found is not None:
                return found
    return None


def watch_ps(http: httpx.Client, stop_at: threading.Event, seen: list[dict[str, Any]]) -> None:
    """/admin/ps every second while the job runs: what was reserved, and on which device."""
    while not stop_at.is_set():
        try:
            ps = http.get("/admin/ps").json()
            seen.append({"t": round(time.time(), 1), "reserved": ps.get("reserved"),
                         "devices": [{k: d[k] for k in ("id", "used_bytes", "reserved", "models")}
                                     for d in ps.get("devices", [])]})
        except Exception as exc:  # noqa: BLE001 - a probe that fails is recorded, the run goes on
            seen.append({"error": repr(exc)})
        stop_at.wait(1.0)


def fine_tune(http: httpx.Client, steps: int, batch: int) -> dict[str, Any]:
    body = {"model": SMOL, "dataset": "code", "method": "lora", "name": "smol-gpu-sft", "hyperparameters": {
        "epochs": 50, "max_steps": steps, "max_length": 128, "batch_size": batch, "learning_rate": 1e-3,
        "lora_r": 8, "report_rows": 2, "max_new_tokens": 12}}
    r = http.post("/v1/training/jobs", json=body)
    if r.status_code >= 400:
        raise RuntimeError(f"fine-tune refused: {r.status_code} {r.text}")
    job = r.json()
    say(f"job {job['id']} queued: {json.dumps(job.get('plan', {}).get('rows'))}")
    seen: list[dict[str, Any]] = []
    done = threading.Event()
    watcher = threading.Thread(target=watch_ps, args=(http, done, seen), daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    last = None
    while True:
        info = http.get(f"/v1/jobs/{job['id']}").json()
        if info["state"] != last:
            say(f"job state {info['state']}")
            last = info["state"]
        if info["state"] in TERMINAL:
            break
        if time.perf_counter() - t0 > 400:
            http.post(f"/v1/jobs/{job['id']}/cancel")
        time.sleep(1.0)
    wall = time.perf_counter() - t0
    done.set()
    watcher.join(timeout=5)
    devices = sorted({dev["id"] for s in seen for dev in s.get("devices", []) if dev.get("reserved")})
    training = find_key(info, "training") or {}
    out: dict[str, Any] = {"state": info["state"], "wall_s": round(wall, 1), "reserved_on": devices,
                           "error": info.get("error"), "result_model": info.get("result_model"),
                           "training": {k: v for k, v in training.items() if k != "loss_history"}
                           if isinstance(training, dict) else training,
                           "ps_samples": seen[:3] + seen[-2:] if len(seen) > 5 else seen}
    if isinstance(training, dict) and training.get("steps") and training.get("runtime_s"):
        out["steps_per_s"] = round(training["steps"] / training["runtime_s"], 2)
    try:
        out["log_tail"] = http.get(f"/v1/jobs/{job['id']}/logs").json().get("log", "")[-3000:]
    except Exception as exc:  # noqa: BLE001
        out["log_tail"] = repr(exc)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alpaca", type=Path, required=True, help="code_alpaca_2k.json (or a slice of it)")
    ap.add_argument("--out", type=Path, required=True, help="results JSON")
    ap.add_argument("--home", type=Path, default=None, help="llmos home (default: a fresh temporary one)")
    ap.add_argument("--log-dir", type=Path, default=None, help="where the daemon's log goes (default: beside --out)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--big", type=int, default=4, help="the last load is this many times --clients (0: skip)")
    ap.add_argument("--train-rows", type=int, default=256)
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()

    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "versions": versions()}
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")

    say(f"versions {results['versions']}")
    home = args.home or Path(tempfile.mkdtemp(prefix="llmos-gpu-"))
    results["prepare"] = prepare(home, args.alpaca, args.train_rows)
    say(f"prepared {results['prepare']}")
    save()

    big = args.clients * args.big
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = (args.log_dir or out.parent) / "daemon.log"
    env = {**os.environ, "LLMOS_HOME": str(home), "LLMOS_ENGINE": "hf", "LLMOS_BUILTINS": "false",
           "LLMOS_KEEP_ALIVE": "3600", "LLMOS_MAX_BATCH": str(max(args.clients, big)),
           "LLMOS_LOOP_INTERVAL": "0"}
    log = log_path.open("w")
    # cwd: the tree this script belongs to, so ``-m llmos`` runs its llmos (the cwd comes first on sys.path)
    proc = subprocess.Popen([sys.executable, "-m", "llmos", "serve", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
    http = httpx.Client(base_url=url, timeout=600)
    rc = 0
    try:
        t0 = time.perf_counter()
        wait_healthy(url, proc)
        results["daemon_start_s"] = round(time.perf_counter() - t0, 1)
        ps = http.get("/admin/ps").json()
        results["devices"] = ps["devices"]
        results["device_notes"] = ps.get("device_notes")
        say(f"daemon up in {results['daemon_start_s']} s; devices {[(d['id'], d['name'], d['budget_bytes']) for d in ps['devices']]}")
        t0 = time.perf_counter()
        r = http.post("/admin/load", json={"model": SMOL})
        r.raise_for_status()
        results["load"] = {"s": round(time.perf_counter() - t0, 2), "state": r.json()}
        say(f"loaded: {r.json()}")
        save()

        from transformers import AutoTokenizer

        from llmos.config import load_settings
        from llmos.runtime import open_runtime

        rt = open_runtime(load_settings(home=home), builtins=False)
        tok = AutoTokenizer.from_pretrained(rt.store.registry.snapshot(SMOL))
        rt.close()

        def count(text: str) -> int:
            return len(tok.encode(text, add_special_tokens=False))

        prompts = prompts_from(args.alpaca, max(big, args.clients, 8) + 8)
        drive(url, [SMOL] * 4, prompts[-4:], 16, count)  # warm-up: kernels, caches, allocator
        loads: dict[str, Any] = {}
        one = Result()
        for p in prompts[:3]:  # one client: three requests one after another
            r1 = drive(url, [SMOL], [p], args.max_tokens, count)
            one.tokens += r1.tokens
            one.wall_s += r1.wall_s
            one.ttft_s += r1.ttft_s
        loads["1_client"] = summary(one)
        say(f"1 client: {loads['1_client']}")
        for rep in (1, 2):
            res = drive(url, [SMOL] * args.clients, prompts[:args.clients], args.max_tokens, count)
            loads[f"{args.clients}_clients_run{rep}"] = summary(res)
            say(f"{args.clients} clients run {rep}: {loads[f'{args.clients}_clients_run{rep}']}")
        if big > args.clients:
            res = drive(url, [SMOL] * big, prompts[:big], args.max_tokens, count)
            loads[f"{big}_clients"] = summary(res)
            say(f"{big} clients: {loads[f'{big}_clients']}")
        results["serve"] = loads
        results["sample_reply"] = res.texts[0][:300]
        ps = http.get("/admin/ps").json()
        results["ps_after_serve"] = {"models": ps["models"], "devices": ps["devices"]}
        results["metrics_devices"] = [ln for ln in http.get("/metrics").text.splitlines()
                                      if "device" in ln and not ln.startswith("#")][:40]
        save()

        if not args.skip_train:
            say("fine-tune (LoRA SFT) as a daemon job")
            results["fine_tune"] = ft = fine_tune(http, args.train_steps, args.train_batch)
            say(f"fine-tune: { {k: v for k, v in ft.items() if k not in ('ps_samples', 'log_tail')} }")
            save()
            if ft["state"] == "succeeded":
                name = ft["result_model"].split(":")[0] if ft.get("result_model") else "smol-gpu-sft"
                r = http.post("/v1/chat/completions", json={"model": name, "max_tokens": 24, "temperature": 0,
                              "messages": [{"role": "user", "content": "Print hello in Python."}]})
                results["adapter_reply"] = {"status": r.status_code, "body": r.json() if r.status_code < 500 else r.text}
                ps = http.get("/admin/ps").json()
                results["ps_after_adapter"] = {"models": ps["models"], "devices": ps["devices"]}
            else:
                rc = 1
    except Exception as exc:  # noqa: BLE001 - recorded in the results, which come back either way
        results["error"] = repr(exc)
        say(f"FAILED: {exc!r}")
        rc = 1
    finally:
        save()
        http.close()
        stop(proc)
        log.close()
        say(f"results in {out}; daemon log in {log_path}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
