"""Score a batch of users: read their features, score with one model version, settle each
user's record through hysteresis, and say what changed, when to look again and what to learn.

Pure: the stream layer brings the states and the model, and stores and publishes the results.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from features.columns import Columns, numeric_names
from features.definitions import DEFAULT_WINDOWS, UserState, Window, catalog
from segments.clusterers import squared_distances
from segments.config import RFM_FEATURES, SegmentConfig
from segments.policy import (
    Proposal,
    Record,
    Settled,
    assignment,
    dump,
    follow_clusters,
    load,
    moved,
    next_cluster,
    next_due,
    settle,
)
from segments.rules import RuleSet
from segments.scoring import Params, Scores, rfm, score

SAMPLE_BUCKETS: Final = 1 << 16


SEGMENT: Final = "segment"
MEMBERSHIP: Final = "membership"
# The version of the segments topic's value layout (`schemas/`), in every change.
SCHEMA_VERSION: Final = 1
# Features whose larger values mean less value (the others, more), for nudging by the margin.
DAY_FEATURES: Final = frozenset({"recency_days", "days_since_last_seen"})


@dataclass(frozen=True, slots=True)
class Change:
    """One published change (the payload is the output contract): of the
    user's segment or band (`kind` SEGMENT), or entering or leaving a rule segment
    (MEMBERSHIP; `current` is the rule, `previous` None on entering)."""

    user_id: str
    change_id: str
    time_ms: int
    previous: str | None
    current: str
    payload: dict[str, Any]
    proposed_ms: int = 0  # event time the new assignment was first proposed
    kind: str = SEGMENT


class Sample(NamedTuple):
    """A scored user for the trainer: model inputs (transformed, unscaled) and RFM values."""

    user: str
    inputs: list[float]
    frequency: float
    monetary: float


class Label(NamedTuple):
    """A resolved propensity snapshot: the inputs at scoring time, whether a purchase followed
    within the horizon, the score given then (-1: none), and the event time it resolved."""

    inputs: list[float]
    bought: bool
    propensity: float
    time_ms: int


@dataclass
class Scored:
    changes: list[Change] = field(default_factory=list)
    due: dict[str, int] = field(default_factory=dict)  # user -> next timer (0: none)
    samples: list[Sample] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    # Population tallies (field, delta) that move with each user's write; only users who moved.
    tallies: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


class Engine:
    def __init__(self, config: SegmentConfig, windows: Sequence[Window] = DEFAULT_WINDOWS) -> None:
        self.config = config
        self.rules = RuleSet(config.rules, numeric_names(windows))
        model = list(config.features)
        extra = [n for n in (*RFM_FEATURES, *self.rules.features) if n not in model]
        self.columns = Columns([*model, *dict.fromkeys(extra)], windows)
        # The model's inputs alone (the default ones need no window sums: cheap to check).
        self._model_columns = Columns(model, windows)
        self._d = len(model)
        index = {n: i for i, n in enumerate(self.columns.names)}
        self._rfm = [index[n] for n in RFM_FEATURES]
        self._rule_columns = [index[n] for n in self.rules.features]
        logged = {d.name for d in catalog(windows) if d.logged}
        self._logged = np.array([n in logged for n in model])
        self._label_cut = int(config.label_rate * SAMPLE_BUCKETS)
        # Multiplies each column to nudge a user's values towards more value (divides: less).
        margin = 1.0 + config.segment_margin
        self._nudge = np.array(
            [1.0 / margin if n in DAY_FEATURES else margin for n in self.columns.names]
        )
        # The state's epoch (see `stream.service.origin_guard`): part of every change id, so
        # the ids stay unique when a rebuilt state numbers each user's changes from 1 again.
        self.epoch = 0

    def score(
        self,
        params: Params,
        users: Sequence[str],
        states: Sequence[UserState],
        now: Sequence[int],
        timer: Sequence[bool],
        *,
        learn_share: float = 0.0,
        reassign: Collection[str] = (),
    ) -> Scored:
        """Decide for every user; each state's `segment` record is updated in place. A
        `learn_share` of the users (by a hash of user and time) become samples for the trainer.
        The users in `reassign` only follow the clusters (`_reassign`)."""
        if not users:
            return Scored()
        raw = self.columns.matrix(states, now)
        inputs = self.inputs(raw)
        scores = score(params, inputs, raw[:, self._rfm], self.config.recency_days)
        up, down = raw * self._nudge, raw / self._nudge
        near = (
            rfm(params, up[:, self._rfm], self.config.recency_days)[1],
            rfm(params, down[:, self._rfm], self.config.recency_days)[1],
        )
        rules = self._matching_rules(raw, up, down)
        view = _View(params, scores, near, rules, inputs, raw)
        out = Scored()
        cut = int(learn_share * SAMPLE_BUCKETS)
        for i, (user, state) in enumerate(zip(users, states, strict=True)):
            if user in reassign:
                self._reassign(view, i, user, state, out)
            else:
                self._decide(view, i, user, state, (now[i], timer[i], cut), out)
        return out

    def moving(
        self,
        params: Params,
        users: Sequence[str],
        states: Sequence[UserState],
        now: Sequence[int],
    ) -> list[str]:
        """Of these users, those whose cluster `reassign` would move; changes nothing. A sweep
        checks every user, and most stay where they are: a check is one row of a matrix
        product, where a write is a compare-and-set in Redis."""
        if not users or not params.clusters_ready:
            return []
        raw = self._model_columns.matrix(states, now)
        distances = squared_distances(params.standardize(self.inputs(raw)), params.centers)
        clusters = _Nearest(params, distances.argmin(axis=1), distances)
        margin = self.config.cluster_margin
        found = []
        for i, (user, state) in enumerate(zip(users, states, strict=True)):
            current = load(state.segment).cluster
            cluster, distance, current_distance = clusters.of(i, current)
            if next_cluster(current, (cluster, distance), current_distance, margin) != current:
                found.append(user)
        return found

    def _reassign(self, view: _View, i: int, user: str, state: UserState, out: Scored) -> None:
        """A user swept after the clusters were placed anew (`stream.service.sweep`): the
        cluster follows the new centres, through the same margin. The segment, the propensity
        and the timers wait for the user's own event or timer, so a sweep publishes no change,
        and it gives the trainer no sample: samples would move the centres again."""
        record = load(state.segment)
        cluster = record.cluster
        follow_clusters(record, view.proposal(i, cluster), self.config)
        if cluster != record.cluster:
            out.tallies[user] = moved(record.segment, cluster, record)
        state.segment = dump(record)
        out.due[user] = record.due

    def inputs(self, raw: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Model inputs from raw feature values: log1p of counts and money."""
        inputs = raw[:, : self._d].copy()
        inputs[:, self._logged] = np.log1p(np.maximum(inputs[:, self._logged], 0.0))
        return inputs

    def _matching_rules(
        self,
        raw: npt.NDArray[np.float64],
        up: npt.NDArray[np.float64],
        down: npt.NDArray[np.float64],
    ) -> tuple[list[list[str]], list[list[str]]]:
        """Per user, the rules matching now, and those matching now or nudged either way."""
        names = self.rules.names
        if not names:
            empty: list[list[str]] = [[] for _ in range(len(raw))]
            return empty, empty
        hits = self._hits(raw)
        near = hits | self._hits(up) | self._hits(down)
        return _names(hits, names), _names(near, names)

    def _hits(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        features = zip(self.rules.features, self._rule_columns, strict=True)
        return self.rules.evaluate({n: values[:, i] for n, i in features})

    def _decide(  # noqa: PLR0917 - one call per user on the hot path
        self,
        view: _View,
        i: int,
        user: str,
        state: UserState,
        when: tuple[int, bool, int],
        out: Scored,
    ) -> None:
        now, timer, learn_cut = when
        record = load(state.segment)
        first = record.seq == 0
        segment, cluster = record.segment, record.cluster
        self._resolve_label(record, state, now, out)
        settled = settle(record, view.proposal(i, record.cluster), self.config, now)
        if segment != record.segment or cluster != record.cluster:
            out.tallies[user] = moved(segment, cluster, record)
        # One hash of user and time decides both samples (its low and high 16 bits), so a
        # replay samples the same users.
        draw = zlib.crc32(b"%d" % now, zlib.crc32(user.encode()))
        if not record.label_ts and draw >> 16 < self._label_cut:
            self._snapshot(record, now, view.inputs[i], view.propensity[i])
        if draw & 0xFFFF < learn_cut:
            rfm_values = view.raw[i, self._rfm]
            inputs = view.inputs[i].tolist()
            out.samples.append(Sample(user, inputs, float(rfm_values[1]), float(rfm_values[2])))
        record.due = next_due(record, state.last_seen, now, self.config)
        if settled.changed:
            record.since = now
        if settled.changed or settled.entered or settled.left:
            # The record as it was, decoded again only for the few users who publish a change.
            before = None if first else load(state.segment)
            reason = "first_seen" if before is None else ("timer" if timer else "activity")
            changes = self._changes(view, i, user, (before, record), settled, now, reason)
            out.changes.extend(changes)
        state.segment = dump(record)
        out.due[user] = record.due

    def _resolve_label(self, record: Record, state: UserState, now: int, out: Scored) -> None:
        """A purchase inside the horizon marks the snapshot bought; it resolves, either way,
        once the horizon is over. Positives held back that long reach the classifier in the
        order of their snapshots, with the negatives of the same time: released on the spot,
        the first week of a new stream would teach it nothing but positives."""
        if not record.label_ts:
            return
        end = record.label_ts + self.config.horizon_ms
        if record.label_ts < state.last_purchase <= end:
            record.label_hit = True
        if now < end:
            return
        inputs = np.frombuffer(record.label_x, dtype=np.float32).astype(np.float64).tolist()
        if len(inputs) == self._d:
            out.labels.append(Label(inputs, record.label_hit, record.label_p, now))
        record.label_ts, record.label_x, record.label_p = 0, b"", 0.0
        record.label_hit = False

    @staticmethod
    def _snapshot(
        record: Record, now: int, inputs: npt.NDArray[np.float64], propensity: float
    ) -> None:
        """Remember the inputs and the score given now (-1: no classifier yet) until the
        horizon tells whether a purchase followed; the classifier learns from these even
        before its scores are used."""
        record.label_ts = now
        record.label_p = -1.0 if math.isnan(propensity) else propensity
        record.label_x = inputs.astype(np.float32).tobytes()
        record.label_version = record.version

    def _changes(  # noqa: PLR0917
        self,
        view: _View,
        i: int,
        user: str,
        records: tuple[Record | None, Record],
        settled: Settled,
        now: int,
        reason: str,
    ) -> list[Change]:
        """The published changes of one scoring, numbered on from the record's sequence: the
        segment or band change first, then each rule segment entered, then each left."""
        before, after = records
        seq = after.seq - settled.changed - len(settled.entered) - len(settled.left)
        common = {
            "schema_version": SCHEMA_VERSION,
            "user_id": user,
            "reason": reason,
            "model_version": view.params.version,
            "event_time": datetime.fromtimestamp(now / 1000, UTC).isoformat(),
            "event_time_ms": now,
            "features": dict(zip(self.columns.names, view.raw[i].tolist(), strict=True)),
        }
        changes = []
        if settled.changed:
            seq += 1
            change_id = self._change_id(user, seq)
            label = view.labels.get
            payload = {
                "change_id": change_id,
                "type": SEGMENT,
                "previous": assignment(before, label(before.cluster, "")) if before else None,
                "current": assignment(after, label(after.cluster, "")),
                **common,
                "actions": list(self.config.playbook.get(after.segment, ())),
            }
            previous = before.segment if before else None
            changes.append(
                Change(user, change_id, now, previous, after.segment, payload,
                       settled.proposed_ms)
            )  # fmt: skip
        for rule, entered in [(r, True) for r in settled.entered] + [
            (r, False) for r in settled.left
        ]:
            seq += 1
            change_id = self._change_id(user, seq)
            payload = {
                "change_id": change_id,
                "type": MEMBERSHIP,
                "segment": rule,
                "entered": entered,
                **common,
                "actions": list(self.config.playbook.get(rule, ())) if entered else [],
            }
            changes.append(
                Change(user, change_id, now, None if entered else rule, rule, payload,
                       now, MEMBERSHIP)
            )  # fmt: skip
        return changes

    def _change_id(self, user: str, seq: int) -> str:
        return f"{user}:{self.epoch}:{seq}"


class _View:
    """One batch's scores as plain lists (indexing numpy per user is slow on the hot path)."""

    def __init__(  # noqa: PLR0917
        self,
        params: Params,
        scores: Scores,
        rfm_near: tuple[list[str], list[str]],
        rules: tuple[list[list[str]], list[list[str]]],
        inputs: npt.NDArray[np.float64],
        raw: npt.NDArray[np.float64],
    ) -> None:
        self.params = params
        self.clusters = _Nearest(params, scores.nearest, scores.distances)
        self.propensity: list[float] = scores.propensity.tolist()
        self.rfm = scores.rfm
        self.rfm_up, self.rfm_down = rfm_near
        self.rules, self.rules_near = rules
        self.inputs = inputs
        self.raw = raw
        self.labels = dict(zip(params.cluster_ids.tolist(), params.cluster_labels, strict=True))

    def proposal(self, i: int, current_cluster: int) -> Proposal:
        cluster, distance, current = self.clusters.of(i, current_cluster)
        return Proposal(
            cluster=cluster,
            cluster_distance=distance,
            current_distance=current,
            rfm=self.rfm[i],
            rfm_near=(self.rfm_up[i], self.rfm_down[i]),
            propensity=self.propensity[i],
            rules=self.rules[i],
            rules_near=self.rules_near[i],
            version=self.params.version,
        )


class _Nearest:
    """Each user's nearest centre in one batch, and their distance to any centre by id, as plain
    lists (indexing numpy one user at a time costs more than the lookup)."""

    def __init__(
        self, params: Params, nearest: npt.NDArray[np.int64], distances: npt.NDArray[np.float64]
    ) -> None:
        self._ids: list[int] = params.cluster_ids.tolist()
        self._row_of = {cluster: row for row, cluster in enumerate(self._ids)}
        self._nearest: list[int] = nearest.tolist()
        self._distances: list[list[float]] = distances.tolist()

    def of(self, i: int, current: int) -> tuple[int, float, float]:
        """User i's nearest cluster id and squared distance, and the squared distance to its
        current cluster (inf if that is gone); (-1, inf, inf) without clusters."""
        row = self._nearest[i]
        if row < 0:
            return -1, math.inf, math.inf
        distances = self._distances[i]
        at = self._row_of.get(current)
        return self._ids[row], distances[row], math.inf if at is None else distances[at]


def _names(hits: npt.NDArray[np.bool_], names: Sequence[str]) -> list[list[str]]:
    """Per row, the names of its True columns (most rows match no rule: one pass over hits)."""
    found: list[list[str]] = [[] for _ in range(len(hits))]
    rows, columns = np.nonzero(hits)
    for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
        found[row].append(names[column])
    return found
