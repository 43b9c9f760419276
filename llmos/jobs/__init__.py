"""Background jobs (fine-tunes, evaluations, tuning studies) as runner processes the daemon owns.

The public surface: ``JobRunner`` (submit, start, pause, resume, cancel, recover), the job records
and states, ``JobContext`` (what a job kind's function gets in its runner) and the kind registry.
"""

from llmos.jobs.context import JobContext, JobStop
from llmos.jobs.kinds import job_kinds, register_job_kind
from llmos.jobs.runner import JobRunner
from llmos.jobs.types import API_STATES, TRANSITIONS, Control, JobEventInfo, JobInfo, JobProgress, JobState

__all__ = ["API_STATES", "TRANSITIONS", "Control", "JobContext", "JobEventInfo", "JobInfo", "JobProgress",
           "JobRunner", "JobState", "JobStop", "job_kinds", "register_job_kind"]
