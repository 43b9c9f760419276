"""The first round of a loop whose serving version is a prompt task: no dataset, no weights of its own.

Its users' feedback is the only data there is, so the round's dataset is made of it alone:

* every corrected item (the right label or spans), and every answer a user confirmed (a classify or
  tag answer rated +1, or a row a correction list left ``null``), deduplicated by input text, the
  newest word winning;
* a stable share of those texts (``holdout``, the seeded hash the other rounds use) is held out as the
  ``test`` split the gate scores the prompt task and the candidate on; the rest trains.

The candidate learns the task with a head on an encoder: the prompt task's own base when it is one
(a ``similarity`` task over MiniLM), else the built-in ``minilm-l6`` (a generator base is far slower to
fine-tune for the same labels); the policy's ``first_base`` picks another. It is published as the next
version of the prompt task's name, so a won canary re-points ``NAME:latest`` to it and the prompt task
stays readable as the version the loop started from. Later rounds retrain it like any fine-tuned version.
"""

from __future__ import annotations

from llmos.data.info import DatasetInfo, Derivation
from llmos.data.registry import Datasets
from llmos.data.rows import Row, Task, input_text
from llmos.errors import InvalidInput
from llmos.feedback.rounds import stable_fraction
from llmos.feedback.shapes import Example, to_rows
from llmos.prompt_tasks.store import spec_of
from llmos.store.manifest import ModelInfo
from llmos.store.registry import Registry

ENCODER = "minilm-l6"
TASK_OF_KIND = {"classify": Task.classify, "extract": Task.tag}


def first_base(registry: Registry, task: ModelInfo, tenant: str, chosen: str | None) -> str:
    """The model the first fine-tuned version trains from (see the module's docstring)."""
    if chosen:
        return registry.get(chosen, tenant=tenant).ref
    if spec_of(task).method == "similarity" or registry.find(ENCODER, tenant=tenant) is None:
        lin = task.manifest.lineage
        assert lin.base is not None  # every prompt task records the model it runs on
        return lin.base.ref
    return ENCODER


def feedback_rows(examples: list[Example], holdout: float, seed: int) -> list[Row]:
    """One row per fed-back input text (the newest word on it wins), ``train`` or held-out ``test`` by the
    seeded hash every round uses."""
    latest: dict[str, Row] = {}
    for row in to_rows(sorted(examples, key=lambda e: e.feedback_id)):
        latest[input_text(row)] = row
    return [r.model_copy(update={"split": "test" if stable_fraction(seed, t) < holdout else "train"})
            for t, r in latest.items()]


def build_first_round(datasets: Datasets, name: str, task_info: ModelInfo, corrected: list[Example],
                      confirmed: list[Example], holdout: float, seed: int) -> tuple[DatasetInfo, int, int]:
    """Register ``<name>-feedback`` v1 from the feedback alone: ``train`` and held-out ``test`` rows."""
    task = TASK_OF_KIND[spec_of(task_info).kind]
    rows = feedback_rows([e for e in corrected + confirmed if e.route == task.value], holdout, seed)
    trained = [r for r in rows if r.split == "train"]
    held = [r for r in rows if r.split == "test"]
    if not trained or not held:
        raise InvalidInput(f"{len(rows)} distinct fed-back input(s) for {name}: too few to both train and hold "
                           f"out {holdout:.0%}; the round waits for more feedback")
    derivation = Derivation(operation="feedback", params={"root": None, "prompt_task": task_info.ref,
                                                          "holdout": holdout, "seed": seed},
                            report={"feedback_train_rows": len(trained), "feedback_held_out_rows": len(held),
                                    "corrected_items": len(corrected), "confirmed_items": len(confirmed)})
    info = datasets.register_rows(f"{name}-feedback", rows, parent=None, derivation=derivation, task=task)
    return info, len(trained), len(held)
