"""A user's assignment and how it moves: hysteresis, change events, timers, pending labels.

The `Record` travels inside the user's feature state (one compare-and-set writes both), so a
decision is never stored without the features it was made on. A change gets the id
`<user>:<epoch>:<seq>` from the record's sequence: re-deciding after a crash gives the same id.
"""

from __future__ import annotations

import math
from typing import Any, Final, NamedTuple

import msgspec

from segments.config import SegmentConfig

BANDS: Final = ("low", "medium", "high")
NO_BAND: Final = "unknown"


class Record(msgspec.Struct, array_like=True, gc=False):
    seq: int = 0
    segment: str = ""
    cluster: int = -1
    rfm: str = ""
    band: str = ""
    propensity: float = -1.0
    rules: list[str] = msgspec.field(default_factory=list)
    version: int = 0
    since: int = 0  # event time of the last change
    candidate: str = ""  # "segment|band" proposed but not yet confirmed
    seen: int = 0  # consecutive scorings that proposed the candidate
    due: int = 0  # event time of the next timer, 0 for none
    label_ts: int = 0  # pending propensity snapshot (0: none)
    label_p: float = 0.0
    label_x: bytes = b""  # float32 model inputs at the snapshot
    label_version: int = 0
    # Fields are encoded by position: new ones go last, so stored records still load.
    candidate_since: int = 0  # event time the candidate was first proposed
    label_hit: bool = False  # a purchase came inside the pending snapshot's horizon
    scored: int = 0  # event time of the last scoring (the propensity's age)
    audiences: list[str] = msgspec.field(default_factory=list)  # runtime audiences, a member of
    parent: int = -1  # the cluster's parent group (-1: none)
    outlier: bool = False  # far from every dense region of the population
    spend: float = -1.0  # predicted spend over the spend horizon (-1: none yet)
    recommendations: list[str] = msgspec.field(default_factory=list)  # cross-sell items
    spend_ts: int = 0  # pending spend snapshot (0: none)
    # float32: the regressor's inputs at the snapshot (the first, the naive prediction), then
    # the prediction given (-1: none); one field, as the record goes into every write.
    spend_x: bytes = b""
    spend_from: float = 0.0  # lifetime spend at the snapshot
    spend_seen: float = 0.0  # spend since the snapshot, as of its last scoring inside the horizon
    offer_ts: int = 0  # event time of the last change that carried actions (0: none open)
    offer: list[str] = msgspec.field(default_factory=list)  # the segments it offered actions of


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Record).decode


def load(blob: bytes) -> Record:
    return _decode(blob) if blob else Record()


def dump(record: Record) -> bytes:
    return _encode(record)


class Proposal(NamedTuple):
    """What scoring says about one user now, before hysteresis (a tuple: one per user per
    batch, so it must be cheap to make)."""

    cluster: int  # nearest centre's stable id (-1 without clusters)
    cluster_distance: float  # squared distance to it
    current_distance: float  # squared distance to the user's current cluster (inf if gone)
    rfm: str
    # The RFM segments of the user's values nudged by the segment margin towards more and
    # towards less value: a move away from either of them is marginal.
    rfm_near: tuple[str, str]
    propensity: float  # nan when not ready
    rules: list[str]  # rule segments matching now, in configured order
    rules_near: list[str]  # matching now or with the values nudged either way
    version: int


class Settled(NamedTuple):
    """What `settle` did: whether the (segment, band) changed, and from which event time the
    evidence for it held; the rule segments entered and left."""

    changed: bool
    proposed_ms: int
    entered: list[str]
    left: list[str]


def band_of(propensity: float, edges: tuple[float, float]) -> str:
    if math.isnan(propensity):  # nan: no classifier yet
        return NO_BAND
    return BANDS[(propensity >= edges[0]) + (propensity >= edges[1])]


def counted_in(record: Record) -> list[tuple[str, int]]:
    """The population tallies a user's record counts in: its segment, its cluster and its
    audiences."""
    tallies = []
    if record.segment:
        tallies.append((f"segment:{record.segment}", 1))
    if record.cluster >= 0:
        tallies.append((f"cluster:{record.cluster}", 1))
    tallies += [(f"audience:{audience}", 1) for audience in record.audiences]
    return tallies


def moved(segment: str, cluster: int, record: Record) -> list[tuple[str, int]]:
    """Tally moves from a record's (segment, cluster) before scoring to where it is now."""
    moves = []
    if segment != record.segment:
        if segment:
            moves.append((f"segment:{segment}", -1))
        if record.segment:
            moves.append((f"segment:{record.segment}", 1))
    if cluster != record.cluster:
        if cluster >= 0:
            moves.append((f"cluster:{cluster}", -1))
        if record.cluster >= 0:
            moves.append((f"cluster:{record.cluster}", 1))
    return moves


