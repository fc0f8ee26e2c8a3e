"""Prometheus metrics of one service instance (own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Reasons are RFC 6749 error codes plus a few of our own; a fixed set keeps label cardinality bounded.
DENIAL_REASONS = (
    "invalid_request",
    "invalid_client",
    "invalid_scope",
    "invalid_target",
    "unsupported_grant_type",
    "unauthorized_client",
    "temporarily_unavailable",
    "server_error",
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.issued = Counter("credward_tokens_issued", "Access tokens issued.", registry=self.registry)
        self._denied = Counter(
            "credward_tokens_denied",
            "Token requests denied, by RFC 6749 error code.",
            ["reason"],
            registry=self.registry,
        )
        self.denied = {reason: self._denied.labels(reason=reason) for reason in DENIAL_REASONS}
        self.latency = Histogram(
            "credward_token_request_duration_seconds",
            "Time to answer a token request, from body received to response ready.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.revocations = Counter(
            "credward_revocations", "Accounts and tokens revoked.", ["kind"], registry=self.registry
        )

        self.feed_subscribers = Gauge(
            "credward_feed_subscribers", "Revocation feed streams open now.", registry=self.registry
        )
        self.feed_dropped = Counter(
            "credward_feed_subscribers_dropped",
            "Revocation feed streams ended because their client did not keep up.",
            registry=self.registry,
        )

        self.usage_flushed = Counter(
            "credward_secret_usage_flushed",
            "(secret, caller) uses written to the store by usage flushes.",
            registry=self.registry,
        )
        self.usage_flush_failures = Counter(
            "credward_secret_usage_flush_failures",
            "Usage flushes the store refused (the batch is kept for the next flush).",
            registry=self.registry,
        )
        self.usage_dropped = Counter(
            "credward_secret_usage_dropped",
            "Secret uses not recorded because the in-memory bound of secrets was reached before a flush.",
            registry=self.registry,
        )

    def deny(self, reason: str) -> None:
        self.denied.get(reason, self.denied["server_error"]).inc()
