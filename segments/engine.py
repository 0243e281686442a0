"""Score a batch of users: read their features, score with one model version, settle each
user's record through hysteresis, and say what changed, when to look again and what to learn.

Pure: the stream layer brings the states and the model, and stores and publishes the results.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from features.columns import Columns, numeric_names
from features.definitions import DEFAULT_WINDOWS, UserState, Window, catalog
from segments.config import RFM_FEATURES, SegmentConfig
from segments.policy import Proposal, Record, assignment, dump, load, moved, next_due, settle
from segments.rules import RuleSet
from segments.scoring import Params, Scores, score

SAMPLE_BUCKETS: Final = 1 << 16


@dataclass(frozen=True, slots=True)
class Change:
    """One published segment change (the payload is the output contract, without emitted_at)."""

    user_id: str
    change_id: str
    time_ms: int
    previous: str | None
    current: str
    payload: dict[str, Any]


@dataclass
class Scored:
    changes: list[Change] = field(default_factory=list)
    due: dict[str, int] = field(default_factory=dict)  # user -> next timer (0: none)
    # Sampled users for the trainer: model inputs and (frequency, monetary).
    samples: list[tuple[list[float], float, float]] = field(default_factory=list)
    # Resolved propensity snapshots: inputs, whether a purchase followed, the score given then.
    labels: list[tuple[list[float], bool, float]] = field(default_factory=list)
    # Population tallies (field, delta) that move with each user's write; only users who moved.
    tallies: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


class Engine:
    def __init__(self, config: SegmentConfig, windows: Sequence[Window] = DEFAULT_WINDOWS) -> None:
        self.config = config
        self.rules = RuleSet(config.rules, numeric_names(windows))
        model = list(config.features)
        extra = [n for n in (*RFM_FEATURES, *self.rules.features) if n not in model]
        self.columns = Columns([*model, *dict.fromkeys(extra)], windows)
        self._d = len(model)
        index = {n: i for i, n in enumerate(self.columns.names)}
        self._rfm = [index[n] for n in RFM_FEATURES]
        self._rule_columns = [index[n] for n in self.rules.features]
        logged = {d.name for d in catalog(windows) if d.logged}
        self._logged = np.array([n in logged for n in model])
        self._learn_cut = int(config.learn_rate * SAMPLE_BUCKETS)
        self._label_cut = int(config.label_rate * SAMPLE_BUCKETS)

    def score(
        self,
        params: Params,
        users: Sequence[str],
        states: Sequence[UserState],
        now: Sequence[int],
        timer: Sequence[bool],
    ) -> Scored:
        """Decide for every user; each state's `segment` record is updated in place."""
        if not users:
            return Scored()
        raw = self.columns.matrix(states, now)
        inputs = self.inputs(raw)
        scores = score(params, inputs, raw[:, self._rfm], self.config.recency_days)
        view = _View(params, scores, self._matching_rules(raw), inputs, raw)
        out = Scored()
        for i, (user, state) in enumerate(zip(users, states, strict=True)):
            self._decide(view, i, user, state, now[i], timer[i], out)
        return out

    def inputs(self, raw: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Model inputs from raw feature values: log1p of counts and money."""
        inputs = raw[:, : self._d].copy()
        inputs[:, self._logged] = np.log1p(np.maximum(inputs[:, self._logged], 0.0))
        return inputs

    def _matching_rules(self, raw: npt.NDArray[np.float64]) -> list[list[str]]:
        names = self.rules.names
        if not names:
            return [[] for _ in range(len(raw))]
        columns = {
            n: raw[:, i] for n, i in zip(self.rules.features, self._rule_columns, strict=True)
        }
        hits = self.rules.evaluate(columns)
        return [[names[j] for j in np.flatnonzero(row)] for row in hits]

    def _decide(  # noqa: PLR0917 - one call per user on the hot path
        self, view: _View, i: int, user: str, state: UserState, now: int, timer: bool, out: Scored
    ) -> None:
        record = load(state.segment)
        before_seq, segment, cluster = record.seq, record.segment, record.cluster
        self._resolve_label(record, state, now, out)
        changed = settle(record, view.proposal(i, record.cluster), self.config, now)
        if segment != record.segment or cluster != record.cluster:
            out.tallies[user] = moved(segment, cluster, record)
        # One hash of user and time decides both samples (its low and high 16 bits), so a
        # replay samples the same users.
        draw = zlib.crc32(b"%d" % now, zlib.crc32(user.encode()))
        if not record.label_ts and draw >> 16 < self._label_cut:
            self._snapshot(record, now, view.inputs[i], view.propensity[i])
        if draw & 0xFFFF < self._learn_cut:
            rfm = view.raw[i, self._rfm]
            out.samples.append((view.inputs[i].tolist(), float(rfm[1]), float(rfm[2])))
        record.due = next_due(record, state.last_seen, now, self.config)
        if changed:
            record.since = now
            reason = "first_seen" if before_seq == 0 else ("timer" if timer else "activity")
            before = load(state.segment)
            out.changes.append(self._change(view, i, user, before, record, now, reason))
        state.segment = dump(record)
        out.due[user] = record.due

    def _resolve_label(self, record: Record, state: UserState, now: int, out: Scored) -> None:
        if not record.label_ts:
            return
        end = record.label_ts + self.config.horizon_ms
        bought = record.label_ts < state.last_purchase <= end
        if not bought and now < end:
            return
        inputs = np.frombuffer(record.label_x, dtype=np.float32).astype(np.float64).tolist()
        if len(inputs) == self._d:
            out.labels.append((inputs, bought, record.label_p))
        record.label_ts, record.label_x, record.label_p = 0, b"", 0.0

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

    def _change(  # noqa: PLR0917
        self,
        view: _View,
        i: int,
        user: str,
        before: Record,
        after: Record,
        now: int,
        reason: str,
    ) -> Change:
        params = view.params
        label = view.labels.get
        previous = assignment(before, label(before.cluster, "")) if before.seq else None
        change_id = f"{user}:{after.seq}"
        payload = {
            "change_id": change_id,
            "user_id": user,
            "previous": previous,
            "current": assignment(after, label(after.cluster, "")),
            "reason": reason,
            "model_version": params.version,
            "event_time": datetime.fromtimestamp(now / 1000, UTC).isoformat(),
            "event_time_ms": now,
            "features": dict(zip(self.columns.names, view.raw[i].tolist(), strict=True)),
            "actions": list(self.config.playbook.get(after.segment, ())),
        }
        return Change(user, change_id, now, before.segment or None, after.segment, payload)


class _View:
    """One batch's scores as plain lists (indexing numpy per user is slow on the hot path)."""

    def __init__(
        self,
        params: Params,
        scores: Scores,
        rules: list[list[str]],
        inputs: npt.NDArray[np.float64],
        raw: npt.NDArray[np.float64],
    ) -> None:
        self.params = params
        self.nearest: list[int] = scores.nearest.tolist()
        self.distances: list[list[float]] = scores.distances.tolist()
        self.propensity: list[float] = scores.propensity.tolist()
        self.rfm = scores.rfm
        self.rules = rules
        self.inputs = inputs
        self.raw = raw
        self._ids: list[int] = params.cluster_ids.tolist()
        self._row_of = {cluster: row for row, cluster in enumerate(self._ids)}
        self.labels = dict(zip(self._ids, params.cluster_labels, strict=True))

    def proposal(self, i: int, current_cluster: int) -> Proposal:
        row = self.nearest[i]
        cluster, distance, current = -1, math.inf, math.inf
        if row >= 0:
            distances = self.distances[i]
            cluster, distance = self._ids[row], distances[row]
            current_row = self._row_of.get(current_cluster)
            current = distances[current_row] if current_row is not None else math.inf
        rules = self.rules[i]
        return Proposal(
            segment=rules[0] if rules else self.rfm[i],
            cluster=cluster,
            cluster_distance=distance,
            current_distance=current,
            rfm=self.rfm[i],
            propensity=self.propensity[i],
            rules=rules,
            version=self.params.version,
        )
