"""Learning: fine-tune any stored model on any dataset with one training loop for every task and method.

``llmos.train.task_kinds`` (classify / tag / sft) and ``llmos.train.methods`` (full / lora / prompt / prefix / dpo)
are registries; ``plan`` checks a request before a job is queued; ``runner`` is the one training loop
(``transformers.Trainer`` with llmos's callbacks); ``evaluate`` writes the reports; ``job`` is the
``train`` job kind that ties them together and registers the result with its lineage; ``export``
writes a stored model as a merged Hugging Face folder. Importing this package loads no torch.
"""

from llmos.jobs.kinds import register_job_kind
from llmos.train.config import Hyperparameters, TrainConfig, TrainSpec
from llmos.train.methods import Method, get_method, method_names, register_method
from llmos.train.plan import TrainEnv, TrainPlan, plan_training
from llmos.train.task_kinds import TrainTask, get_task, register_task, task_names
from llmos.train import sft as _sft  # noqa: F401  - registers "sft" beside the encoder tasks
from llmos.train import preference as _preference  # noqa: F401  - registers "dpo" beside the PEFT methods

__all__ = ["Hyperparameters", "Method", "TrainConfig", "TrainEnv", "TrainPlan", "TrainSpec", "TrainTask", "get_method",
           "get_task", "method_names", "plan_training", "register_method", "register_task", "task_names"]

# The job kinds this package owns (entries are imported lazily, in the runner process).
register_job_kind("train", "llmos.train.job:train_job")  # fine-tuning
register_job_kind("tune", "llmos.train.hpo:tune_job", driver=True)  # hyperparameter search: waits on its trials
