"""The chat run of ``bench/feedback.py``: a simulated user corrects a served chat assistant on NQ-open.

A first version of SmolLM2 (LoRA SFT on a few NQ-open questions with their reference answers) serves
questions it never saw. Each answer that does not contain a reference answer gets a correction (the
first reference), exactly what ``POST /v1/feedback`` stores for a chat response. At each checkpoint
(50, 100, 200 corrections) the loop's round runs as in the daemon: the round dataset
(``build_round``: the seed rows + the corrections, a stable held-out share never trained on), a LoRA
SFT of the same base, and the gate (``llmos.feedback.gate``: both versions' chrF on the held-out
corrections and the root validation split, the paired bootstrap's lower bound, the answer loss). A
candidate the gate passes serves from then on; a rejected one does not. Printed per checkpoint: the
serving version's score on fixed held-out questions (never trained on, never corrected): answers that
contain a reference, and mean chrF against the first reference; and the gate's decision.

    .venv/bin/python bench/feedback.py --chat                    # 0, 50, 100, 200 corrections
    .venv/bin/python bench/feedback.py --chat --checkpoints 10,20 --held-out 20   # a small run
"""

from __future__ import annotations

import json
import tempfile
import time
from argparse import Namespace
from pathlib import Path

from bench.common import DATASETS
from bench.engines import cpu_flags
from llmos.config import load_settings
from llmos.data import Datasets, ImportOptions
from llmos.data.rows import SftRow
from llmos.feedback.gate import decide, report_settings, reports
from llmos.feedback.rounds import build_round
from llmos.feedback.shapes import Example
from llmos.runtime import Runtime, open_runtime
from llmos.train import TrainEnv, TrainSpec, plan_training
from llmos.train.job import publish, run_plan
from llmos.train.runner import NullReporter

SMOL = "smollm2-135m-instruct"
SYSTEM = "Answer the question with a short fact, in a few words."


def nq_rows() -> list[tuple[str, list[str]]]:
    with open(DATASETS / "nq_open/NQ-open.dev.jsonl", encoding="utf-8") as fh:
        return [(r["question"], r["answer"]) for r in map(json.loads, fh)]


def row(question: str, answer: str) -> SftRow:
    return SftRow(messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
                            {"role": "assistant", "content": answer}])


def answers(rt: Runtime, ref: str, questions: list[str], max_new_tokens: int) -> list[str]:
    from llmos.train.evaluate import generate
    from llmos.train.loading import load_trained
    from llmos.train.sft import prompt_text

    loaded = load_trained(rt.store.registry, rt.store.registry.get(ref).key)
    prompts = [prompt_text(loaded.tokenizer, loaded.chat_template, row(q, "")) for q in questions]
    return [a.strip() for a in generate(loaded.model, loaded.tokenizer, prompts, max_new_tokens, 16)]


def right(answer: str, refs: list[str]) -> bool:
    low = answer.lower()
    return any(r.lower() in low for r in refs)


def train(rt: Runtime, dataset: str, hp: dict) -> str:
    env = TrainEnv.of(rt)
    plan = plan_training(env, TrainSpec.parse({"base": SMOL, "dataset": dataset, "name": "fb-chat",
                                               "hyperparameters": hp}))
    work = Path(tempfile.mkdtemp(prefix="llmos-bench-fbchat-"))
    result = run_plan(plan, env, NullReporter(work / "checkpoints"), work)
    return publish(rt.store.importer, env.registry, plan, result, None).ref


def gate(rt: Runtime, dataset: str, candidate: str, serving: str) -> tuple[bool, str]:
    ds = Datasets.of(rt)
    info = ds.get(dataset)
    rows = list(ds.rows(info.name, info.version))
    splits = {"feedback": [r for r in rows if r.split == "test"], "validation": [r for r in rows if r.split == "validation"]}
    settings = report_settings(rt.store.registry.get(candidate))
    metric, cand = reports(rt.store.registry, candidate, splits, settings=settings)
    _, serv = reports(rt.store.registry, serving, splits, settings=settings)
    verdict = decide(metric, cand, serv, {k: len(v) for k, v in splits.items()}, margin=0.0, val_tolerance=0.05)
    return verdict.passed, verdict.reason


