"""`segstream evaluate`: the service's own batch step over a file of events, then how well its
segments recover the generator's personas, how well its propensity ranks future buyers, and how
stable and prompt its changes are, with a report.

There is no second pipeline: `drive` hands the file to the service's `SegmentHandler` batch by
batch, exactly as the consumer loop does (partitioned by key, offsets per partition, the same
validation), against a real Redis (the configured one, or a local one started for the run) under
a key prefix of its own. `Recorder` watches the handler, here and in `segstream demo`, where the
same handler runs behind the real loop; `assess` turns what it saw into figures.

Propensity figures are progressive: every score was given before its label was known. The
figures count the labels resolved in the last `holdout` share of event time, when the model has
left its cold start.
"""

from __future__ import annotations

import bisect
import csv
import statistics
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from features.definitions import UserState
from features.events import Event, decode_event
from segments.engine import MEMBERSHIP
from segments.engine import Change as Decided
from segments.policy import Record, load
from segments.scoring import RFM_GRID
from stream.errors import ConfigError
from stream.kafka.handler import Batch, Outcome, Passthrough
from stream.kafka.partitioning import partition_of
from stream.service.segment_handler import SegmentHandler
from stream.service.wiring import build_handler, redis_client
from stream.settings import Settings
from stream.tools.analytics import (
    SpendSeen,
    campaign_figures,
    cross_sell_figures,
    hierarchy_figures,
    outlier_figures,
    read_events,
    spend_figures,
    spend_seen,
)
from stream.tools.baselines import bgnbd_expected, rfm_score, summarize
from stream.tools.quality import (
    Change,
    Evaluation,
    adjusted_rand_index,
    flapping_rate,
    log_loss,
    normalized_mutual_info,
    overall_purity,
    pca_2d,
    precision_recall_f1,
    purity_per_class,
    roc_auc,
    sizes_over_time,
    transitions,
)
from stream.tools.replay import open_text
from stream.tools.servers import ensure_redis
from stream.tools.transactions import DAY_MS, Transaction, as_events, read_log

PROJECTED_USERS = 4_000
FLAP_WINDOW_MS = 7 * DAY_MS
# The service validates events against the wall clock; a file of history is never "future".
FAR_FUTURE_MS = 2**62
RULE_RANK = 100.0


@dataclass(frozen=True)
class EvaluateOptions:
    holdout: float = 0.3  # the last share of the event-time range is held out


@dataclass(frozen=True)
class Seen:
    """One published change as the recorder saw it, with the batch that published it."""

    user_id: str
    time_ms: int
    previous: str | None
    current: str
    previous_band: str
    current_band: str
    reason: str
    proposed_ms: int  # event time the new assignment was first proposed
    batch: int


@dataclass(frozen=True)
class Resolution:
    time_ms: int
    propensity: float
    bought: bool


@dataclass
class Observed:
    """What a run of the service's step showed, batch by batch."""

    events: int = 0
    batches: int = 0
    # Events handled when a model version first had clusters / a propensity (None: never).
    clusters_at: int | None = None
    propensity_at: int | None = None
    propensity_version: int | None = None  # the first version with a propensity
    version: int = 0
    changes: dict[str, Seen] = field(default_factory=dict)  # segment changes by change id
    memberships: Counter[str] = field(default_factory=Counter)  # rule segments entered, left
    resolutions: list[Resolution] = field(default_factory=list)
    # Resolved spend snapshots: with the prediction given then, and with the one of the version
    # current when they resolved.
    spend_given: list[SpendSeen] = field(default_factory=list)
    spend_checked: list[SpendSeen] = field(default_factory=list)
    purchases: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # (ts, batch)
    batch_ends: list[int] = field(default_factory=list)  # highest event time up to each batch


