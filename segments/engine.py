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
from segments.audiences import Audiences, Catalog
from segments.clusterers import squared_distances
from segments.config import CROSS_SELL_ACTIONS, RFM_FEATURES, SegmentConfig
from segments.crosssell import CATEGORY_ITEM, Basket
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
from segments.spend import candidates, spend_features

SAMPLE_BUCKETS: Final = 1 << 16


SEGMENT: Final = "segment"
MEMBERSHIP: Final = "membership"
AUDIENCE: Final = "audience"
# Why an audience was entered or left besides a scoring's own reasons: the sweep that follows a
# new catalog version, or the audience's removal.
BACKFILL: Final = "backfill"
REMOVED: Final = "removed"
# The version of the segments topic's value layout (`schemas/`), in every change.
SCHEMA_VERSION: Final = 1
# Features whose larger values mean less value (the others, more), for nudging by the margin.
DAY_FEATURES: Final = frozenset({"recency_days", "days_since_last_seen"})
# Population tallies of campaigns: changes that carried an action, and purchases that followed
# one within the horizon, by `<segment>|<action>`.
OFFERS: Final = "offer:"
CONVERSIONS: Final = "conversion:"


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


class SpendLabel(NamedTuple):
    """A resolved spend snapshot: the regressor's inputs then, what the user spent over the
    horizon, the prediction given then (-1: none), the naive one, and when it resolved."""

    inputs: list[float]
    spent: float
    predicted: float
    # The prediction of the version current when the label resolved, which has not learned it
    # (-1: none; progressive validation, as river's `progressive_val_score`): a label takes the
    # whole horizon, so the predictions given at snapshots resolve a horizon after the first.
    checked: float
    baseline: float
    time_ms: int


@dataclass
class Scored:
    changes: list[Change] = field(default_factory=list)
    due: dict[str, int] = field(default_factory=dict)  # user -> next timer (0: none)
    samples: list[Sample] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    spend_labels: list[SpendLabel] = field(default_factory=list)
    baskets: list[Basket] = field(default_factory=list)
    # Population tallies (field, delta) that move with each user's write; only users who moved.
    tallies: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


