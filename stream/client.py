"""Point reads of users' segments and features, for other services: `SegmentClient`.

    from stream.client import SegmentClient

    client = SegmentClient("redis://localhost:6379/0", prefix="seg")
    view = client.user("u0000042")  # a UserView, or None for an unknown or erased user
    if view is not None:
        print(view.segment, view.propensity_band, view.features["orders_30d"])

The client needs only the Redis URL and the key prefix the service runs with, plus its
pseudonymisation key when it has one (`SEGSTREAM_PRIVACY__PSEUDONYMIZE_KEY`): how features are
computed (the rolling windows) comes from the layout record every instance writes at start
(`features.layout`). It imports neither Kafka nor the service, and one client may be shared by
threads (redis-py's connection pool). What it returns is what the service last wrote: a user's
segment as last decided, and their features as of the event-time watermark of their input
partition, exactly as `segstream profile` shows them.

Every `user` or `users` call is one Redis round trip: the layout record, the users' states and
erasure markers, and the partitions' watermarks in one pipeline. The layout is read every time
(a GET of a few hundred bytes) rather than cached, so a service restarted with other windows is
followed at once and a wrong URL or prefix is told on the first read; only its parsing is
cached, for as long as the stored bytes stay the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import orjson
import redis

from features import keys, resp
from features.definitions import UserState, Value, Window, compute_features
from features.errors import StoreUnavailableError
from features.layout import PSEUDONYMISED, Layout
from features.privacy import Pseudonymizer
from features.store import as_of, read_users, redis_address
from segments import policy
from stream.errors import SegstreamError, TransientError

DEFAULT_TIMEOUT_S = 2.0


class ClientError(SegstreamError):
    """Root of the errors `SegmentClient` raises."""


class LayoutMissingError(ClientError):
    """No layout record under the prefix: the service never ran against this Redis and prefix
    (or the URL or the prefix is wrong)."""


class LayoutError(ClientError):
    """The layout record, or a state, does not fit this client: a newer format, states folded
    with other windows than the record says, or ids pseudonymised with no key given (or the
    other way round)."""


class UnavailableError(ClientError, TransientError):
    """Redis did not answer in time, or refused the read; retrying may succeed."""


class UserView(msgspec.Struct, frozen=True, kw_only=True):
    """One user as the service last decided them, and their features now.

    Attributes:
        user_id: the id as asked (the raw id, also when Redis holds pseudonyms).
        as_of: event time (epoch ms) the features are computed at: the event-time watermark of
            the user's input partition, so windows such as `orders_24h` count back from it.
        segment: the segment the service last published: the first rule segment the user is
            a member of, else their RFM segment; None until the user is first scored.
        cluster: the behavioural cluster's id (stable across model versions), None without one.
        rfm: the RFM segment (`Champions`, `At Risk`, ...), None until scored.
        propensity: P(purchase within the horizon, 7 days by default), rounded to 4 places;
            None while the model has no propensity yet.
        propensity_band: `low`, `medium`, `high`, or `unknown` without a propensity.
        rules: rule segments the user is a member of (`vip`, ...), in configured order.
        audiences: runtime audiences the user is a member of.
        parent: the cluster's parent group (stable across model versions), None without one.
        outlier: whether the user lies far from every dense region of the population (their
            cluster is then only the nearest, not a good description).
        predicted_spend: the spend predicted over the spend horizon (30 days by default),
            None until the regressor has learned enough.
        recommendations: cross-sell items (products, or `category:<name>`) from the user's
            recent items, best first.
        model_version: the model version that scored the user last.
        since_event_time: event time (ms) of the user's last segment change, None before one.
        scored_event_time: event time (ms) the user was last scored at (the propensity's age).
        changes: change events published for the user so far (the sequence number of the last
            `change_id`, `<user>:<epoch>:<sequence>`), so a consumer can tell it saw them all.
        features: every feature by name (see README "Features"); counts, sums, ratios, days,
            `first_seen` and `last_seen` (ms) and `top_categories` (a list).
    """

    user_id: str
    as_of: int
    segment: str | None = None
    cluster: int | None = None
    rfm: str | None = None
    propensity: float | None = None
    propensity_band: str | None = None
    rules: list[str] = msgspec.field(default_factory=list)
    audiences: list[str] = msgspec.field(default_factory=list)
    parent: int | None = None
    outlier: bool = False
    predicted_spend: float | None = None
    recommendations: list[str] = msgspec.field(default_factory=list)
    model_version: int | None = None
    since_event_time: int | None = None
    scored_event_time: int | None = None
    changes: int = 0
    features: dict[str, Value] = msgspec.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in the shape of `segstream profile` and `GET /v1/users/{id}`: the
        assignment under `segment` (None until the user is first scored)."""
        segment = None
        if self.segment is not None:
            segment = {
                "segment": self.segment,
                "cluster": self.cluster,
                "rfm": self.rfm,
                "propensity": self.propensity,
                "propensity_band": self.propensity_band,
                "rules": list(self.rules),
                "audiences": list(self.audiences),
                "parent": self.parent,
                "outlier": self.outlier,
                "predicted_spend": self.predicted_spend,
                "recommendations": list(self.recommendations),
                "since_event_time": self.since_event_time,
                "scored_event_time": self.scored_event_time,
            }
        return {
            "user_id": self.user_id,
            "as_of": self.as_of,
            "features": dict(self.features),
            "segment": segment,
            "model_version": self.model_version,
            "changes": self.changes,
        }


def view_of(user_id: str, as_of: int, features: dict[str, Value], segment: bytes) -> UserView:
    """A user's view from what is stored: features as computed, and the segment record (the
    msgpack `segments.policy.Record`; empty when the user was not scored yet)."""
    if not segment:
        return UserView(user_id=user_id, as_of=as_of, features=features)
    record = policy.load(segment)
    # The values change events carry; a cluster's label belongs to a model version, left out.
    shown = policy.assignment(record, "")
    return UserView(
        user_id=user_id,
        as_of=as_of,
        segment=shown["segment"],
        cluster=shown["cluster"],
        rfm=shown["rfm"],
        propensity=shown["propensity"],
        propensity_band=shown["propensity_band"],
        rules=shown["rules"],
        audiences=list(record.audiences),
        parent=shown["parent"],
        outlier=shown["outlier"],
        predicted_spend=shown["predicted_spend"],
        recommendations=shown["recommendations"],
        model_version=record.version,
        since_event_time=record.since or None,
        scored_event_time=record.scored or None,
        changes=record.seq,
        features=features,
    )


class SegmentClient:
    """Reads users' segments and features straight from the service's Redis.

    Args:
        redis_url: the service's `SEGSTREAM_REDIS__URL` (`redis://`, `rediss://`, `unix://`).
        prefix: the service's `SEGSTREAM_KEY_PREFIX`.
        pseudonymize_key: the service's pseudonymisation key, when it has one; callers then
            pass raw ids and get them back, the client computes the pseudonyms.
        timeout_s: longest a read waits for Redis (connecting included).
        cluster: the Redis is a Redis Cluster (the service's `SEGSTREAM_REDIS__CLUSTER`);
            `redis_url` names any one of its nodes.

    Raises (from reads): `LayoutMissingError` when the service never ran against this Redis
    and prefix; `LayoutError` when the stored layout does not fit the client;
    `UnavailableError` when Redis does not answer. All derive from `ClientError`.
    """

    def __init__(
        self,
        redis_url: str,
        prefix: str = "seg",
        *,
        pseudonymize_key: bytes | str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        cluster: bool = False,
    ) -> None:
        self._redis = resp.connect(redis_url, cluster=cluster, timeout_s=timeout_s)
        self._pipe = resp.pipe_for(self._redis)
        self._prefix = prefix
        key = pseudonymize_key.encode() if isinstance(pseudonymize_key, str) else pseudonymize_key
        self._pseudonymize = None if key is None else Pseudonymizer(key)
        self._layout: tuple[bytes, tuple[Window, ...]] | None = None

    def user(self, user_id: str) -> UserView | None:
        """The user's view, or None when the user is unknown or was erased. One round trip."""
        return self.users([user_id])[user_id]

    def users(self, user_ids: Iterable[str]) -> dict[str, UserView | None]:
        """Each asked user's view (None: unknown or erased), keyed by the ids as asked, in one
        round trip however many there are (keep batches to a few hundred: one MGET reads them
        all while Redis serves nobody else)."""
        asked = list(dict.fromkeys(user_ids))
        if not asked:
            return {}
        pseudonymize = self._pseudonymize
        stored = asked if pseudonymize is None else [pseudonymize(u) for u in asked]
        try:
            read = read_users(self._pipe, self._prefix, stored)
        except StoreUnavailableError as exc:
            msg = f"no answer from Redis at {self.redis_address}: {exc}"
            raise UnavailableError(msg) from exc
        windows = self._windows(read.layout)
        return {
            user: None if state is None else self._view(user, state, read.watermarks, windows)
            for user, state in zip(asked, read.states, strict=True)
        }

    def rules(self, item: str | None = None, top: int = 10) -> list[dict[str, Any]]:
        """Cross-sell rules of the current model version, best first (highest lift, then
        confidence): those whose antecedent is `item`, or the `top` over every item. Each is
        a dict: antecedent, consequent, support, confidence, lift. One round trip."""
        key = keys.model_rules(self._prefix)
        try:
            if item is not None:
                found = self._redis.hget(key, item)
                return list(orjson.loads(found))[:top] if found else []
            every = self._redis.hvals(key)
        except redis.RedisError as exc:
            msg = f"no answer from Redis at {self.redis_address}: {exc}"
            raise UnavailableError(msg) from exc
        rules = [rule for blob in every for rule in orjson.loads(blob)]
        rules.sort(key=lambda r: (-r["lift"], -r["confidence"], r["antecedent"], r["consequent"]))
        return rules[:top]

    @property
    def redis_address(self) -> str:
        """Where the client reads (the password, if any, is not shown)."""
        return redis_address(self._redis)

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> SegmentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SegmentClient({self.redis_address!r}, prefix={self._prefix!r})"

    def _windows(self, raw: bytes | None) -> tuple[Window, ...]:
        if raw is None:
            msg = (
                f"no layout record {keys.layout(self._prefix)!r} in Redis at"
                f" {self.redis_address}: the service has not run against this Redis and key"
                f" prefix {self._prefix!r}; check the URL and the prefix (the service's"
                " SEGSTREAM_REDIS__URL and SEGSTREAM_KEY_PREFIX)"
            )
            raise LayoutMissingError(msg)
        if self._layout is not None and self._layout[0] == raw:
            return self._layout[1]
        try:
            layout = Layout.decode(raw)
        except ValueError as exc:
            msg = f"{keys.layout(self._prefix)}: {exc}; upgrade the client"
            raise LayoutError(msg) from exc
        pseudonymised = layout.user_ids == PSEUDONYMISED
        if pseudonymised != (self._pseudonymize is not None):
            msg = (
                "the service pseudonymises user ids: pass its key as pseudonymize_key"
                if pseudonymised
                else "the service stores raw user ids: pass no pseudonymize_key"
            )
            raise LayoutError(msg)
        self._layout = (raw, layout.rolling_windows())
        return self._layout[1]

    @staticmethod
    def _view(
        user: str, state: UserState, marks: dict[int, int], windows: tuple[Window, ...]
    ) -> UserView:
        if state.windows and len(state.windows) != len(windows):
            msg = (
                f"a stored state has {len(state.windows)} windows where the layout record has"
                f" {len(windows)}: the service's SEGSTREAM_FEATURES__WINDOWS changed under"
                " existing state"
            )
            raise LayoutError(msg)
        now = as_of(state, marks)
        return view_of(user, now, compute_features(state, now, windows), state.segment)
