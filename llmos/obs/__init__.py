"""Observability: Prometheus metrics (``/metrics``) and alert rules evaluated by the daemon.

metrics.py (event instruments + rolling windows + middleware), collector.py (state read at scrape
time), canary.py (the feedback loop's hook), rules.py (the YAML schema), measure.py (what each rule
kind measures), alerts.py (the evaluator thread and delivery), routes.py (routes and wiring).
"""