class Engine:
    def __init__(self, config: SegmentConfig, windows: Sequence[Window] = DEFAULT_WINDOWS) -> None:
        self.config = config
        self._windows = tuple(windows)
        self.rules = RuleSet(config.rules, numeric_names(windows))
        model = list(config.features)
        self._spend_names = spend_features(windows)
        analytics = (*RFM_FEATURES, *self._spend_names, *self.rules.features)
        extra = [n for n in analytics if n not in model]
        # What a change carries as `features`, whatever audiences read besides.
        self._published = (*model, *dict.fromkeys(extra))
        # The model's inputs alone (the default ones need no window sums: cheap to check).
        self._model_columns = Columns(model, windows)
        self._d = len(model)
        logged = {d.name for d in catalog(windows) if d.logged}
        self._logged = np.array([n in logged for n in model])
        self._label_cut = int(config.label_rate * SAMPLE_BUCKETS)
        # The state's epoch (see `stream.service.origin_guard`): part of every change id, so
        # the ids stay unique when a rebuilt state numbers each user's changes from 1 again.
        self.epoch = 0
        self.set_audiences(Catalog())
        self._campaigns: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, int], ...]] = {}

    def set_audiences(self, catalog: Catalog) -> None:
        """Evaluate this catalog's audiences from the next batch on."""
        self.audiences = Audiences(catalog, self._windows)
        extra = [n for n in self.audiences.features if n not in self._published]
        self.columns = Columns([*self._published, *extra], self._windows)
        self._index = {n: i for i, n in enumerate(self.columns.names)}
        self._rfm = [self._index[n] for n in RFM_FEATURES]
        self._spend_columns = [self._index[n] for n in self._spend_names]
        self._rule_columns = [self._index[n] for n in self.rules.features]
        self._nudge = _nudge(self.columns.names, self.config.segment_margin)
        # The audiences' features alone, for a sweep's check.
        self._audience_columns = Columns(self.audiences.features, self._windows)
        self._audience_nudge = _nudge(self.audiences.features, self.config.segment_margin)

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
        published = raw[:, : len(self._published)]
        view = _View(params, scores, near, rules, inputs, (published, raw[:, self._rfm]))
        view.analytics(self._spend_inputs(raw))
        out = Scored()
        cut = int(learn_share * SAMPLE_BUCKETS)
        records, reasons = [], []
        for i, (user, state) in enumerate(zip(users, states, strict=True)):
            if user in reassign:
                records.append(self._reassign(view, i, user, state, out))
                reasons.append(BACKFILL)
            else:
                record, reason = self._decide(view, i, user, state, (now[i], timer[i], cut), out)
                records.append(record)
                reasons.append(reason)
        if self.audiences or any(r.audiences for r in records):
            found = self._audience_lists((raw, up, down), self._index, records, states)
            moments = _Moments(users, states, now, reasons)
            self._settle_audiences(view, moments, records, found, out)
        return out

    def moving(
        self,
        params: Params,
        users: Sequence[str],
        states: Sequence[UserState],
        now: Sequence[int],
    ) -> list[str]:
        """Of these users, those whose cluster or audiences `reassign` would move; changes
        nothing. A sweep checks every user, and most stay where they are: a check is one row of
        a matrix product, where a write is a compare-and-set in Redis."""
        records = [load(state.segment) for state in states]
        found = set()
        if users and params.clusters_ready:
            found.update(self._cluster_moving(params, users, states, records, now))
        if self.audiences or any(r.audiences for r in records):
            members = self.members(states, now, records)
            found.update(
                u for u, m, r in zip(users, members, records, strict=True) if m != r.audiences
            )
        return [u for u in users if u in found]

    def members(
        self,
        states: Sequence[UserState],
        now: Sequence[int],
        records: Sequence[Record] | None = None,
    ) -> list[list[str]]:
        """The audiences each user would be a member of at `now`, from their stored record
        (its assignment, and the memberships the margin keeps); changes nothing."""
        records = records if records is not None else [load(s.segment) for s in states]
        raw = self._audience_columns.matrix(states, now)
        triple = (raw, raw * self._audience_nudge, raw / self._audience_nudge)
        index = {n: i for i, n in enumerate(self.audiences.features)}
        matching, near = self._audience_lists(triple, index, records, states)
        return [
            _members(m, n, r.audiences) for m, n, r in zip(matching, near, records, strict=True)
        ]

    def _cluster_moving(
        self,
        params: Params,
        users: Sequence[str],
        states: Sequence[UserState],
        records: Sequence[Record],
        now: Sequence[int],
    ) -> list[str]:
        raw = self._model_columns.matrix(states, now)
        distances = squared_distances(params.standardize(self.inputs(raw)), params.centers)
        clusters = _Nearest(params, distances.argmin(axis=1), distances)
        margin = self.config.cluster_margin
        found = []
        for i, (user, record) in enumerate(zip(users, records, strict=True)):
            current = record.cluster
            cluster, distance, current_distance = clusters.of(i, current)
            if next_cluster(current, (cluster, distance), current_distance, margin) != current:
                found.append(user)
        return found

    def _audience_lists(
        self,
        values: tuple[npt.NDArray[np.float64], ...],
        index: dict[str, int],
        records: Sequence[Record],
        states: Sequence[UserState],
    ) -> tuple[list[list[str]], list[list[str]]]:
        """Per user, the audiences matching now, and those matching now or with the values
        (raw, nudged up, nudged down) nudged either way: membership moves as rules' does."""
        audiences = self.audiences
        if not audiences:
            empty: list[list[str]] = [[] for _ in records]
            return empty, empty

        def hits(matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
            columns = {n: matrix[:, index[n]] for n in audiences.features}
            return audiences.evaluate(columns, records, states)

        raw, up, down = values
        now_hits = hits(raw)
        near = now_hits | hits(up) | hits(down)
        return _names(now_hits, audiences.names), _names(near, audiences.names)

    def _settle_audiences(
        self,
        view: _View,
        moments: _Moments,
        records: Sequence[Record],
        found: tuple[list[list[str]], list[list[str]]],
        out: Scored,
    ) -> None:
        """Move each record's audiences and publish every enter and leave, numbered on from
        the record's sequence after the scoring's other changes."""
        matching, near = found
        for i, record in enumerate(records):
            members = _members(matching[i], near[i], record.audiences)
            if members == record.audiences:
                continue
            entered = [a for a in members if a not in record.audiences]
            left = [a for a in record.audiences if a not in members]
            user = moments.users[i]
            counts = [(f"audience:{a}", 1) for a in entered] + [(f"audience:{a}", -1) for a in left]
            out.tallies.setdefault(user, []).extend(counts)
            record.audiences = members
            seq = record.seq
            record.seq += len(entered) + len(left)
            common = self._common(view, i, user, moments.now[i], moments.reasons[i])
            for audience, way in [(a, True) for a in entered] + [(a, False) for a in left]:
                seq += 1
                out.changes.append(self._audience_change(audience, way, seq, common))
            moments.states[i].segment = dump(record)

    def _audience_change(
        self, audience: str, entered: bool, seq: int, common: dict[str, Any]
    ) -> Change:
        user, now = common["user_id"], common["event_time_ms"]
        change_id = self._change_id(user, seq)
        version = self.audiences.version_of.get(audience)
        payload = {
            "change_id": change_id,
            "type": AUDIENCE,
            "audience": audience,
            "entered": entered,
            # A removed audience's leaves carry the catalog version that removed it.
            "audience_version": version or self.audiences.catalog.version,
            **common,
            "actions": list(self.config.playbook.get(audience, ())) if entered else [],
        }
        if version is None:
            payload["reason"] = REMOVED
        previous = None if entered else audience
        return Change(user, change_id, now, previous, audience, payload, now, AUDIENCE)

    def _reassign(self, view: _View, i: int, user: str, state: UserState, out: Scored) -> Record:
        """A user swept after the clusters were placed anew (`stream.service.sweep`): the
        cluster follows the new centres, through the same margin. The segment, the propensity
        and the timers wait for the user's own event or timer, so a sweep publishes no change,
        and it gives the trainer no sample: samples would move the centres again. Its
        audiences are settled with everyone's (a backfill after the catalog changed)."""
        record = load(state.segment)
        cluster = record.cluster
        if view.params.clusters_ready:  # a model without clusters says nothing about them
            follow_clusters(record, view.proposal(i, cluster), self.config)
        if cluster != record.cluster:
            out.tallies[user] = moved(record.segment, cluster, record)
            record.parent = view.parents.get(record.cluster, -1)
        state.segment = dump(record)
        out.due[user] = record.due
        return record

    def _spend_inputs(self, raw: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The spend regressor's inputs: simple predictions it blends (`segments.spend`)."""
        horizon = self.config.spend_horizon_ms
        return candidates(raw[:, self._spend_columns], self._windows, horizon)

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
    ) -> tuple[Record, str]:
        """Score one user; the record as it is now, and why it was scored (as changes say)."""
        now, timer, learn_cut = when
        record = load(state.segment)
        first = record.seq == 0
        reason = "first_seen" if first else ("timer" if timer else "activity")
        segment, cluster = record.segment, record.cluster
        self._resolve_label(record, state, now, out)
        settled = settle(record, view.proposal(i, record.cluster), self.config, now)
        if segment != record.segment or cluster != record.cluster:
            out.tallies[user] = moved(segment, cluster, record)
        # One hash of user and time decides both samples (its low and high 16 bits), so a
        # replay samples the same users.
        draw = zlib.crc32(b"%d" % now, zlib.crc32(user.encode()))
        labelled = draw >> 16 < self._label_cut
        if not record.label_ts and labelled:
            self._snapshot(record, now, view.inputs[i], view.propensity[i])
        self._beside(view, i, (user, state, record), (now, labelled), out)
        if draw & 0xFFFF < learn_cut:
            frequency, monetary = view.sample_rfm(i)
            out.samples.append(Sample(user, view.input_row(i), frequency, monetary))
        record.due = next_due(record, state.last_seen, now, self.config)
        if settled.changed:
            record.since = now
        if settled.changed or settled.entered or settled.left:
            # The record as it was, decoded again only for the few users who publish a change.
            before = None if first else load(state.segment)
            changes = self._changes(view, i, user, (before, record), settled, now, reason)
            out.changes.extend(changes)
            offered = _offered(record, changes, now)
            if offered:
                out.tallies.setdefault(user, []).extend(self._campaign(OFFERS, offered))
        state.segment = dump(record)
        out.due[user] = record.due
        return record, reason

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

    def _beside(
        self,
        view: _View,
        i: int,
        who: tuple[str, UserState, Record],
        when: tuple[int, bool],
        out: Scored,
    ) -> None:
        """What a scoring tells besides the segment: a spend label resolved (and a new
        snapshot), an open offer converted, the cluster's parent group, whether the user is an
        outlier, their predicted spend and cross-sell recommendations, their basket's growth.
        Each step is skipped in one test when it has nothing to do (most users, most times)."""
        user, state, record = who
        now, labelled = when
        if record.spend_ts:
            self._resolve_spend(record, state, (now, view.params), out)
        if record.offer_ts:
            converted = _converted(record, state, now, self.config.horizon_ms)
            if converted:
                out.tallies.setdefault(user, []).extend(self._campaign(CONVERSIONS, converted))
        record.parent = view.parents.get(record.cluster, -1)
        record.outlier = view.outlier[i]
        record.spend = view.spend[i]
        rules = view.rules_table
        if rules is not None and state.recent:
            found = rules.recommend(state.recent, self.config.recommendations)
            record.recommendations = [rule.consequent for rule in found]
        elif record.recommendations:
            record.recommendations = []
        if not record.spend_ts and labelled:
            self._spend_snapshot(record, state, now, view, i)
        if state.basket_key:
            _baskets(state, now, out.baskets)

    def _resolve_spend(
        self, record: Record, state: UserState, at: tuple[int, Params], out: Scored
    ) -> None:
        """What the user spent since the spend snapshot, followed at every scoring inside the
        horizon; once it is over, the snapshot resolves into a label. A purchase past the
        horizon, in the scoring that resolves it, is left out. Only with a snapshot pending."""
        now, params = at
        end = record.spend_ts + self.config.spend_horizon_ms
        if now <= end or state.last_purchase <= end:
            record.spend_seen = max(0.0, state.spend - record.spend_from)
        if now < end:
            return
        *inputs, given = np.frombuffer(record.spend_x, dtype=np.float32).astype(float).tolist()
        checked = _predicted(params, inputs)
        naive = inputs[0]
        out.spend_labels.append(SpendLabel(inputs, record.spend_seen, given, checked, naive, now))
        record.spend_ts, record.spend_x = 0, b""
        record.spend_from = record.spend_seen = 0.0

    @staticmethod
    def _spend_snapshot(record: Record, state: UserState, now: int, view: _View, i: int) -> None:
        record.spend_ts = now
        record.spend_x = view.spend_row(i) + np.float32(record.spend).tobytes()
        record.spend_from = state.spend
        record.spend_seen = 0.0

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
        common = self._common(view, i, user, now, reason)
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
                "actions": self._actions(after.segment, after.recommendations),
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
                "actions": self._actions(rule, after.recommendations) if entered else [],
            }
            changes.append(
                Change(user, change_id, now, None if entered else rule, rule, payload,
                       now, MEMBERSHIP)
            )  # fmt: skip
        return changes

    def _campaign(self, kind: str, segments: Sequence[str]) -> tuple[tuple[str, int], ...]:
        """Tallies of one offer or conversion: `<kind><segment>|<action>` for each playbook
        action of its segments (a cross-sell action once, without items)."""
        asked = (kind, tuple(segments))
        found = self._campaigns.get(asked)
        if found is None:
            playbook = self.config.playbook
            pairs = dict.fromkeys(f"{s}|{a}" for s in segments for a in playbook.get(s, ()))
            found = self._campaigns[asked] = tuple((kind + pair, 1) for pair in pairs)
        return found

    def _actions(self, segment: str, recommendations: Sequence[str]) -> list[str]:
        """The playbook's actions for a segment, each cross-sell one given as one
        `<action>:<item>` per recommendation (as it is when there are none)."""
        actions: list[str] = []
        for action in self.config.playbook.get(segment, ()):
            if action in CROSS_SELL_ACTIONS and recommendations:
                actions += [f"{action}:{item}" for item in recommendations]
            else:
                actions.append(action)
        return actions

    def _common(self, view: _View, i: int, user: str, now: int, reason: str) -> dict[str, Any]:
        """What every change of one scoring carries."""
        return {
            "schema_version": SCHEMA_VERSION,
            "user_id": user,
            "reason": reason,
            "model_version": view.params.version,
            "event_time": view.event_time(now),
            "event_time_ms": now,
            "features": dict(zip(self._published, view.features(i), strict=True)),
        }

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
        raw: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
    ) -> None:
        """`raw`: the published features' columns and the R, F, M ones."""
        self.params = params
        self.clusters = _Nearest(params, scores.nearest, scores.distances)
        self.propensity: list[float] = scores.propensity.tolist()
        self.rfm = scores.rfm
        self.rfm_up, self.rfm_down = rfm_near
        self.rules, self.rules_near = rules
        self.inputs = inputs
        self.raw, self.rfm_raw = raw
        self.labels = dict(zip(params.cluster_ids.tolist(), params.cluster_labels, strict=True))
        density = params.density
        outlier = density.is_outlier(scores.standardized) if density and len(scores.rfm) else None
        self.outlier: list[bool] = [False] * len(self.raw) if outlier is None else outlier.tolist()
        self.parents = params.hierarchy.parent_of if params.hierarchy else {}
        self.rules_table = params.rules if params.rules else None  # None: no rule at all
        self.spend: list[float] = []
        self._spend_bytes, self._spend_width = b"", 0
        # Rows as lists, made for the whole batch at its first use (the trainer samples a
        # share of the users; one numpy row at a time costs 3 µs a user).
        self._input_rows: list[list[float]] | None = None
        self._rfm_rows: list[list[float]] | None = None
        self._features: list[list[float]] | None = None
        self._times: dict[int, str] = {}

    def input_row(self, i: int) -> list[float]:
        if self._input_rows is None:
            self._input_rows = self.inputs.tolist()
        return self._input_rows[i]

    def sample_rfm(self, i: int) -> tuple[float, float]:
        """User i's frequency and monetary values (what the trainer's samples carry)."""
        if self._rfm_rows is None:
            self._rfm_rows = self.rfm_raw.tolist()
        row = self._rfm_rows[i]
        return row[1], row[2]

    def features(self, i: int) -> list[float]:
        """User i's published features, as a list."""
        if self._features is None:
            self._features = self.raw.tolist()
        return self._features[i]

    def event_time(self, now: int) -> str:
        """`now` as ISO 8601 (a batch's users share a few watermarks)."""
        text = self._times.get(now)
        if text is None:
            text = self._times[now] = datetime.fromtimestamp(now / 1000, UTC).isoformat()
        return text

    def analytics(self, spend_inputs: npt.NDArray[np.float64]) -> None:
        """The spend predictions, from the regressor's inputs (the first: the naive one)."""
        spend = self.params.spend
        predicted = spend.predict(spend_inputs) if spend is not None else None
        # As records keep them: to the cent, -1 for none.
        self.spend = (
            [-1.0] * len(spend_inputs)
            if predicted is None
            else np.where(np.isnan(predicted), -1.0, np.round(predicted, 2)).tolist()
        )
        # float32 rows as one buffer: a user's snapshot is a slice of it, not a numpy call.
        self._spend_bytes = spend_inputs.astype(np.float32).tobytes()
        self._spend_width = spend_inputs.shape[1] * 4

    def spend_row(self, i: int) -> bytes:
        """User i's spend inputs as float32 bytes (as a snapshot keeps them)."""
        width = self._spend_width
        return self._spend_bytes[i * width : (i + 1) * width]

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