def settle(record: Record, proposal: Proposal, config: SegmentConfig, now_ms: int) -> Settled:
    """Move the record towards the proposal through hysteresis.

    Rule segments are memberships with a margin: a user enters a rule when it matches and
    leaves when it no longer matches even with the values nudged by the margin either way. The
    segment is the first rule the user is a member of, else the RFM segment. A move is taken at
    once when the evidence is clear; a marginal one (the current RFM segment is still what
    the values give when nudged by the margin) only after it was proposed on `confirmations`
    scorings spanning `dwell_ms` of event time with nothing else proposed in between, so a
    user hovering on an edge does not flap. Bands move likewise (`_band`).
    """
    first = record.seq == 0
    previous = set(record.rules)
    members = [r for r in proposal.rules_near if r in proposal.rules or r in previous]
    entered = [r for r in members if r not in previous]
    left = [r for r in record.rules if r not in members]
    cluster = _cluster(record, proposal, config.cluster_margin, first)
    segment = members[0] if members else proposal.rfm
    band, band_marginal = _band(record, proposal.propensity, config, first)
    target = (segment, band)
    current = (record.segment, record.band)
    marginal = band_marginal or (
        not members and segment != record.segment and record.segment in proposal.rfm_near
    )
    # Evidence for the target first came when it was first proposed (as the candidate).
    proposed = record.candidate_since if record.candidate == "|".join(target) else now_ms
    if first or target == current or not marginal:
        record.candidate, record.seen, record.candidate_since = "", 0, 0
        settled = target
    else:
        settled = _confirm(record, target, config, now_ms)
    # A cluster move alone is not published (it is carried on the next change and shown in the
    # profile): personalisation acts on the segment and the propensity band.
    changed = settled != current
    record.segment, record.band = settled
    record.cluster = cluster
    record.rfm, record.rules, record.version = proposal.rfm, members, proposal.version
    record.propensity = -1.0 if math.isnan(proposal.propensity) else proposal.propensity
    record.scored = now_ms
    record.seq += changed + len(entered) + len(left)
    return Settled(changed, proposed, entered, left)


def follow_clusters(record: Record, proposal: Proposal, config: SegmentConfig) -> None:
    """Move the record's cluster alone towards the proposal, as `settle` would."""
    record.cluster = _cluster(record, proposal, config.cluster_margin, record.seq == 0)


def _confirm(
    record: Record, target: tuple[str, str], config: SegmentConfig, now_ms: int
) -> tuple[str, str]:
    key = "|".join(target)
    if record.candidate == key:
        record.seen += 1
    else:
        record.candidate, record.seen, record.candidate_since = key, 1, now_ms
    if record.seen >= config.confirmations and now_ms - record.candidate_since >= config.dwell_ms:
        record.candidate, record.seen, record.candidate_since = "", 0, 0
        return target
    return record.segment, record.band


def _cluster(record: Record, proposal: Proposal, margin: float, first: bool) -> int:
    if first:
        return proposal.cluster
    nearest = (proposal.cluster, proposal.cluster_distance)
    return next_cluster(record.cluster, nearest, proposal.current_distance, margin)


def next_cluster(
    current: int, nearest: tuple[int, float], current_distance: float, margin: float
) -> int:
    """The cluster after a scoring, from the current one and the nearest centre (id, squared
    distance): the nearest, when it is clearly nearer than the current one (still there)."""
    cluster, distance = nearest
    if current < 0 or cluster < 0 or distance < (1.0 - margin) * current_distance:
        return cluster
    return current


def _band(
    record: Record, propensity: float, config: SegmentConfig, first: bool
) -> tuple[str, bool]:
    """The proposed band, and whether the move to it is marginal. Leaving the current band
    takes a score `band_margin` past the edge (so a score hovering on the edge does not flap),
    landing in whatever band the score reaches after that margin; a move that would not also
    leave the band at twice the margin is marginal."""
    proposed = band_of(propensity, config.bands)
    if first or proposed == record.band or record.band in ("", NO_BAND) or proposed == NO_BAND:
        return proposed, False
    band = _past(record.band, propensity, config.band_margin, config)
    if band == record.band:
        return band, False
    return band, _past(record.band, propensity, 2 * config.band_margin, config) == record.band


def _past(current: str, propensity: float, margin: float, config: SegmentConfig) -> str:
    """The band a score reaches once `margin` is taken off it towards the current band."""
    rank = BANDS.index
    up = rank(band_of(propensity, config.bands)) > rank(current)
    nudged = band_of(propensity - margin if up else propensity + margin, config.bands)
    moved = rank(nudged) > rank(current) if up else rank(nudged) < rank(current)
    return nudged if moved else current


def next_due(record: Record, last_seen: int, now_ms: int, config: SegmentConfig) -> int:
    """The next event time this user must be re-scored without an event of their own."""
    times = []
    if last_seen:
        # The first recency threshold still ahead (the thresholds increase).
        for after_ms in config.recency_ms:
            if last_seen + after_ms > now_ms:
                times.append(last_seen + after_ms)
                break
    if record.label_ts:
        times.append(record.label_ts + config.horizon_ms)
    if record.spend_ts:
        times.append(record.spend_ts + config.spend_horizon_ms)
    if last_seen and (not config.keep_ms or now_ms - last_seen < config.keep_ms):
        # A propensity is never older than its horizon: quiet users' scores follow their
        # recency, for as long as their state is kept.
        times.append(now_ms + config.horizon_ms)
    if record.candidate:
        # Look again once the dwell is over, so a quiet user's change is confirmed too.
        times.append(max(record.candidate_since + config.dwell_ms, now_ms + 1))
    return min(times, default=0)


def assignment(record: Record, label: str) -> dict[str, Any]:
    """The `previous`/`current` object of a change event."""
    return {
        "segment": record.segment,
        "cluster": record.cluster if record.cluster >= 0 else None,
        "cluster_label": label or None,
        "rfm": record.rfm,
        "propensity": round(record.propensity, 4) if record.propensity >= 0 else None,
        "propensity_band": record.band,
        "rules": list(record.rules),
        "parent": record.parent if record.parent >= 0 else None,
        "outlier": record.outlier,
        "predicted_spend": record.spend if record.spend >= 0 else None,
        "recommendations": list(record.recommendations),
    }
