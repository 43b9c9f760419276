"""The preference method ``dpo``: planned like any method (refused without pairs, or for a task it cannot
train), run by the one training loop with TRL's DPO loss on a LoRA adapter of the real SmolLM2 and real
code_alpaca pairs, published as an adapter; a diverging loss fails the run before anything is saved."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llmos.data import ImportOptions
from llmos.data.rows import Task
from llmos.errors import InvalidInput
from llmos.train.config import TrainSpec
from llmos.train.job import RunResult, publish, run_plan
from llmos.train.methods import get_method
from llmos.train.plan import TrainEnv, TrainPlan, plan_training
from llmos.train.preference import _divergence_guard, pair_record
from llmos.train.runner import NullReporter
from llmos.train.task_kinds import get_task
from tests.train.conftest import MINILM, SMOL, Home
from tests.conftest import ModuleDirs


@pytest.fixture(scope="module")
def pairs_dataset(home: Home, datasets: Path) -> str:
    home.add_builtin(SMOL)
    home.add_builtin(MINILM)
    rows = json.loads((datasets / "code_alpaca_2k/code_alpaca_2k.json").read_text())
    short = [r for r in rows if not r["input"] and len(r["instruction"]) + len(r["output"]) < 120][:20]
    pairs = [{"instruction": r["instruction"], "output": r["output"], "rejected": "I cannot help with that."}
             for r in short[:6]]
    plain = [{"instruction": r["instruction"], "output": r["output"]} for r in short[6:]]
    folder = home.root.parent / "slices"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs + plain))
    (folder / "plain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in plain))
    home.datasets.import_file(folder / "plain.jsonl", "plain", ImportOptions(task="sft"))
    return home.datasets.import_file(folder / "pairs.jsonl", "prefs", ImportOptions(task="sft")).ref


def env(home: Home) -> TrainEnv:
    return TrainEnv(home.rt.store.registry, home.datasets)


def spec(dataset: str, base: str = SMOL, method: str = "dpo", start_from: str | None = None,
         **hp: object) -> TrainSpec:
    return TrainSpec.parse({"base": base, "dataset": dataset, "method": method, "name": "prefs-helper",
                            "hyperparameters": dict(hp), "start_from": start_from})


def test_dpo_is_refused_without_pairs_or_for_a_classifier(home: Home, pairs_dataset: str) -> None:
    with pytest.raises(InvalidInput, match="no preference pair"):
        plan_training(env(home), spec("plain"))
    with pytest.raises(InvalidInput, match="trains chat models"):  # the method's own check, for a classifier
        get_method("dpo").check(get_task(Task.classify), home.rt.store.registry.get(MINILM))


def test_a_pair_becomes_trls_conversational_record(home: Home, pairs_dataset: str) -> None:
    plan = plan_training(env(home), spec(pairs_dataset))
    record = pair_record(next(r for r in plan.splits.train if r.rejected))
    assert record["prompt"][-1]["role"] == "user" and record["chosen"][0]["role"] == "assistant"
    assert record["rejected"] == [{"role": "assistant", "content": "I cannot help with that."}]


def test_a_diverging_loss_fails_the_run() -> None:
    class State:
        global_step = 3

    guard = _divergence_guard()
    guard.on_log(None, State(), None, logs={"loss": 0.7})  # a finite loss passes
    with pytest.raises(FloatingPointError, match="diverged: loss nan at step 3"):
        guard.on_log(None, State(), None, logs={"loss": math.nan})


@pytest.fixture(scope="module")
def dpo_run(home: Home, pairs_dataset: str, module_dirs: ModuleDirs) -> tuple[TrainPlan, RunResult]:
    tmp = module_dirs("dpo")
    plan = plan_training(env(home), spec(pairs_dataset, max_steps=2, batch_size=2, max_length=96, lora_r=4,
                                         report_rows=2, max_new_tokens=8))
    return plan, run_plan(plan, env(home), NullReporter(tmp / "ckpt"), tmp)


@pytest.mark.slow
def test_dpo_trains_a_lora_adapter_in_the_one_loop(home: Home, dpo_run: tuple[TrainPlan, RunResult]) -> None:
    plan, result = dpo_run
    assert plan.method is get_method("dpo") and len(plan.splits.train) >= 16
    assert result.kind == "adapter" and (result.folder / "adapter_model.safetensors").is_file()
    assert result.outcome is not None and result.outcome.global_step == 2
    losses = [h["loss"] for h in result.outcome.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert any("rewards/margins" in h for h in result.outcome.log_history)  # TRL's DPO loss ran
    info = publish(home.rt.store.importer, home.rt.store.registry, plan, result, "job-dpo")
    assert info.manifest.kind == "adapter" and info.manifest.lineage.method == "dpo"
    assert info.manifest.chat_template == home.rt.store.registry.get(SMOL).manifest.chat_template
    assert "started_from" not in info.manifest.lineage.model_dump()  # a fresh adapter records no start


def test_start_from_must_be_a_lora_adapter_over_the_same_base(home: Home, pairs_dataset: str) -> None:
    with pytest.raises(InvalidInput, match="must name a LoRA adapter") as bad:
        plan_training(env(home), spec(pairs_dataset, start_from=SMOL))
    assert bad.value.details["param"] == "start_from"
    with pytest.raises(InvalidInput, match="trains no LoRA adapter"):
        plan_training(env(home), spec(pairs_dataset, method="full", start_from=SMOL))


@pytest.mark.slow
def test_dpo_continues_a_stored_adapter_and_saves_it_alone(home: Home, dpo_run: tuple[TrainPlan, RunResult],
                                                           tmp_path: Path) -> None:
    """The loop's preference rounds start from the serving adapter: the run begins at its weights (not a
    fresh LoRA, whose B matrices are zero) and publishes one adapter, not TRL's reference copy beside it."""
    from safetensors.torch import load_file

    plan, result = dpo_run
    reg = home.rt.store.registry
    started = publish(home.rt.store.importer, reg, plan, result, "job-dpo-start")
    start = started.ref
    smol = reg.get(SMOL)  # the same weights under another manifest: another base as far as lineage goes
    reg.add("smol-twin:v1", smol.manifest.model_copy(update={"source": "twin"}))
    with pytest.raises(InvalidInput, match="was trained over .* not smol-twin:v1"):
        plan_training(env(home), spec(plan.dataset.ref, base="smol-twin:v1", start_from=start))
    cont = plan_training(env(home), spec(plan.dataset.ref, start_from=start, max_steps=1, batch_size=2, max_length=96,
                                         learning_rate=1e-9, report_rows=1, max_new_tokens=4))
    assert cont.start is not None and cont.record().start_from is not None
    again = run_plan(cont, env(home), NullReporter(tmp_path / "ckpt"), tmp_path)
    assert not (again.folder / "ref").exists()  # only the trained adapter is saved
    before = load_file(str(reg.snapshot(started) / "adapter_model.safetensors"))
    after = load_file(str(again.folder / "adapter_model.safetensors"))
    b = [k for k in before if "lora_B" in k]
    assert b and set(after) == set(before)
    assert max(float(before[k].abs().max()) for k in b) > 0  # the start was trained: its B is not zero
    assert all(torch.allclose(after[k], before[k], atol=1e-6) for k in b)  # one step at lr 1e-9 keeps it
    info = publish(home.rt.store.importer, reg, cont, again, "job-dpo-cont")
    assert info.manifest.lineage.started_from is not None and info.manifest.lineage.started_from.ref == start
