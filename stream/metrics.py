"""Every Prometheus metric of the service, defined once; few bounded labels, never a user id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_CONSUMED = Counter("segstream_events_consumed", "Records read from the events topic")
EVENTS_PROCESSED = Counter("segstream_events_processed", "Valid events handed to the handler")
EVENTS_DEAD_LETTERED = Counter(
    "segstream_events_dead_lettered",
    "Records sent to the dead-letter topic",
    ["stage", "reason"],
)
BATCH_SIZE = Histogram(
    "segstream_batch_size_events",
    "Records per consumed batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
COMMITS = Counter("segstream_commits", "Checkpoints whose offsets were committed")
RETRIES = Counter(
    "segstream_retries", "Failed attempts of a checkpoint step that were retried", ["step"]
)
PAUSED = Gauge("segstream_paused", "1 while consumption is paused by backpressure")
REBALANCES = Counter("segstream_rebalances", "Partition assignment changes", ["kind"])


def serve(port: int) -> None:
    """Expose /metrics on `port`; 0 turns the endpoint off (tests, tools)."""
    if port:
        start_http_server(port)
