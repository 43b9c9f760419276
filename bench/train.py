"""Training throughput of an llmos fine-tuning job against a plain ``transformers.Trainer`` run on the
same model (minilm-l6 as an SST-2 classifier), the same rows (an SST-2 slice, encoded by the same
plan) and the same Trainer settings (``llmos.train.runner.training_args``), measured in one run.

The llmos side is a real ``train`` job: its own runner process, progress and events in the database,
pause points at every step, atomic (fsynced) checkpoints, early stopping. The baseline is Trainer
alone in this process. Both report Trainer's ``train_samples_per_second`` (training rows over the
wall time of ``train()``, validation and checkpoint saves included); runs alternate, medians compared.

    .venv/bin/python bench/train.py [--rows 1024] [--epochs 1] [--repeat 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.trainkit import DATASETS, MINILM, head_lines, import_splits, open_home, scratch  # noqa: E402
from llmos.jobs import JobRunner, JobState  # noqa: E402
from llmos.runtime import Runtime  # noqa: E402
from llmos.train import TrainEnv, TrainSpec, plan_training  # noqa: E402
from llmos.train.plan import TrainPlan  # noqa: E402


def plain_trainer(plan: TrainPlan, env: TrainEnv) -> float:
    """Samples/s of plain Trainer on the plan's rows and settings, without llmos's callbacks."""
    from transformers import AutoTokenizer, Trainer
    from transformers.trainer_callback import PrinterCallback

    from llmos.train.runner import ListDataset, _argmax, training_args

    task, cfg = plan.task, plan.config
    base_dir = env.registry.snapshot(plan.base)
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    model = plan.method.wrap(task.load_model(base_dir, plan.labels, tokenizer), task, cfg)
    out = Path(tempfile.mkdtemp(prefix="llmos-bench-trainer-"))
    try:
        trainer = Trainer(
            model=model, args=training_args(cfg, out, task.metric, task.greater_is_better),
            data_collator=task.collator(tokenizer),
            train_dataset=ListDataset(task.encode(plan.splits.train, tokenizer, plan.labels, cfg, None)),
            eval_dataset=ListDataset(task.encode(plan.splits.validation, tokenizer, plan.labels, cfg, None)),
            compute_metrics=task.compute_metrics(plan.labels), preprocess_logits_for_metrics=_argmax)
        trainer.remove_callback(PrinterCallback)  # the same quiet log as llmos's run
        return float(trainer.train().metrics["train_samples_per_second"])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def llmos_job(jobs: JobRunner, plan: TrainPlan, rt: Runtime) -> float:
    """Samples/s of a real ``train`` job (Trainer's own figure, recorded with the result)."""
    job_id = jobs.submit("train", plan.spec.model_dump(mode="json"))
    info = jobs.wait(job_id, timeout=3600)
    if info.state != JobState.SUCCEEDED:
        raise RuntimeError(f"job {job_id} {info.state.api}: {info.error}")
    for tag in (info.result_model, "bench-train:latest"):  # the next repeat starts the series afresh
        rt.store.registry.remove(tag)
    return float(info.result["training"]["samples_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1024, help="SST-2 training rows")
    parser.add_argument("--eval-rows", type=int, default=256, help="SST-2 dev rows for validation")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs (alternating)")
    parser.add_argument("--home", help="llmos home to use (default: a fresh temporary one)")
    args = parser.parse_args()

    rt = open_home(args.home)
    tmp = scratch()
    name = f"sst2-bench-{args.rows}-{args.eval_rows}"
    import_splits(rt, name, [(head_lines(DATASETS / "sst2/train.tsv", args.rows, tmp / "train.tsv"), "train"),
                             (head_lines(DATASETS / "sst2/dev.tsv", args.eval_rows, tmp / "dev.tsv"), "validation")])
    env = TrainEnv.of(rt)
    hp = {"epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length}
    plan = plan_training(env, TrainSpec.parse({"base": MINILM, "dataset": name, "method": "full",
                                               "hyperparameters": hp, "name": "bench-train"}))
    jobs = JobRunner(rt)
    jobs.startup()
    ours, plain = [], []
    try:
        for _ in range(args.repeat):
            started = time.perf_counter()
            plain.append(plain_trainer(plan, env))
            print(f"plain Trainer: {plain[-1]:.1f} samples/s ({time.perf_counter() - started:.0f} s with loading)",
                  flush=True)
            started = time.perf_counter()
            ours.append(llmos_job(jobs, plan, rt))
            print(f"llmos job:     {ours[-1]:.1f} samples/s ({time.perf_counter() - started:.0f} s with its runner "
                  "start, loading and report)", flush=True)
    finally:
        jobs.shutdown(timeout=30)
    o, p = statistics.median(ours), statistics.median(plain)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{MINILM} full fine-tune, {len(plan.splits.train)} SST-2 rows x {args.epochs:g} epoch(s), batch "
          f"{args.batch_size}, max_length {args.max_length}, validation on {len(plan.splits.validation)} rows, {device}")
    print(f"ratio: llmos {o:.1f} / plain Trainer {p:.1f} samples/s = {o / p:.3f}x (target >= 0.95x)")


if __name__ == "__main__":
    main()
