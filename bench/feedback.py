"""How fast corrections make a model better: a simulated user corrects a served intent classifier.

The task is a set of Banking77 intents the base model (minilm-l6) was never trained on. A first
version is trained lightly on a few seed rows per intent. Users then send traffic (texts the model
never saw); each wrong answer gets a correction, exactly what ``POST /v1/feedback`` stores. At each
checkpoint (100, 200, 400 corrections) the loop's round is run as in the daemon: the round dataset
(``llmos.feedback.rounds.build_round``: seed data + deduplicated corrections), a fine-tune of the same
method and base (``train`` job code, in this process), and the new version serves the traffic that
follows. Printed: accuracy on held-out rows (never trained on, never corrected) after 0, 100, 200,
400 corrections.

    .venv/bin/python bench/feedback.py                         # the full run (20 intents)
    .venv/bin/python bench/feedback.py --smoke                 # 4 intents, 10/20 corrections, 1 epoch

**Zero-shot start** (``--zero-shot``): no seed data at all. A MiniLM prompt task (similarity to the
intent names) serves the traffic; the simulated user rates every answer, confirming the right ones
(+1) and correcting wrong ones while corrections stay within a quarter of the rows sent (the rest of
the wrong answers get a bare -1, which teaches nothing). After S rows sent, the loop's first round is
run as in the daemon (``llmos.feedback.zero_shot.build_first_round``: corrected + confirmed items, a
20% held-out share for the gate; a fine-tune of MiniLM with the loop's defaults), and scored on
held-out rows beside a reference: the same base fine-tuned on the gold labels of all S rows sent.

    .venv/bin/python bench/feedback.py --zero-shot             # 20 intents, 200 / 400 / 800 rows sent
    .venv/bin/python bench/feedback.py --chat                  # the chat run (bench/feedback_chat.py)
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.trainkit import DATASETS, MINILM, open_home  # noqa: E402
from llmos.data import Datasets, ImportOptions  # noqa: E402
from llmos.feedback.shapes import Example  # noqa: E402
from llmos.feedback.rounds import build_round  # noqa: E402
from llmos.runtime import Runtime  # noqa: E402
from llmos.train import TrainEnv, TrainSpec, plan_training  # noqa: E402
from llmos.train.job import publish, run_plan  # noqa: E402
from llmos.train.loading import load_trained  # noqa: E402
from llmos.train.runner import NullReporter  # noqa: E402
from bench.engines import cpu_flags  # noqa: E402


def intents_rows(n_intents: int) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    with open(DATASETS / "banking77/train.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by.setdefault(row["category"], []).append(row["text"])
    return {c: by[c] for c in sorted(by)[:n_intents]}


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "category"])
        w.writerows(rows)
    return path


def predict(rt: Runtime, ref: str, texts: list[str]) -> list[str]:
    import torch

    loaded = load_trained(rt.store.registry, ref)
    out: list[str] = []
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            enc = loaded.tokenizer(texts[i:i + 64], padding=True, truncation=True, max_length=64, return_tensors="pt")
            out += [loaded.labels[j] for j in loaded.model(**enc).logits.argmax(-1).tolist()]
    return out


def train(rt: Runtime, dataset: str, name: str, hp: dict) -> str:
    env = TrainEnv.of(rt)
    plan = plan_training(env, TrainSpec.parse({"base": MINILM, "dataset": dataset, "name": name,
                                               "hyperparameters": hp}))
    work = Path(tempfile.mkdtemp(prefix="llmos-bench-fb-"))
    result = run_plan(plan, env, NullReporter(work / "checkpoints"), work)
    return publish(rt.store.importer, env.registry, plan, result, None).key  # the caller's own: read by key


def prompt_predict(rt: Runtime, ref: str, texts: list[str]) -> list[str]:
    """What the prompt task ``ref`` answers for ``texts``, through the serving path /v1/classify runs."""
    import asyncio

    from llmos.kernel.core import Kernel
    from llmos.prompt_tasks import serve

    kernel = Kernel(rt.settings, rt.store.registry)

    async def run() -> list[str]:
        resolved = kernel.resolve(ref, "classify", tenant=None)
        out: list[str] = []
        for i in range(0, len(texts), 64):
            out += [max(p, key=p.__getitem__) for p in await serve.run("classify", kernel, resolved, texts[i:i + 64])]
        return out

    try:
        return asyncio.run(run())
    finally:
        kernel.close()


def simulate_user(traffic: list[tuple[str, str]], said: list[str], start_id: int,
                  corrected: list[Example], confirmed: list[Example]) -> int:
    """Rate each answer; correct a wrong one while corrections stay within a quarter of the rows sent.
    Returns the bare -1s (wrong answers left uncorrected)."""
    bare = 0
    sent = start_id
    for (text, gold), answer in zip(traffic, said):
        sent += 1
        if answer == gold:
            confirmed.append(Example(sent, f"sim-{sent}", "zs:v0", "classify", text, answer))
        elif len(corrected) + 1 <= sent // 4:
            corrected.append(Example(sent, f"sim-{sent}", "zs:v0", "classify", text, gold))
        else:
            bare += 1
    return bare


def zero_shot(a: argparse.Namespace) -> None:
    from llmos.feedback.rounds import stable_fraction
    from llmos.feedback.zero_shot import build_first_round
    from llmos.prompt_tasks.store import create_prompt_task

    hp = {"max_length": 64}  # everything else: the defaults a loop round gets, fitted to its data
    rt = open_home(a.home)
    by = intents_rows(a.intents)
    held = [(t, c) for c, ts in by.items() for t in ts[:a.held_out]]
    traffic = [(t, c) for c, ts in by.items() for t in ts[a.held_out:]]
    traffic.sort(key=lambda r: stable_fraction(97, r[0]))  # no order of intent, the same each run (a seed
    # other than the held-out share's 0, or the first rows sent would all be held out)
    steps = [int(s) for s in a.sent.split(",")]
    task = create_prompt_task(rt.store.registry, "zs", MINILM, kind="classify", labels=sorted(by))
    held_texts = [t for t, _ in held]

    def accuracy(said: list[str]) -> float:
        return sum(p == g for p, (_, g) in zip(said, held)) / len(held)

    t0 = time.time()
    print(f"zero-shot start: {a.intents} Banking77 intents, a MiniLM prompt task over the intent names; "
          f"{len(held)} held-out rows, {len(traffic)} traffic rows")
    print(f"prompt task (the zero-shot start) held-out accuracy {accuracy(prompt_predict(rt, task.ref, held_texts)):.3f}")
    said_all = prompt_predict(rt, task.ref, [t for t, _ in traffic[:max(steps)]])
    print(f"{'sent':>5} {'corrected':>9} {'confirmed':>9} {'bare -1':>7} {'first version':>13} {'all labels':>10} "
          f"{'gap pts':>7} {'wall s':>7}")
    ds = Datasets.of(rt)
    tmp = Path(tempfile.mkdtemp(prefix="llmos-bench-zs-"))
    for n in steps:
        corrected: list[Example] = []
        confirmed: list[Example] = []
        bare = simulate_user(traffic[:n], said_all[:n], 0, corrected, confirmed)
        dataset, _, _ = build_first_round(ds, "zs", task, corrected, confirmed, holdout=0.2, seed=0)
        first = accuracy(predict(rt, train(rt, dataset.ref, "zs-first", hp), held_texts))
        ref_ds = ds.import_file(write_csv(tmp / f"all-{n}.csv", traffic[:n]), f"zs-all-{n}", ImportOptions(split="train"))
        ref = accuracy(predict(rt, train(rt, ref_ds.ref, f"zs-all-{n}", hp), held_texts))
        print(f"{n:>5} {len(corrected):>9} {len(confirmed):>9} {bare:>7} {first:>13.3f} {ref:>10.3f} "
              f"{(ref - first) * 100:>7.1f} {time.time() - t0:>7.0f}", flush=True)
    print(f"\ncpu flags: {cpu_flags()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a tiny run that checks the pipeline in minutes")
    ap.add_argument("--zero-shot", action="store_true", help="the loop's start from a prompt task (see above)")
    ap.add_argument("--sent", default="200,400,800", help="--zero-shot: rows sent before each first round")
    ap.add_argument("--intents", type=int, default=20)
    ap.add_argument("--seed-rows", type=int, default=3, help="training rows per intent for the first version")
    ap.add_argument("--checkpoints", default="100,200,400")
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--held-out", type=int, default=20, help="held-out rows per intent")
    ap.add_argument("--home", default=None)
    ap.add_argument("--chat", action="store_true", help="the chat run: SmolLM2 on NQ-open (bench/feedback_chat.py)")
    a = ap.parse_args()
    if a.zero_shot:
        return zero_shot(a)
    if a.chat:
        from bench.feedback_chat import chat_main

        if "--checkpoints" not in sys.argv:
            a.checkpoints = "50,100,200"
        if "--seed-rows" not in sys.argv:
            a.seed_rows = 20
        if "--epochs" not in sys.argv:
            a.epochs = 2
        if "--held-out" not in sys.argv:
            a.held_out = 100
        return chat_main(a)
    if a.smoke:
        a.intents, a.checkpoints, a.epochs, a.held_out = 4, "10,20", 1, 10
    checkpoints = [int(c) for c in a.checkpoints.split(",")]
    hp = {"epochs": a.epochs, "max_length": 64, "batch_size": 16, "learning_rate": 3e-4}
    rt = open_home(a.home)
    by = intents_rows(a.intents)
    seed = [(t, c) for c, ts in by.items() for t in ts[:a.seed_rows]]
    validation = [(t, c) for c, ts in by.items() for t in ts[a.seed_rows:a.seed_rows + 5]]
    start = a.seed_rows + 5
    held = [(t, c) for c, ts in by.items() for t in ts[start:start + a.held_out]]
    traffic = [(t, c) for c, ts in by.items() for t in ts[start + a.held_out:]]
    traffic.sort(key=lambda r: hash(r[0]) % 1000003)  # users arrive in no particular order of intent
    tmp = Path(tempfile.mkdtemp(prefix="llmos-bench-fb-data-"))
    ds = Datasets.of(rt)
    ds.import_file(write_csv(tmp / "seed.csv", seed), "fb-seed", ImportOptions(split="train"))
    root = ds.import_file(write_csv(tmp / "val.csv", validation), "fb-seed", ImportOptions(split="validation",
                                                                                          append=True))
    t0 = time.time()
    serving = train(rt, root.ref, "fb-intents", hp)
    print(f"{a.intents} Banking77 intents, first version from {a.seed_rows} rows per intent; "
          f"{len(held)} held-out rows, {len(traffic)} traffic rows")
    print(f"{'corrections':>12} {'held-out accuracy':>18} {'traffic served':>15} {'wall s':>8}")
    held_texts = [t for t, _ in held]
    acc = sum(p == g for p, (_, g) in zip(predict(rt, serving, held_texts), held)) / len(held)
    print(f"{0:>12} {acc:>18.3f} {0:>15} {time.time() - t0:>8.0f}", flush=True)
    corrections: list[Example] = []
    served = 0
    for target in checkpoints:
        while len(corrections) < target and served < len(traffic):
            batch = traffic[served:served + 32]
            served += len(batch)
            for (text, gold), said in zip(batch, predict(rt, serving, [t for t, _ in batch])):
                if said != gold and len(corrections) < target:
                    corrections.append(Example(len(corrections) + 1, f"sim-{served}", serving, "classify", text, gold))
        built = build_round(ds, "fb-intents", root.ref, corrections, holdout=0.0, seed=0)
        serving = train(rt, built.dataset.ref, "fb-intents", hp)
        acc = sum(p == g for p, (_, g) in zip(predict(rt, serving, held_texts), held)) / len(held)
        print(f"{len(corrections):>12} {acc:>18.3f} {served:>15} {time.time() - t0:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
