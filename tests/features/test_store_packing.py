"""The hand-packed compare-and-set is the very command hiredis would pack."""

from __future__ import annotations

import msgspec
import pytest
import redis

from features import resp
from features.definitions import UserState
from features.store import Cached, FeatureStore

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "moved", [None, [("segment:a", 1)], [("segment:a", 1), ("segment:b", -1), ("offer:x|y", 1)]]
)
def test_a_write_is_packed_as_hiredis_packs_it(moved: list[tuple[str, int]] | None) -> None:
    store = FeatureStore(redis.Redis(), "p")  # no call reaches a server here
    cached = Cached(3, UserState(partition=1, last_seen=1_000))
    key, packed = store._write_call("u1", cached, moved)
    state = b"%010d" % 4 + msgspec.msgpack.encode(UserState(partition=1, last_seen=1_000))
    ttl = store._ttl_of(cached.state)
    head = [b"EVALSHA", store._write.sha.encode(), b"3" if moved else b"2", b"p:{u:u1}"]
    head += [b"p:{u:u1}:erased", *([b"p:tallies"] if moved else [])]
    moves = [x for name, delta in moved or [] for x in (name.encode(), b"%d" % delta)]
    assert key == b"p:{u:u1}"
    assert packed == resp.command(*head, b"%010d" % 3, state, ttl, *moves)
