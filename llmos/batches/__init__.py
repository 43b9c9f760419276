"""OpenAI's Batches API underneath: a batch is a background job (kind ``batch``) whose runner sends the
input file's requests, one at a time, to the daemon's own public routes as the key that made it.

The kernel stays the only thing that runs models; the runner is a small client that the co-scheduler
freezes while interactive requests run and that resumes in the gaps, like a fine-tune. Its checkpoint
is its journal: one line per finished input line, appended whole, so a killed runner resumes with no
request twice in the output file.
"""

from llmos.batches.spec import ENDPOINTS, BatchCounts, BatchFiles, BatchSpec, batch_id, job_id_of
from llmos.jobs.kinds import register_job_kind

register_job_kind("batch", "llmos.batches.job:batch_job")

__all__ = ["BatchCounts", "BatchFiles", "BatchSpec", "ENDPOINTS", "batch_id", "job_id_of"]
