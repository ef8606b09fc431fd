"""Operator metrics (prometheus-client), served on the metrics port."""

from __future__ import annotations

from prometheus_client import Counter, start_http_server

JOBS_CREATED = Counter("ltx_operator_jobs_created", "Jobs created", ["stage"])
OUTCOMES = Counter("ltx_operator_outcomes", "Trainings finished, by reason", ["reason"])
BILLABLE_UNITS = Counter("ltx_operator_billable_units", "Billable units recorded")
STEPS_TRAINED = Counter("ltx_operator_steps_trained", "Optimization steps of succeeded runs")

_served: list[int] = []


def serve(port: int) -> None:
    """Start the /metrics endpoint once per process (port 0: do not serve)."""
    if port and port not in _served:
        start_http_server(port)
        _served.append(port)
