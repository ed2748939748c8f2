"""``GET /metrics``: request counts, errors and a latency histogram in the Prometheus text format.

prometheus_client (pure Python) writes the exposition format; each app has a registry of its own, so two apps
in one process (tests) never share counters. The ``model`` label only ever holds the name of a served model
(else ""), so a client requesting random URLs cannot grow the label set without bound.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

#: Seconds. A digits model answers in ~1 ms, a detector in a few, a big batch or a busy Pi in 10s to 100s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Route handler name -> the ``endpoint`` label.
ENDPOINTS = {"predict": "predict", "list_models": "models", "show_model": "model", "healthz": "healthz",
             "exposition": "metrics", "page": "page", "asset": "page"}


class Metrics:
    """The service's counters; ``middleware`` records every HTTP request, whatever answered it."""

    def __init__(self, model_names):
        self.model_names = set(model_names)
        self.registry = CollectorRegistry()
        labels = ["endpoint", "model", "code"]
        self.requests = Counter("edgecnn_requests", "HTTP requests answered, by endpoint, model and status.",
                                labels, registry=self.registry)
        self.errors = Counter("edgecnn_request_errors", "HTTP requests answered with a 4xx or 5xx status.",
                              labels, registry=self.registry)
        self.latency = Histogram("edgecnn_request_duration_seconds",
                                 "Time from the request's arrival to the end of its answer.",
                                 ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inputs = Counter("edgecnn_inputs", "Images or texts run through a model.", ["model"],
                              registry=self.registry)
        self.in_progress = Gauge("edgecnn_requests_in_progress", "HTTP requests being answered now.",
                                 registry=self.registry)

    def observe(self, endpoint: str, model: str, code: int, seconds: float) -> None:
        model = model if model in self.model_names else ""
        self.requests.labels(endpoint, model, str(code)).inc()
        if code >= 400:
            self.errors.labels(endpoint, model, str(code)).inc()
        self.latency.labels(endpoint, model).observe(seconds)

    def count_inputs(self, model: str, count: int) -> None:
        self.inputs.labels(model).inc(count)

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of the text exposition format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def middleware(self, app):
        """An ASGI middleware around ``app`` that times and counts every HTTP request."""

        async def record(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            started = time.perf_counter()
            status = [500]  # what an exception that escapes the app becomes

            async def send_and_note(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            self.in_progress.inc()
            try:
                await app(scope, receive, send_and_note)
            finally:
                self.in_progress.dec()
                # the router wrote the matched endpoint and path parameters into this same scope
                endpoint = ENDPOINTS.get(getattr(scope.get("endpoint"), "__name__", ""), "none")
                model = (scope.get("path_params") or {}).get("name", "")
                self.observe(endpoint, model, status[0], time.perf_counter() - started)

        return record
