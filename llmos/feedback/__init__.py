"""The self-improvement loop, whole: feedback on responses (ratings and corrections stored with the
request they name, tenant-scoped), the rounds they make, the gate, the canary and promotion or
rollback (see docs/loop.md for how it decides)."""

from llmos.feedback.items import FeedbackIn, FeedbackOut, FeedbackStore
from llmos.feedback.shapes import Example, expected_shape, normalise, to_rows
from llmos.feedback.canary import CanaryRouter
from llmos.feedback.loop import Loop
from llmos.feedback.policy import LoopSettings, Policies
from llmos.jobs.kinds import register_job_kind

__all__ = ["CanaryRouter", "Example", "FeedbackIn", "FeedbackOut", "FeedbackStore", "Loop", "LoopSettings",
           "Policies", "expected_shape", "normalise", "to_rows"]

# The job kind this package owns: models scored on a dataset's splits (the loop's gate is one).
register_job_kind("evaluate", "llmos.feedback.evaluate_job:evaluate_job")