class _Moments(NamedTuple):
    """The users of one scoring, with what each was scored at and why."""

    users: Sequence[str]
    states: Sequence[UserState]
    now: Sequence[int]
    reasons: Sequence[str]


def _predicted(params: Params, inputs: list[float]) -> float:
    """One snapshot's spend as the version predicts it (-1 without a usable regressor)."""
    if params.spend is None or not inputs:
        return -1.0
    predicted = float(params.spend.predict(np.array([inputs]))[0])
    return -1.0 if math.isnan(predicted) else predicted


def _baskets(state: UserState, now: int, found: list[Basket]) -> None:
    """The growth of the user's basket since it was last counted, for the cross-sell counts:
    its products, and its categories as items of their own."""
    products, categories = state.basket_counted
    basket, basket_categories = state.basket, state.basket_categories
    if len(basket) == products and len(basket_categories) == categories:
        return  # nothing new (most scorings)
    if len(basket) > products:
        found.append(Basket(tuple(basket[:products]), tuple(basket[products:]), now))
    if len(basket_categories) > categories:
        named = [CATEGORY_ITEM + c for c in basket_categories]
        found.append(Basket(tuple(named[:categories]), tuple(named[categories:]), now))
    state.basket_counted = (len(basket), len(basket_categories))


def _offered(record: Record, changes: Sequence[Change], now: int) -> list[str]:
    """The segments a scoring's changes offered actions of: an offer opens for them,
    replacing any still open."""
    segments = [change.current for change in changes if change.payload.get("actions")]
    if segments:
        record.offer_ts, record.offer = now, segments
    return segments


