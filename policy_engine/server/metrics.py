"""Prometheus metrics (``GET /metrics``), one registry per application. Every label
takes values from a closed set: effects, route templates (not raw paths), reload
results, and queue routes (declared by the policy; at most ``MAX_ROUTES``, the rest
counted as ``other``). Latencies are histograms in seconds.

With several worker processes (``stopline serve --workers N``) the counters and
histograms are prometheus_client's multiprocess mode: each worker writes its values to
files in ``PROMETHEUS_MULTIPROC_DIR`` (a fresh directory ``stopline serve`` creates and
removes, or the one the environment names), and a scrape, whichever worker answers it,
sums every worker's files, including those of a worker that was restarted. The queue
depth is read from the shared ledger at scrape time, so it is never summed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

EFFECTS = ("allow", "require_approval", "deny", "stop")
MAX_ROUTES = 50
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


#: the gauge's rule: a rollback the queue lists whose status at the scrape is not closed
#: (``runtime.projections.CLOSED``); the queue also lists one the clock has expired until
#: the sweeper records it (``status`` ``expired``, ``unrecorded``), which is not counted
QUEUE_DEPTH_HELP = ("Open rollbacks per route: pending, approved, in progress, partial or completed (not yet "
                    "verified) at the scrape; one the clock has expired is not counted, recorded or not")


class _QueueDepth:
    """Queue depth per route, read from the runtime at scrape time."""

    def __init__(self, depth: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self._depth = depth

    def collect(self) -> Iterable[Any]:
        g = GaugeMetricFamily("stopline_queue_depth", QUEUE_DEPTH_HELP, labels=["route"])
        try:
            rows = sorted(self._depth(), key=lambda r: -r[1])
        except Exception:  # noqa: BLE001 - a scrape never fails because the ledger is slow or down
            rows = []
        other = sum(n for _, n in rows[MAX_ROUTES:])
        for route, n in rows[:MAX_ROUTES]:
            g.add_metric([route], n)
        if other:
            g.add_metric(["other"], other)
        yield g


class _Claims:
    """Claims in doubt (decisions claimed for their execution, no execution recorded), read
    from the runtime at scrape time: how many, and the age of the oldest."""

    def __init__(self, read: Callable[[], tuple[int, float]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Any]:
        try:
            n, oldest = self._read()
        except Exception:  # noqa: BLE001 - a scrape never fails because the ledger is slow or down
            return
        yield GaugeMetricFamily("stopline_claims_in_doubt", "Decisions claimed for their execution with no "
                                "execution recorded (Runtime.claims_in_doubt)", value=n)
        yield GaugeMetricFamily("stopline_claim_oldest_seconds", "Age of the oldest claim in doubt (0: none)",
                                value=oldest)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess() -> bool:
    """True when this process's metric values live in ``PROMETHEUS_MULTIPROC_DIR`` (the
    variable was set before prometheus_client was first imported here)."""
    from prometheus_client import values

    return bool(os.environ.get(MULTIPROC_ENV)) and bool(getattr(values.ValueClass, "_multiprocess", False))


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess()
        self._collectors: list[Any] = []
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter("stopline_decisions", "Decisions by effect and interface", ["effect", "interface"],
                                 registry=r)
        self.latency = Histogram("stopline_request_duration_seconds", "Request latency by route template",
                                 ["route"], buckets=_BUCKETS, registry=r)
        self.evaluation = Histogram("stopline_evaluation_duration_seconds", "AuthZEN evaluation latency (one request)",
                                    buckets=_BUCKETS, registry=r)
        self.append = Histogram("stopline_ledger_append_duration_seconds",
                                "Ledger append latency of recorded decisions (one transaction)", buckets=_BUCKETS,
                                registry=r)
        self.reloads = Counter("stopline_policy_reloads", "Policy reloads by result", ["result"], registry=r)
        self.identity_reloads = Counter("stopline_identity_reloads", "Identities file reloads by result", ["result"],
                                        registry=r)
        self.problems = Counter("stopline_problems", "Problem responses by status", ["status"], registry=r)
        # children bound once: the hot path pays one dict lookup
        self._effect = {(e, i): self.decisions.labels(e, i) for e in EFFECTS for i in ("authzen", "native")}

    def decided(self, effect: str, interface: str) -> None:
        c = self._effect.get((effect, interface))
        if c is not None:
            c.inc()

    def watch_queue(self, depth: Callable[[], Iterable[tuple[str, int]]]) -> None:
        c = _QueueDepth(depth)
        self._collectors.append(c)
        self.registry.register(c)

    def watch_claims(self, read: Callable[[], tuple[int, float]]) -> None:
        c = _Claims(read)
        self._collectors.append(c)
        self.registry.register(c)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        scrape = CollectorRegistry()
        MultiProcessCollector(scrape)  # every worker's counters and histograms, summed
        for c in self._collectors:  # read from the shared ledger: this worker's view is everyone's
            scrape.register(c)
        return generate_latest(scrape), CONTENT_TYPE_LATEST
