"""Every Prometheus metric of the service, defined once; few bounded labels, never a user id.

Names follow Prometheus conventions: base units (`_seconds`), counters end in `_total` (added by
prometheus-client on exposition), `segstream_build_info` carries versions as labels. Per-event
latencies go through `BulkHistogram`, fed a whole batch as one numpy array, because one
`Histogram.observe` per event would cost several percent of the 33 µs budget per event.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterator
from importlib import metadata

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

# Per-event work: milliseconds when the service keeps up, up to an hour when it does not, and
# beyond (+Inf) for replayed history.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class BulkHistogram(Collector):
    """A histogram observed a batch at a time; same exposition as prometheus-client's."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: tuple[float, ...],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.name = name
        self._documentation = documentation
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: npt.NDArray[np.float64], weight: int = 1) -> None:
        """Count each value (seconds) `weight` times."""
        if not len(values):
            return
        # side="left": a value equal to a bound belongs to that bound's bucket (le="bound").
        slots = np.searchsorted(self._bounds, values, side="left")
        counts = np.bincount(slots, minlength=len(self._counts)) * weight
        total = float(values.sum()) * weight
        with self._lock:
            self._counts += counts
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        bounds = [*(repr(float(b)) for b in self._bounds), "+Inf"]
        family = HistogramMetricFamily(
            self.name,
            self._documentation,
            buckets=list(zip(bounds, cumulative, strict=True)),
            sum_value=total,
        )
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self._documentation)


# `_created` series double the exposition and no dashboard or alert here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD = Info("segstream_build", "Versions of segstream and of the libraries it runs on")
_BUILT_WITH = {
    "version": _version("segstream"),
    "python": platform.python_version(),
    "confluent_kafka": _version("confluent-kafka"),
    "river": _version("river"),
}
BUILD.info(_BUILT_WITH)


def record_librdkafka(version: str) -> None:
    """Told by the Kafka side (this module does not load the Kafka client)."""
    BUILD.info({**_BUILT_WITH, "librdkafka": version})


