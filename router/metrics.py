"""Prometheus metrics for the router, in a registry owned by the app (none at module level)."""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

M = TypeVar("M", Counter, Gauge, Histogram)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TPOT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "switchyard_requests", "Chat requests by API and outcome", ["api", "outcome"], registry=r
        )
        self.decisions = Counter(
            "switchyard_route_decisions",
            "Routing decisions by target and rule",
            ["target", "rule"],
            registry=r,
        )
        self.routed = Counter(
            "switchyard_routed", "Requests served, by the tier that served them", ["target"], registry=r
        )
        self.fallbacks = Counter(
            "switchyard_fallbacks",
            "Requests served by a fallback tier or node",
            ["from_target", "to_target"],
            registry=r,
        )
        self.errors = Counter("switchyard_errors", "Errors answered to clients by code", ["code"], registry=r)
        self.ttft = Histogram(
            "switchyard_ttft_seconds",
            "Time to first token by target",
            ["target"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "switchyard_time_per_output_token_seconds",
            "Time per output token after the first, by target",
            ["target"],
            buckets=_TPOT_BUCKETS,
            registry=r,
        )
        self.completion_tokens = Counter(
            "switchyard_completion_tokens", "Tokens generated, by target", ["target"], registry=r
        )
        self.policy_reloads = Counter(
            "switchyard_policy_reloads",
            "Policy file reloads by outcome (ok, invalid)",
            ["outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "switchyard_rejected", "Requests refused at admission, by reason", ["reason"], registry=r
        )
        self.cache = Counter("switchyard_cache", "Prompt cache look-ups by result", ["result"], registry=r)
        self.cloud_share = Gauge(
            "switchyard_cloud_share", "Share of recent requests served by the cloud tier", registry=r
        )
        self.score_threshold = Gauge(
            "switchyard_score_threshold",
            "Difficulty score threshold in use (calibrated policies)",
            registry=r,
        )
        self.active_streams = Gauge("switchyard_active_streams", "Chats streaming now", registry=r)
        self.nodes_connected = Gauge(
            "switchyard_nodes_connected", "Connected nodes by tier", ["target"], registry=r
        )

        # The children the hot path touches on every request, cached (``labels`` validates its
        # arguments and takes a lock on every call: about 1.5 us, several times a request).
        self.requests_by = Labelled(self.requests)
        self.decisions_by = Labelled(self.decisions)
        self.routed_by = Labelled(self.routed)
        self.ttft_by = Labelled(self.ttft)
        self.tpot_by = Labelled(self.tpot)
        self.completion_tokens_by = Labelled(self.completion_tokens)
        self.cache_by = Labelled(self.cache)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Labelled(Generic[M]):
    """The children of a labelled metric, by label values, made once each.

    Only for labels with a small, bounded set of values (targets, rules, outcomes): every child is kept.
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child
