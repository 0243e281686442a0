"""Every Redis key segstream uses, in one place.

A user's keys share the hash tag `{u:<id>}` so they live in one Redis Cluster slot and one Lua
call may touch them all.
"""

from __future__ import annotations


def user_tag(user_id: str) -> str:
    return f"{{u:{user_id}}}"


def state(prefix: str, user_id: str) -> str:
    """String: a 10-digit version (bumped by every write), then the msgpack `UserState`."""
    return f"{prefix}:{user_tag(user_id)}"


def erased(prefix: str, user_id: str) -> str:
    """Marker that the user was erased; events for the user are dropped while it exists."""
    return f"{prefix}:{user_tag(user_id)}:erased"


def user_keys(prefix: str, user_id: str) -> list[str]:
    """Every key holding data about the user (the erasure marker is not data)."""
    return [state(prefix, user_id)]


def watermarks(prefix: str) -> str:
    """Hash: input partition -> event-time watermark (ms)."""
    return f"{prefix}:watermarks"


def origin(prefix: str) -> str:
    """Hash: where the stored state comes from: `epoch`, `topic`, `topic_id`, `partitions`,
    and per input partition `next:<p>`, the offset the group was about to commit (raised
    before every commit), so a Redis that lost state is told apart from a fresh one."""
    return f"{prefix}:origin"


def slot_epoch(prefix: str, slot_tag: str) -> str:
    """String: on a Redis Cluster, the origin's epoch in one hash slot; every slot holds one, so
    a primary that lost its data (restarted empty) is told apart (`stream.service.slot_marks`)."""
    return f"{prefix}:epoch:{{{slot_tag}}}"


def layout(prefix: str) -> str:
    """String: JSON saying how users' states are stored and their features computed (format,
    windows, buckets, field orders; `features.layout.Layout`), written by every instance at
    start, so a reader with only the Redis URL and the prefix can compute features."""
    return f"{prefix}:layout"


def tallies(prefix: str) -> str:
    """Hash: counters that move with users' writes (e.g. users per segment), field -> count."""
    return f"{prefix}:tallies"


def slot_tallies(prefix: str, slot_tag: str) -> str:
    """Hash: on a Redis Cluster, the tallies moved by writes of users in one hash slot (the slot
    tag puts it there; `features.tallies` sums them)."""
    return f"{prefix}:tallies:{{{slot_tag}}}"


def state_pattern(prefix: str) -> str:
    """SCAN pattern matching every user's state key and nothing else of ours."""
    return f"{prefix}:{{u:*}}"


def user_of(prefix: str, key: str) -> str | None:
    """The user id of a state key, or None if `key` is not one."""
    head = f"{prefix}:{{u:"
    if not key.startswith(head) or not key.endswith("}"):
        return None
    return key[len(head) : -1]


# Keys of the layers above the features. The model's keys share one hash tag, so a Lua call
# may publish a snapshot and check the trainer lease at once (also on Redis Cluster).
def model_tag(prefix: str) -> str:
    return f"{prefix}:{{model}}"


def model_current(prefix: str) -> str:
    """String: the version every instance should score with."""
    return f"{model_tag(prefix)}:current"


def model_snapshot(prefix: str, version: int) -> str:
    """String: the signed scoring parameters of one model version."""
    return f"{model_tag(prefix)}:v{version}"


def model_trainer(prefix: str) -> str:
    """String: the signed trainer's model as of the current version (a new trainer resumes it)."""
    return f"{model_tag(prefix)}:trainer"


def model_meta(prefix: str) -> str:
    """String: JSON describing the current version (fingerprint, samples, quality)."""
    return f"{model_tag(prefix)}:meta"


def model_rules(prefix: str) -> str:
    """Hash: the current version's cross-sell rules, item -> JSON list of its rules (best
    first), for readers without the signing key."""
    return f"{model_tag(prefix)}:rules"


def model_lease(prefix: str) -> str:
    """String with a TTL: the id of the instance that trains and publishes snapshots."""
    return f"{model_tag(prefix)}:lease"


def audiences(prefix: str) -> str:
    """String: the audience catalog as JSON (`segments.audiences.Catalog`: version, audiences)."""
    return f"{prefix}:audiences"


def audience_backfill(prefix: str) -> str:
    """Hash: input partition -> JSON progress of bringing its users' audiences up to the catalog
    (`version`, `checked` users, `done`), written by the partition's owner."""
    return f"{prefix}:audiences:backfill"


def timers(prefix: str, partition: int) -> str:
    """Sorted set: user -> event time (ms) at which the owner of the partition re-scores them."""
    return f"{prefix}:timers:{partition}"


def outbox(prefix: str, partition: int) -> str:
    """Sorted set: segment change (JSON) -> input offset of the batch that decided it; kept
    until that offset is committed, so a crash before the publish loses no change."""
    return f"{prefix}:outbox:{partition}"
