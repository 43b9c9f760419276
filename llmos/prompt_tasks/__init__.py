"""Prompt-defined tasks: classification and extraction from a template, labels and examples, no training.

``spec`` says what a task is, ``store`` keeps it as a model version (kind ``prompt_task``), ``serve``
runs it through the kernel for /v1/classify and /v1/tag, and ``evaluate`` scores it on a dataset.
"""

from llmos.prompt_tasks.spec import PromptTaskSpec, build_spec, method_for
from llmos.prompt_tasks.store import KIND, create_prompt_task, spec_of
from llmos.store.manifest import is_prompt_task, parent_ref

__all__ = ["KIND", "PromptTaskSpec", "build_spec", "create_prompt_task", "is_prompt_task", "method_for",
           "parent_ref", "spec_of"]
