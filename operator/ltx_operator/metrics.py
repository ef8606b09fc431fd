"""Operator metrics (prometheus-client), served on the metrics port, named by the
Prometheus guide: counters end in `_total` (the client adds it), durations in
`_seconds`, gauges carry no `_total`."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

JOBS_CREATED = Counter("ltx_operator_jobs_created", "Jobs created", ["stage"])
OUTCOMES = Counter("ltx_operator_outcomes", "Trainings finished, by reason", ["reason"])
BILLABLE_UNITS = Counter("ltx_operator_billable_units", "Billable units recorded")
STEPS_TRAINED = Counter("ltx_operator_steps_trained", "Optimization steps of succeeded runs")
GANG_RESTARTS = Counter("ltx_operator_gang_restarts", "Restarts of trainings on many nodes "
                        "as a whole, by cause (failure: counted; disruption: not)", ["cause"])
RECONCILE_ERRORS = Counter("ltx_operator_reconcile_errors", "Handler runs that raised",
                           ["handler"])
_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400)
TIME_TO_TRAIN_JOB = Histogram("ltx_operator_time_to_train_job_seconds",
                              "From the resource's creation to its train Job", buckets=_BUCKETS)
TIME_TO_FINISH = Histogram("ltx_operator_time_to_finish_seconds",
                           "From the resource's creation to its outcome", ["outcome"],
                           buckets=_BUCKETS)

#: phase of each watched resource, fed by the watch itself (derived data, for metrics)
PHASES: dict[tuple[str, str], str] = {}


class _PhaseCollector:
    def collect(self):
        family = GaugeMetricFamily("ltx_operator_resources", "Resources by phase",
                                   labels=["phase"])
        for phase, count in sorted(Tally(PHASES.values()).items()):
            family.add_metric([phase], count)
        yield family


REGISTRY.register(_PhaseCollector())

_served: list[int] = []


def serve(port: int) -> None:
    """Start the /metrics endpoint once per process (port 0: do not serve)."""
    if port and port not in _served:
        start_http_server(port)
        _served.append(port)
