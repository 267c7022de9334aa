"""Prometheus metrics of this process, served by the operations listener at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.exposition import generate_latest


class Metrics:
    """One registry per service, so tests can run several services in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.info = Info("hygie", "Hygie build information", registry=self.registry)
        self.listeners = Gauge(
            "hygie_listeners", "Listeners accepting connections", ["name"], registry=self.registry
        )
        self.mailboxes = Gauge(
            "hygie_mailboxes", "Mailboxes by state", ["state"], registry=self.registry
        )
        self.messages = Gauge(
            "hygie_stored_messages", "Encrypted message copies stored", registry=self.registry
        )
        self.database_up = Gauge(
            "hygie_database_up",
            "1 when the database answered the last check",
            ["database"],
            registry=self.registry,
        )
        self.auth_attempts = Counter(
            "hygie_auth_attempts",
            "Authentication attempts by protocol and result",
            ["protocol", "result"],
            registry=self.registry,
        )
        self.inflight = Gauge(
            "hygie_inflight_deliveries",
            "Deliveries being stored right now",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))