class Recorder(Passthrough[SegmentHandler]):
    """Wraps the service's handler and notes what every batch decided."""

    def __init__(self, inner: SegmentHandler) -> None:
        super().__init__(inner)
        self.observed = Observed()

    def handle(self, batch: Batch) -> Outcome:
        outcome = self.inner.handle(batch)
        self._record(batch)
        return outcome

    def _record(self, batch: Batch) -> None:
        seen = self.observed
        number = seen.batches
        highest = seen.batch_ends[-1] if seen.batch_ends else 0
        for event in batch.events:
            highest = max(highest, event.ts_ms)
            if event.type == "purchase":
                seen.purchases.setdefault(event.user_id, []).append((event.ts_ms, number))
        seen.batch_ends.append(highest)
        seen.events += len(batch.events)
        seen.batches += 1
        for change in self.inner.decided:
            if change.kind == MEMBERSHIP:
                seen.memberships["left" if change.previous else "entered"] += 1
            else:
                seen.changes.setdefault(change.change_id, _seen(change, number))
        seen.resolutions.extend(
            Resolution(label.time_ms, label.propensity, label.bought)
            for label in self.inner.resolved
            if label.propensity >= 0
        )
        seen.spend_given.extend(spend_seen(self.inner.resolved_spend, given=True))
        seen.spend_checked.extend(spend_seen(self.inner.resolved_spend, given=False))
        params = self.inner.sync.params
        seen.version = params.version
        if seen.clusters_at is None and params.clusters_ready:
            seen.clusters_at = seen.events
        if seen.propensity_at is None and params.propensity_ready:
            seen.propensity_at = seen.events
            seen.propensity_version = params.version


def _seen(change: Decided, batch: int) -> Seen:
    payload = change.payload
    previous = payload["previous"] or {}
    current = payload["current"]
    return Seen(
        user_id=change.user_id,
        time_ms=change.time_ms,
        previous=change.previous,
        current=change.current,
        previous_band=previous.get("propensity_band", ""),
        current_band=current["propensity_band"],
        reason=payload["reason"],
        proposed_ms=change.proposed_ms,
        batch=batch,
    )


# -- driving the step ---------------------------------------------------------------------------


