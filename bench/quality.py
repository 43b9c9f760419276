"""Quality of what a user gets with no hyperparameters set: minilm-l6 fine-tuned (method, epochs, learning
rate, batch size... all llmos's defaults) on three real datasets, scored on held-out rows.

    sst2     SST-2 train.tsv -> accuracy on dev.tsv                         (target >= 0.88)
    conll    CoNLL-2003 train.txt -> entity F1 (seqeval) on valid.txt       (target >= 0.85)
    banking  Banking77 train.csv, split 80/10/10 stratified (seed 0) -> accuracy on the test part
                                                                            (target >= 0.85)

Each runs the code a ``train`` job runs (plan -> the one training loop -> evaluation report), in this
process. A full run trains on every row (tens of minutes on a GPU, hours on a CPU); run it in parts
with ``--only`` and shrink it with ``--max-train-rows`` (a seeded sample; scores then drop).

    .venv/bin/python bench/quality.py [--only sst2,conll,banking] [--max-train-rows N] [--max-eval-rows N]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.trainkit import DATASETS, MINILM, import_splits, open_home  # noqa: E402
from llmos.data import Datasets  # noqa: E402
from llmos.data.split import SplitOptions  # noqa: E402
from llmos.runtime import Runtime  # noqa: E402
from llmos.train import TrainEnv, TrainSpec, plan_training  # noqa: E402
from llmos.train.job import run_plan  # noqa: E402
from llmos.train.runner import NullReporter  # noqa: E402


@dataclass(frozen=True)
class Benchmark:
    key: str
    title: str
    metric: str
    target: float
    dataset: Callable[[Runtime], str]  # imports (once) and returns the dataset ref to train on


def _sst2(rt: Runtime) -> str:
    info = import_splits(rt, "bench-sst2", [(DATASETS / "sst2/train.tsv", "train"),
                                            (DATASETS / "sst2/dev.tsv", "validation")])
    return info.ref


def _conll(rt: Runtime) -> str:
    info = import_splits(rt, "bench-conll", [(DATASETS / "conll2003/train.txt", "train"),
                                             (DATASETS / "conll2003/valid.txt", "validation")])
    return info.ref


def _banking(rt: Runtime) -> str:
    ds = Datasets.of(rt)
    name = "bench-banking77"
    if any(d.name == name for d in ds.list()):
        return ds.get(name).ref  # the latest version: the split one
    imported = import_splits(rt, name, [(DATASETS / "banking77/train.csv", None)])
    return ds.split(imported.ref, SplitOptions(validation=0.1, test=0.1, seed=0)).ref


BENCHMARKS = {b.key: b for b in [
    Benchmark("sst2", "SST-2 dev accuracy", "accuracy", 0.88, _sst2),
    Benchmark("conll", "CoNLL-2003 valid entity F1", "f1", 0.85, _conll),
    Benchmark("banking", "Banking77 held-out test accuracy", "accuracy", 0.85, _banking),
]}


class ProgressReporter(NullReporter):
    """NullReporter that prints the step, its total and the latest metrics at most every ``every`` seconds:
    a full run trains for tens of minutes per dataset."""

    def __init__(self, checkpoint_dir: Path, label: str, every: float = 60.0) -> None:
        super().__init__(checkpoint_dir)
        self.label, self.every, self._last, self._step = label, every, time.monotonic(), -1

    def progress(self, step: int, total: int | None = None, **metrics: float) -> None:
        if step == self._step or (time.monotonic() - self._last < self.every and step != total):
            return
        self._last, self._step = time.monotonic(), step
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in metrics.items())
        print(f"[{self.label}] step {step:,}/{total or '?'}{'; ' + shown if shown else ''}", flush=True)


def run(rt: Runtime, bench: Benchmark, hp: dict[str, int]) -> tuple[float, dict, float]:
    """Fine-tune with the defaults (``hp`` only limits rows) and return (score, report, seconds)."""
    env = TrainEnv.of(rt)
    ref = bench.dataset(rt)
    plan = plan_training(env, TrainSpec.parse({"base": MINILM, "dataset": ref, "hyperparameters": hp,
                                               "name": f"bench-{bench.key}"}))
    cfg = plan.config
    print(f"[{bench.key}] {plan.dataset.ref}: {len(plan.splits.train):,} training rows, "
          f"{len(plan.splits.validation):,} validation, report on {plan.splits.report_split} "
          f"({len(plan.splits.report):,}); method {plan.method.name}, epochs {cfg.epochs:g}, lr {cfg.learning_rate:g}, "
          f"batch {cfg.batch_size}, max_length {cfg.max_length}", flush=True)
    work = Path(tempfile.mkdtemp(prefix=f"llmos-quality-{bench.key}-"))
    started = time.perf_counter()
    try:
        result = run_plan(plan, env, ProgressReporter(work / "checkpoints", bench.key), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result.report.metric(bench.metric), result.report.to_json(), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated: sst2, conll, banking")
    parser.add_argument("--max-train-rows", type=int, help="train on a seeded sample of this many rows")
    parser.add_argument("--max-eval-rows", type=int, help="validate and report on at most this many rows")
    parser.add_argument("--home", help="llmos home to use (default: a fresh temporary one; reuse it to skip "
                                       "the dataset imports)")
    args = parser.parse_args()
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BENCHMARKS]
    if unknown or not keys:
        parser.error(f"--only: unknown {unknown}; choose from {', '.join(BENCHMARKS)}")
    hp = {k: v for k, v in (("max_train_rows", args.max_train_rows), ("max_eval_rows", args.max_eval_rows)) if v}

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    rt = open_home(args.home)
    rows = []
    for key in keys:
        bench = BENCHMARKS[key]
        score, report, seconds = run(rt, bench, hp)
        rows.append((bench, score, report["rows"], seconds))
        print(f"[{key}] {bench.title}: {score:.4f} on {report['rows']:,} rows ({seconds:.0f} s)", flush=True)
    limited = f" (train rows capped at {args.max_train_rows:,})" if args.max_train_rows else ""
    print(f"\nminilm-l6 fine-tuned with llmos's defaults{limited}:")
    for bench, score, n, seconds in rows:
        verdict = "meets" if score >= bench.target else "BELOW"
        print(f"  {bench.title:<34} {score:.4f}  target >= {bench.target:.2f}  {verdict}  ({n:,} rows, {seconds:.0f} s)")


if __name__ == "__main__":
    main()