def _converted(record: Record, state: UserState, now: int, horizon_ms: int) -> list[str]:
    """The segments of an open offer that converts now: a purchase followed it within the
    horizon (counted once). It closes either way once the horizon is over. The state's recent
    orders (a day and more) hold every purchase since the last scoring, so one inside the
    horizon counts even when a later one of the same moment is past it."""
    start, end = record.offer_ts, record.offer_ts + horizon_ms
    if start < state.last_purchase <= end or any(
        start < ts <= end for ts in state.recent_orders.values()
    ):
        segments, record.offer_ts, record.offer = record.offer, 0, []
        return segments
    if now > end:
        record.offer_ts, record.offer = 0, []
    return []


def _members(matching: list[str], near: list[str], previous: list[str]) -> list[str]:
    """The audiences a user is a member of: those matching now, and those it was in that still
    match with the values nudged either way, in catalog order."""
    return [a for a in near if a in matching or a in previous]


def _nudge(names: Sequence[str], segment_margin: float) -> npt.NDArray[np.float64]:
    """Multiplies each column to nudge a user's values towards more value (divides: less)."""
    margin = 1.0 + segment_margin
    return np.array([1.0 / margin if n in DAY_FEATURES else margin for n in names])


def _names(hits: npt.NDArray[np.bool_], names: Sequence[str]) -> list[list[str]]:
    """Per row, the names of its True columns (most rows match no rule: one pass over hits)."""
    found: list[list[str]] = [[] for _ in range(len(hits))]
    rows, columns = np.nonzero(hits)
    for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
        found[row].append(names[column])
    return found