# Flow of records.
EVENTS_CONSUMED = Counter("segstream_events_consumed", "Records read from the events topic")
EVENTS_PROCESSED = Counter("segstream_events_processed", "Valid events handed to the handler")
EVENTS_DEAD_LETTERED = Counter(
    "segstream_events_dead_lettered",
    "Records sent to the dead-letter topic, by stage (validate, late) and reason",
    ["stage", "reason"],
)
EVENTS_APPLIED = Counter("segstream_events_applied", "Events folded into a user's features")
WRITES_REFUSED = Counter(
    "segstream_writes_refused",
    "User writes refused by the version check (another writer came first): read again, retried",
)
EVENTS_SKIPPED = Counter(
    "segstream_events_skipped",
    "Events not applied: seen before (fence or event id) or for an erased user",
    ["reason"],
)
BATCH_SIZE = Histogram(
    "segstream_batch_size_records",
    "Records per consumed batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
COMMITS = Counter("segstream_commits", "Checkpoints whose offsets were committed")
RETRIES = Counter("segstream_retries", "Failed attempts of a loop step that were retried", ["step"])

# Kafka consumer state.
PAUSED = Gauge("segstream_paused", "1 while consumption is paused by backpressure")
SNAPSHOTS_REFUSED = Counter(
    "segstream_snapshots_refused",
    "Model snapshots whose signature or content was refused (kind=scoring: the newest good"
    " version is used instead; kind=trainer: this instance does not train)",
    ["kind"],
)
STATE_LOST = Gauge(
    "segstream_state_lost",
    "1 once the service stopped consuming because Redis lost its state (kind=lost) or the"
    " events topic is not the one the state was built from (kind=topic)",
    ["kind"],
)
ALIGNMENT_PAUSED = Gauge(
    "segstream_partitions_held_back",
    "Partitions paused because they ran ahead of the others in event time",
)
ASSIGNED_PARTITIONS = Gauge("segstream_assigned_partitions", "Input partitions this instance owns")
REBALANCES = Counter("segstream_rebalances", "Partition assignment changes", ["kind"])
CONSUMER_LAG = Gauge(
    "segstream_consumer_lag_records",
    "Records behind the end of an owned input partition (librdkafka statistics)",
    ["partition"],
)
KAFKA_ERRORS = Counter(
    "segstream_kafka_errors", "Errors reported by the Kafka client, by error name", ["code"]
)
LAST_PROGRESS = Gauge(
    "segstream_last_progress_timestamp_seconds",
    "Unix time the consumer loop last completed an iteration (liveness)",
)

# Latency.
EVENT_TIME_TO_DECISION = BulkHistogram(
    "segstream_event_time_to_decision_seconds",
    "From an event's own timestamp to the segment decision taking it into account",
    LATENCY_BUCKETS,
)
RECORD_TO_DECISION = BulkHistogram(
    "segstream_record_to_decision_seconds",
    "From the Kafka record timestamp (when the event entered the topic) to the decision",
    LATENCY_BUCKETS,
)
CONSUME_TO_COMMIT = BulkHistogram(
    "segstream_consume_to_commit_seconds",
    "From consuming a record to committing its offset (every side effect acknowledged)",
    LATENCY_BUCKETS,
)

# Redis.
REDIS_SECONDS = Histogram(
    "segstream_redis_call_seconds",
    "Time of Redis calls: a batch's state read, its pipelined writes, timers, outbox, model",
    ["call"],
    buckets=REDIS_BUCKETS,
)
REDIS_ERRORS = Counter(
    "segstream_redis_errors", "Redis calls that failed (the step is retried)", ["call"]
)
REDIS_REDIRECTS = Counter(
    "segstream_redis_redirects",
    "Commands a Redis Cluster sent elsewhere (MOVED, ASK, TRYAGAIN while slots move); sent again",
)

# Segments.
USERS_SCORED = Counter(
    "segstream_users_scored", "User scorings, by what triggered them", ["trigger"]
)
SEGMENT_CHANGES = Counter(
    "segstream_segment_changes",
    "Segment changes published (segment names are bounded by configuration)",
    ["from_segment", "to_segment"],
)
MEMBERSHIP_CHANGES = Counter(
    "segstream_membership_changes",
    "Rule segments entered and left (rule names are bounded by configuration)",
    ["segment", "change"],
)
CHANGES_REPUBLISHED = Counter(
    "segstream_changes_republished", "Changes published again from the outbox after a takeover"
)
AUDIENCE_CHANGES = Counter(
    "segstream_audience_changes",
    "Audiences entered and left (audience names are bounded: at most 64 at a time)",
    ["audience", "change"],
)
AUDIENCE_USERS = Gauge(
    "segstream_audience_users",
    "Members of this audience, over all instances (read from Redis)",
    ["audience"],
)
AUDIENCE_BACKFILL_USERS = Counter(
    "segstream_audience_backfill_users",
    "Users checked by this instance for a new audience catalog version (the backfill's progress)",
)
CAMPAIGN_OFFERS = Gauge(
    "segstream_campaign_offers",
    "Changes that carried this action for this segment, over all instances (read from Redis)",
    ["segment", "action"],
)
CAMPAIGN_CONVERSIONS = Gauge(
    "segstream_campaign_conversions",
    "Offers of this action to this segment followed by a purchase within the horizon, over all"
    " instances (read from Redis)",
    ["segment", "action"],
)
SEGMENT_USERS = Gauge(
    "segstream_segment_users",
    "Users whose current segment is this one, over all instances (read from Redis)",
    ["segment"],
)
CLUSTER_USERS = Gauge(
    "segstream_cluster_users",
    "Users whose current cluster is this one, over all instances (read from Redis)",
    ["cluster"],
)
TIMERS_PENDING = Gauge(
    "segstream_timers_pending", "Event-time timers scheduled on this instance's partitions"
)
TIMERS_FIRED = Counter("segstream_timers_fired", "Users re-scored because their timer was due")

# Model.
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


def _start_at_zero() -> None:
    """Series of known label values exist from the start, so rates and alerts read 0, not
    nothing, before the first error."""
    for step in ("handle", "produce", "commit", "origin"):
        RETRIES.labels(step)
    for call in (
        "read",
        "write",
        "store",
        "timers",
        "outbox",
        "model",
        "population",
        "origin",
        "audiences",
    ):
        REDIS_ERRORS.labels(call)
    for kind in ("assign", "revoke", "lost"):
        REBALANCES.labels(kind)
    for reason in ("duplicate", "erased"):
        EVENTS_SKIPPED.labels(reason)
    for outcome in ("bought", "not_bought"):
        LABELS_RESOLVED.labels(outcome)
    for kind in ("segment", "propensity", "basket", "spend"):
        SAMPLES_LEARNED.labels(kind)
    for code in ("_TRANSPORT", "_ALL_BROKERS_DOWN", "_MSG_TIMED_OUT"):
        KAFKA_ERRORS.labels(code)
    for kind in ("lost", "topic"):
        STATE_LOST.labels(kind)
    for kind in ("scoring", "trainer"):
        SNAPSHOTS_REFUSED.labels(kind)


_start_at_zero()
