"""Prometheus metrics with vLLM/TGI-style names, in a registry of the app's own (not the global one)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select

from genloom.serve.database import JOB_STATES, Job


class Metrics:
    TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0)
    TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
    E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0)

    def __init__(self):
        r = self.registry = CollectorRegistry()
        m = ["model_name"]
        self.running = Gauge("genloom:num_requests_running", "Requests in the engine's running batch.", m, registry=r)
        self.waiting = Gauge("genloom:num_requests_waiting", "Requests waiting in the engine's queue.", m, registry=r)
        self.ttft = Histogram("genloom:time_to_first_token_seconds", "Time from submit to the first token.", m,
                              buckets=self.TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("genloom:time_per_output_token_seconds", "Time between consecutive output tokens.",
                              m, buckets=self.TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("genloom:e2e_request_latency_seconds", "Time from submit to the last event.", m,
                             buckets=self.E2E_BUCKETS, registry=r)
        self.prompt_tokens = Counter("genloom:prompt_tokens", "Prompt tokens processed.", m, registry=r)
        self.generation_tokens = Counter("genloom:generation_tokens", "Tokens generated.", m, registry=r)
        self.success = Counter("genloom:request_success", "Finished engine requests by finish reason.",
                               m + ["finished_reason"], registry=r)
        self.images = Counter("genloom:images_generated", "Images generated.", m, registry=r)
        self.jobs = Gauge("genloom:fine_tuning_jobs", "Fine-tuning jobs by status.", ["status"], registry=r)

    def render(self, models: dict, db=None) -> bytes:
        """The text exposition, with the gauges (engine queues, jobs by status) read now."""
        if db is not None:
            with db.session() as s:
                counts = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            for status in JOB_STATES:
                self.jobs.labels(status).set(counts.get(status, 0))
        for name, served in models.items():
            if served.engine is None:  # image models have no decode engine
                continue
            stats = served.engine.stats()
            self.running.labels(name).set(stats.get("running", 0))
            self.waiting.labels(name).set(stats.get("waiting", 0))
        return generate_latest(self.registry)

    async def watch(self, handle, model: str, t0: float):
        """Pass a handle's events through, timing the first token, each next one and the whole request."""
        first = last = None
        reason = "cancelled"
        try:
            async for ev in handle.aevents():
                now = time.perf_counter()
                if ev.token is not None:
                    if first is None:
                        first = now
                        self.ttft.labels(model).observe(now - t0)
                    else:
                        self.tpot.labels(model).observe(now - last)
                    last = now
                if ev.finish_reason:
                    reason = ev.finish_reason
                yield ev
        except Exception:
            reason = "error"
            raise
        finally:
            self.e2e.labels(model).observe(time.perf_counter() - t0)
            self.prompt_tokens.labels(model).inc(handle.prompt_tokens or 0)
            self.generation_tokens.labels(model).inc(handle.completion_tokens or 0)
            self.success.labels(model, reason).inc()
