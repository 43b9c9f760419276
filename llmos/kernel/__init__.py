"""The kernel: request queues, the scheduler, the resource manager and background jobs."""
