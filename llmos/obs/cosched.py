"""Co-scheduling counters for ``/metrics``: how often jobs yielded to interactive load, and their share.

Read from ``CoScheduler.stats()`` at scrape time, like the other state collectors: the co-scheduler
is the truth and keeps its own monotonic counters.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmos.jobs.cosched import CoScheduler


class CoschedCollector(Collector):
    def __init__(self, cosched: CoScheduler) -> None:
        self.cosched = cosched

    def collect(self) -> Iterator[Metric]:
        s = self.cosched.stats()
        pauses = CounterMetricFamily("llmos_cosched_pauses", "Jobs paused, by reason", labels=["reason"])
        pauses.add_metric(["interactive_load"], s.pauses)
        pauses.add_metric(["memory"], s.memory_pauses)
        yield pauses
        yield CounterMetricFamily("llmos_cosched_resumes", "Jobs resumed after interactive load", value=s.resumes)
        yield CounterMetricFamily("llmos_cosched_share_resumes",
                                  "Holds lifted early to give jobs their minimum share", value=s.share_resumes)
        yield CounterMetricFamily("llmos_cosched_memory_waits",
                                  "Times a queued job was kept waiting because it did not fit in memory",
                                  value=s.memory_waits)
        yield CounterMetricFamily("llmos_cosched_held_seconds", "Seconds live jobs spent held for traffic",
                                  value=s.held_s)
        yield GaugeMetricFamily("llmos_cosched_holding", "1 while jobs are held for interactive load",
                                value=1.0 if s.holding else 0.0)
        if s.run_share is not None:
            yield GaugeMetricFamily("llmos_cosched_job_share", "Share of wall time jobs ran over the window",
                                    value=s.run_share)
