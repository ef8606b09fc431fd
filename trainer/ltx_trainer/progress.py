"""The progress channel: `/progress` (JSON) and `/metrics` (Prometheus) over HTTP.

Training pods need no Kubernetes API access: the operator (and a PodMonitor) pull
from this port instead.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ltx_contract.progress import ProgressReport
from ltx_contract.resource import Validation

log = logging.getLogger(__name__)


class ProgressState:
    """What the trainer reports; thread-safe snapshot for the server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report = ProgressReport(updated=time.time())
        self.registry = CollectorRegistry()
        self._step = Gauge("ltx_extend_train_step", "Optimization steps done",
                           registry=self.registry)
        self._total = Gauge("ltx_extend_train_total_steps", "Optimization steps in all",
                            registry=self.registry)
        self._loss = Gauge("ltx_extend_train_loss", "Latest training loss",
                           registry=self.registry)
        self._rate = Gauge("ltx_extend_train_steps_per_second", "Training speed",
                           registry=self.registry)
        self._eta = Gauge("ltx_extend_train_eta_seconds", "Estimated seconds to the last step",
                          registry=self.registry)
        self._modality_loss = Gauge("ltx_extend_train_modality_loss",
                                    "Latest training loss of each trained modality",
                                    ["modality"], registry=self.registry)
        self._validation = Gauge("ltx_extend_train_validation_loss",
                                 "Latest validation loss (held-out clips, fixed noise)",
                                 registry=self.registry)
        self._stages = Counter("ltx_extend_stage_changes", "Stage changes", ["stage"],
                               registry=self.registry)

    def stage(self, name: str) -> None:
        log.info("stage: %s", name)
        with self._lock:
            self._report = self._report.model_copy(update={"stage": name,
                                                           "updated": time.time()})
        self._stages.labels(stage=name).inc()

    def step(self, step: int, total: int, loss: float, rate: float, eta: float,
             losses: dict[str, float] | None = None) -> None:
        """One optimizer step done; `losses` are the per-modality ones (and "total")."""
        with self._lock:
            self._report = self._report.model_copy(update={
                "step": step, "total_steps": total, "loss": round(loss, 6),
                "steps_per_second": round(rate, 4), "eta_seconds": round(eta, 1),
                "updated": time.time()})
        self._step.set(step)
        self._total.set(total)
        self._loss.set(loss)
        self._rate.set(rate)
        self._eta.set(eta)
        for modality, value in (losses or {}).items():
            if modality != "total":
                self._modality_loss.labels(modality=modality).set(value)

    def validation(self, figures: Validation) -> None:
        """A validation loss was computed: the latest and the best so far."""
        with self._lock:
            self._report = self._report.model_copy(update={"validation": figures,
                                                           "updated": time.time()})
        self._validation.set(figures.loss)

    def snapshot(self) -> ProgressReport:
        with self._lock:
            return self._report


class ProgressServer:
    """Serves a ProgressState on `port` (0 picks a free one) in a daemon thread."""

    def __init__(self, state: ProgressState, port: int, host: str = "0.0.0.0"):
        self.state = state

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/progress"):
                    body, kind = state.snapshot().to_json().encode(), "application/json"
                elif self.path.startswith("/metrics"):
                    body, kind = generate_latest(state.registry), CONTENT_TYPE_LATEST
                elif self.path.startswith("/healthz"):
                    body, kind = b"ok", "text/plain"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ProgressServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