def drive(
    handler: Recorder,
    lines: Iterable[bytes],
    settings: Settings,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Feed the lines to the handler as the loop would: keyed by user id onto the topic's
    partitions (murmur2 of the key, as our producers and Java clients place it), offsets per
    partition, batches of the loop's size, commits after each batch. Returns the invalid lines."""
    partitions = settings.topics.partitions
    handler.partitions_assigned(list(range(partitions)))
    offsets = [0] * partitions
    invalid = 0
    for chunk in _chunks(lines, settings.loop.batch_size):
        events: list[Event] = []
        where: list[int] = []
        at: list[int] = []
        for line in chunk:
            event = decode_event(
                line, now_ms=FAR_FUTURE_MS, max_bytes=settings.loop.max_event_bytes
            )
            if not isinstance(event, Event):
                invalid += 1
                continue
            partition = partition_of(event.user_id.encode(), partitions)
            events.append(event)
            where.append(partition)
            at.append(offsets[partition])
            offsets[partition] += 1
        if events:
            handler.handle(Batch(settings.topics.events, events, where, at))
            handler.committed(dict(enumerate(offsets)))
        if progress is not None:
            progress(handler.observed.events + invalid)
    return invalid


def _chunks(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for line in lines:
        if line.strip():
            chunk.append(line)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def run_settings(settings: Settings) -> Settings:
    """The settings of an evaluation run: a key prefix of its own and, unless one is set, a
    throwaway signing key; everything that shapes decisions stays as configured."""
    run = f"eval-{uuid.uuid4().hex[:8]}"
    segments = settings.segments.signed()
    # Pseudonymous ids could not be matched with the personas.
    privacy = settings.privacy.model_copy(
        update={"pseudonymize_key": None, "pseudonymize_key_file": None}
    )
    return settings.model_copy(update={"key_prefix": run, "segments": segments, "privacy": privacy})


def evaluate(
    events: Path,
    personas: Path,
    settings: Settings,
    options: EvaluateOptions,
    *,
    workdir: Path,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    with service_step(settings, workdir) as (recorder, run):
        stream, _ = open_text(events)
        with stream:
            drive(recorder, stream, run, progress)
        states = dict(recorder.inner.store.states())
        evaluation = assess(recorder, states, _personas(personas), options, run)
        return with_store_figures(evaluation, recorder, events, run)


def with_store_figures(
    evaluation: Evaluation, recorder: Recorder, events: Path, run: Settings
) -> Evaluation:
    """The figures that read more than the handler saw: the cross-sell rules against FP-growth
    over the file's baskets, and the campaign tallies in Redis."""
    handler = recorder.inner
    stream, _ = open_text(events)
    with stream:
        rules = cross_sell_figures(
            handler.sync.params.rules, read_events(stream), handler.engine.config
        )
    evaluation.analytics["cross_sell"] = rules
    evaluation.analytics["campaigns"] = campaign_figures(redis_client(run), run.key_prefix)
    return evaluation


@contextmanager
def service_step(settings: Settings, workdir: Path) -> Iterator[tuple[Recorder, Settings]]:
    """The service's handler, watched by a Recorder, on the configured Redis or a local one,
    under the settings of an evaluation run; its keys are dropped afterwards."""
    with ExitStack() as resources:
        settings = run_settings(ensure_redis(settings, workdir, resources).settings)
        handler = build_handler(settings)
        resources.callback(handler.close)
        resources.callback(_drop_keys, settings)
        yield Recorder(handler), settings


@dataclass(frozen=True)
class TransactionsOptions:
    """`split_ms`: the first event time of the holdout (None: `holdout` share of the range)."""

    split_ms: int | None = None
    holdout: float = 0.3
    columns: tuple[str, str, str] | None = None


def evaluate_transactions(
    path: Path,
    settings: Settings,
    options: TransactionsOptions,
    *,
    workdir: Path,
    progress: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """The service's propensity at the split against RFM quintiles and BG/NBD, scored on
    which customers bought after it. The service sees the calibration rows only."""
    log = read_log(path, options.columns)
    rows = log.transactions
    first, last = rows[0].ts_ms, rows[-1].ts_ms
    split = options.split_ms or int(last - (last - first) * options.holdout)
    calibration = [t for t in rows if t.ts_ms < split]
    if not calibration or split > last:
        msg = f"the split must fall inside the log ({_day(first)} .. {_day(last)})"
        raise ConfigError(msg)
    with service_step(settings, workdir) as (recorder, run):
        drive(recorder, as_events(calibration), run, progress)
        records = {u: load(s.segment) for u, s in recorder.inner.store.states()}
        version = recorder.inner.sync.params.version
    customers = summarize(calibration, split)
    bought = {t.customer for t in rows if t.ts_ms >= split}
    y = [int(c in bought) for c in customers.ids]
    service = [records[c].propensity if c in records else -1.0 for c in customers.ids]
    scored = sum(p >= 0 for p in service)
    holdout_days = (last - split) / DAY_MS + 1
    scores = {
        "service_propensity": roc_auc(y, [max(p, 0.0) for p in service]),
        "rfm_quintiles": roc_auc(y, rfm_score(customers).tolist()),
        "bgnbd_expected_purchases": roc_auc(y, bgnbd_expected(customers, holdout_days).tolist()),
    }
    return {
        "log": str(path),
        "columns": list(log.columns),
        "rows": len(rows),
        "skipped": log.skipped,
        "calibration": f"{_day(first)} .. {_day(split - 1)}",
        "holdout": f"{_day(split)} .. {_day(last)}",
        "customers": len(customers.ids),
        "bought_in_holdout": sum(y),
        "base_rate": sum(y) / len(y),
        "service_scored": scored,
        "service_model_version": version,
        "roc_auc": scores,
        "horizon_days": settings.segments.horizon_days,
        "spend": _spend_at_split(rows, records, split, settings),
    }


def _spend_at_split(
    rows: list[Transaction], records: dict[str, Record], split: int, settings: Settings
) -> dict[str, float]:
    """Each customer's predicted spend as the service left it at the split, against what they
    spent over the horizon after it, beside the naive prediction (their own spend over as long
    before it). Only customers the service gave a prediction count."""
    horizon = int(settings.segments.spend_horizon_days * DAY_MS)
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    for row in rows:
        if split - horizon <= row.ts_ms < split:
            before[row.customer] = before.get(row.customer, 0.0) + row.amount
        elif split <= row.ts_ms < split + horizon:
            after[row.customer] = after.get(row.customer, 0.0) + row.amount
    predicted = {c: r.spend for c, r in records.items() if r.spend >= 0}
    seen = [
        SpendSeen(split, p, before.get(c, 0.0), after.get(c, 0.0)) for c, p in predicted.items()
    ]
    return {"horizon_days": settings.segments.spend_horizon_days, **spend_figures(seen)}


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def _drop_keys(settings: Settings) -> None:
    """The run's keys are of no use after it (a local Redis goes with them anyway)."""
    client = redis_client(settings)
    pattern = f"{settings.key_prefix}:*"
    batch = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def _personas(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        return {row["user_id"]: row["persona"] for row in csv.DictReader(handle)}


# -- figures ----------------------------------------------------------------------------------


def assess(
    recorder: Recorder,
    states: dict[str, UserState],
    truth: dict[str, str],
    options: EvaluateOptions,
    settings: Settings,
) -> Evaluation:
    """Figures of a run from what the recorder saw and the states it left in Redis."""
    seen = recorder.observed
    handler = recorder.inner
    records = {u: load(s.segment) for u, s in states.items()}
    users = [u for u, r in records.items() if u in truth and r.cluster >= 0]
    personas = [truth[u] for u in users]
    clusters = [records[u].cluster for u in users]
    changes = [
        Change(c.user_id, c.time_ms, c.previous, c.current, c.previous_band, c.current_band)
        for c in seen.changes.values()
    ]
    first = seen.batch_ends[0] if seen.batch_ends else 0
    last = seen.batch_ends[-1] if seen.batch_ends else 0
    split = int(last - (last - first) * options.holdout)
    times, series = sizes_over_time(changes, DAY_MS)
    params = handler.sync.params
    projection, projected = _projection(handler, states, users, clusters)
    return Evaluation(
        users=len(states),
        events=seen.events,
        clustered=len(users),
        ari=adjusted_rand_index(personas, clusters) if users else float("nan"),
        nmi=normalized_mutual_info(personas, clusters) if users else float("nan"),
        purity=purity_per_class(personas, clusters),
        overall_purity=overall_purity(personas, clusters),
        cluster_sizes=dict(Counter(clusters)),
        cluster_labels={int(c): params.label_of(int(c)) for c in set(clusters)},
        persona_by_cluster=_contingency(personas, clusters),
        propensity=propensity_figures([r for r in seen.resolutions if r.time_ms >= split]),
        segment_sizes=dict(Counter(r.segment for r in records.values())),
        changes=len(changes),
        flapping_rate=flapping_rate(changes, FLAP_WINDOW_MS),
        transitions=transitions(changes),
        sizes_times=times,
        sizes_series=series,
        projection=projection,
        projection_clusters=projected,
        settings=_settings(settings, handler),
        timeline={
            "clusters_at_event": seen.clusters_at,
            "propensity_at_event": seen.propensity_at,
            "batches": seen.batches,
            "holdout_from": split,
            "memberships_entered": seen.memberships["entered"],
            "memberships_left": seen.memberships["left"],
        },
        delays=promotion_delays(seen),
        analytics={
            "spend": {
                "given_at_snapshot": spend_figures(seen.spend_given),
                "progressive": spend_figures(seen.spend_checked),
            },
            "outliers": outlier_figures(records, truth),
            "hierarchy": hierarchy_figures(params.hierarchy, records, truth),
        },
        dendrogram=params.hierarchy,
    )


def propensity_figures(held: list[Resolution]) -> dict[str, float]:
    y = [int(r.bought) for r in held]
    p = [r.propensity for r in held]
    precision, recall, f1 = precision_recall_f1(y, p)
    return {
        "auc": roc_auc(y, p),
        "log_loss": log_loss(y, p),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "positives": float(sum(y)),
        "negatives": float(len(y) - sum(y)),
        "base_rate": float(np.mean(y)) if y else float("nan"),
    }


def _rank() -> dict[str, float]:
    """How valuable an RFM segment is: the mean R + FM of its grid cells."""
    cells: dict[str, list[int]] = {}
    for r, row in RFM_GRID.items():
        for fm, name in enumerate(row, 1):
            cells.setdefault(name, []).append(r + fm)
    return {name: sum(v) / len(v) for name, v in cells.items()}


_RANK = _rank()


def promotion_delays(seen: Observed) -> dict[str, float]:
    """Delays of purchase-driven promotions: changes on activity to a more valuable segment
    (a rule segment ranks above every RFM one) first proposed in the batch where the user
    bought. The delay runs from that purchase to the published change, in event time and in
    batches (0: the batch that carried the purchase)."""
    delays_ms: list[float] = []
    delays_batches: list[float] = []
    for change in seen.changes.values():
        if change.previous is None or change.reason != "activity":
            continue
        if _RANK.get(change.current, RULE_RANK) <= _RANK.get(change.previous, RULE_RANK):
            continue
        bought = seen.purchases.get(change.user_id, [])
        at = bisect.bisect_right(bought, (change.proposed_ms, 2**62)) - 1
        if at < 0:
            continue
        ts, batch = bought[at]
        proposed_batch = bisect.bisect_left(seen.batch_ends, change.proposed_ms)
        if batch != proposed_batch:
            continue  # the purchase came before the batch that proposed the move
        delays_ms.append(change.time_ms - ts)
        delays_batches.append(change.batch - batch)
    if not delays_ms:
        return {"promotions": 0}
    return {
        "promotions": len(delays_ms),
        "median_ms": statistics.median(delays_ms),
        "p90_ms": float(np.percentile(delays_ms, 90)),
        "median_batches": statistics.median(delays_batches),
        "p90_batches": float(np.percentile(delays_batches, 90)),
        "within_one_batch": sum(b <= 1 for b in delays_batches) / len(delays_batches),
    }


def _contingency(personas: list[str], clusters: list[int]) -> dict[int, dict[str, int]]:
    table: dict[int, Counter[str]] = {}
    for persona, cluster in zip(personas, clusters, strict=True):
        table.setdefault(cluster, Counter())[persona] += 1
    return {c: dict(counts) for c, counts in table.items()}


def _projection(
    handler: SegmentHandler, states: dict[str, UserState], users: list[str], clusters: list[int]
) -> tuple[np.ndarray, list[int]]:
    step = max(1, len(users) // PROJECTED_USERS)
    chosen = users[::step]
    if not chosen:
        return np.zeros((0, 2)), []
    engine, params = handler.engine, handler.sync.params
    now = max(s.last_seen for s in states.values())
    raw = engine.columns.matrix([states[u] for u in chosen], [now] * len(chosen))
    z = (engine.inputs(raw) - params.mean) / params.scale
    return pca_2d(z), clusters[::step]


def _settings(settings: Settings, handler: SegmentHandler) -> dict[str, object]:
    segments = settings.segments
    model = handler.sync.params
    return {
        "clusterer": segments.clusterer,
        "k": segments.k,
        "classifier": segments.classifier,
        "horizon_days": segments.horizon_days,
        "label_rate": segments.label_rate,
        "batch_size": settings.loop.batch_size,
        "partitions": settings.topics.partitions,
        "model_version": model.version,
    }
