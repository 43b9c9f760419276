"""Learning: fine-tune any stored model on any dataset with one training loop for every task and method.

``llmos.train.tasks`` (classify / tag / sft) and ``llmos.train.methods`` (full / lora / prompt / prefix)
are registries; ``plan`` checks a request before a job is queued; ``runner`` is the one training loop
(``transformers.Trainer`` with llmos's callbacks); ``evaluate`` writes the reports; ``job`` is the
``train`` job kind that ties them together and registers the result with its lineage; ``export``
writes a stored model as a merged Hugging Face folder. Importing this package loads no torch.
"""

from llmos.train.config import Hyperparameters, TrainConfig, TrainSpec
from llmos.train.methods import Method, get_method, method_names, register_method
from llmos.train.plan import TrainEnv, TrainPlan, plan_training
from llmos.train.tasks import TrainTask, get_task, register_task, task_names

__all__ = ["Hyperparameters", "Method", "TrainConfig", "TrainEnv", "TrainPlan", "TrainSpec", "TrainTask", "get_method",
           "get_task", "method_names", "plan_training", "register_method", "register_task", "task_names"]