def score(rt: Runtime, ref: str, held: list[tuple[str, list[str]]], max_new_tokens: int) -> tuple[float, float]:
    from llmos.train.sft import chrf_scores

    said = answers(rt, ref, [q for q, _ in held], max_new_tokens)
    contains = sum(right(a, refs) for a, (_, refs) in zip(said, held)) / len(held)
    chrf = chrf_scores(said, [refs[0] for _, refs in held])
    return contains, sum(chrf) / len(chrf)


def chat_main(a: Namespace) -> None:
    checkpoints = [int(c) for c in a.checkpoints.split(",")]
    hp = {"epochs": a.epochs, "max_length": 96, "batch_size": 8, "learning_rate": 1e-3, "lora_r": 8,
          "early_stopping_patience": 0, "report_rows": 40, "max_new_tokens": 16}
    root_dir = Path(a.home) if a.home else Path(tempfile.mkdtemp(prefix="llmos-bench-"))
    rt = open_runtime(load_settings(home=root_dir))  # with the built-in SmolLM2
    data = nq_rows()
    seed, validation = data[:a.seed_rows], data[a.seed_rows:a.seed_rows + 20]
    held = data[a.seed_rows + 20:a.seed_rows + 20 + a.held_out]
    traffic = data[a.seed_rows + 20 + a.held_out:]
    ds = Datasets.of(rt)
    tmp = Path(tempfile.mkdtemp(prefix="llmos-bench-fbchat-data-"))
    for split, part in (("train", seed), ("validation", validation)):
        path = tmp / f"{split}.jsonl"
        path.write_text("".join(json.dumps({"messages": [m.model_dump() for m in row(q, refs[0]).messages]}) + "\n"
                                for q, refs in part))
        root = ds.import_file(path, "fbchat-seed", ImportOptions(task="sft", split=split, append=split != "train"))
    t0 = time.time()
    serving = train(rt, root.ref, hp)
    print(f"NQ-open chat: SmolLM2 + LoRA; first version from {len(seed)} rows; {len(held)} held-out questions")
    print(f"{'corrections':>12} {'contains ref':>13} {'chrF':>6} {'traffic':>8} {'wall s':>7}  gate")
    contains, chrf = score(rt, serving, held, 16)
    print(f"{0:>12} {contains:>13.3f} {chrf:>6.3f} {0:>8} {time.time() - t0:>7.0f}  (first version)", flush=True)
    corrections: list[Example] = []
    served = 0
    for target in checkpoints:
        while len(corrections) < target and served < len(traffic):
            batch = traffic[served:served + 32]
            served += len(batch)
            for (q, refs), said in zip(batch, answers(rt, serving, [q for q, _ in batch], 16)):
                if not right(said, refs) and len(corrections) < target:
                    convo = json.dumps([{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}])
                    corrections.append(Example(len(corrections) + 1, f"sim-{served}", serving, "chat", convo, refs[0],
                                               rejected=said))
        built = build_round(ds, "fb-chat", root.ref, corrections, holdout=0.2, seed=0)
        candidate = train(rt, built.dataset.ref, hp)
        passed, reason = gate(rt, built.dataset.ref, candidate, serving)
        serving = candidate if passed else serving
        contains, chrf = score(rt, serving, held, 16)
        print(f"{len(corrections):>12} {contains:>13.3f} {chrf:>6.3f} {served:>8} {time.time() - t0:>7.0f}  "
              f"{'passed' if passed else 'rejected'} ({candidate}): {reason}", flush=True)
    print(f"\ncpu flags: {cpu_flags()}")
