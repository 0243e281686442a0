"""Profiles and erasure as the CLI and the Python API offer them."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from confluent_kafka import Producer

from features.definitions import UserState
from features.store import FeatureStore
from segments import policy
from stream.client import view_of
from stream.errors import DeliveryError
from stream.kafka.topics import ensure_topics
from stream.service.wiring import feature_store, pseudonymizer
from stream.settings import Settings, producer_config


def stored_id(settings: Settings, user_id: str) -> str:
    """The id under which a user is stored: pseudonymised when a key is configured."""
    pseudonymize = pseudonymizer(settings)
    return user_id if pseudonymize is None else pseudonymize(user_id)


def profile(settings: Settings, user_id: str, store: FeatureStore | None = None) -> dict[str, Any]:
    """A user's profile in the output contract's shape; `features` is None for unknown users."""
    store = store or feature_store(settings)
    found = store.profile(stored_id(settings, user_id))
    return _shape(user_id, found)


def all_profiles(settings: Settings) -> Iterator[dict[str, Any]]:
    for found in feature_store(settings).profiles():
        yield _shape(found["user_id"], found)


def _shape(user_id: str, found: dict[str, Any] | None) -> dict[str, Any]:
    """The shape the read API gives (`stream.client.UserView.to_dict`); an unknown user has
    the same keys, empty."""
    if found is None:
        return {
            "user_id": user_id,
            "as_of": None,
            "features": None,
            "segment": None,
            "model_version": None,
            "changes": 0,
        }
    return view_of(user_id, found["as_of"], found["features"], found["segment"]).to_dict()


def print_profiles(settings: Settings, users: Sequence[str] | None) -> int:
    """JSON lines on stdout; exit status 1 when any asked-for user is unknown."""
    if users is None:
        for line in all_profiles(settings):
            _write(line)
        return 0
    store = feature_store(settings)
    missing = 0
    for user in users:
        line = profile(settings, user, store)
        missing += line["features"] is None
        _write(line)
    if missing:
        print(f"segstream profile: {missing} user(s) not found", file=sys.stderr)
    return 1 if missing else 0


def population_tallies(state: UserState) -> list[tuple[str, int]]:
    """The population tallies a stored user counts in, undone when the user is erased."""
    return policy.counted_in(policy.load(state.segment))


def forget_users(settings: Settings, users: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Erase each user: every key, an erasure record, and a tombstone on the segments topic."""
    store = feature_store(settings)
    if settings.topics.create:
        ensure_topics(settings)
    producer = Producer(producer_config(settings))
    results = []
    for user in users:
        key = stored_id(settings, user)
        deleted = store.forget(key, population_tallies)
        producer.produce(settings.topics.segments, None, key.encode())
        results.append({"user_id": user, "had_data": deleted, "tombstone": True})
    undelivered = producer.flush(30)
    producer.close()
    if undelivered:
        msg = f"{undelivered} tombstones not acknowledged; run forget again (it is idempotent)"
        raise DeliveryError(msg)
    yield from results


def _write(line: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
