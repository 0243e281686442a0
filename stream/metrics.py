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
EVENTS_APPLIED = Counter("segstream_events_applied", "Events folded into a user's features")
EVENTS_SKIPPED = Counter(
    "segstream_events_skipped",
    "Events not applied: seen before (fence or event id) or for an erased user",
    ["reason"],
)
REDIS_SECONDS = Histogram(
    "segstream_redis_call_seconds",
    "Time of a feature-store call (a batch's read and write round trips)",
    ["call"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
REBALANCES = Counter("segstream_rebalances", "Partition assignment changes", ["kind"])
USERS_SCORED = Counter(
    "segstream_users_scored", "User scorings, by what triggered them", ["trigger"]
)
SEGMENT_CHANGES = Counter(
    "segstream_segment_changes",
    "Segment changes published (segment names are bounded by configuration)",
    ["from_segment", "to_segment"],
)
CHANGES_REPUBLISHED = Counter(
    "segstream_changes_republished", "Changes published again from the outbox after a takeover"
)
MODEL_VERSION = Gauge("segstream_model_version", "Model version this instance scores with")
TRAINER = Gauge("segstream_trainer", "1 while this instance holds the trainer lease")
SAMPLES_LEARNED = Counter(
    "segstream_model_samples_learned", "Samples the trainer learned", ["kind"]
)
PROPENSITY_AUC = Gauge(
    "segstream_propensity_roc_auc", "Live ROC AUC of propensity (predicted before labelled)"
)
PROPENSITY_LOG_LOSS = Gauge("segstream_propensity_log_loss", "Live log loss of propensity")
LABELS_RESOLVED = Counter(
    "segstream_propensity_labels", "Propensity snapshots resolved by outcome", ["outcome"]
)


def serve(port: int) -> None:
    """Expose /metrics on `port`; 0 turns the endpoint off (tests, tools)."""
    if port:
        start_http_server(port)
