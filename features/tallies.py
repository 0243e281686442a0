"""Population tallies: counters that move inside users' compare-and-sets, exactly once.

On a plain Redis they are one hash. On a Redis Cluster a script may touch keys of one hash slot
only, so a user's write moves the tallies of a hash of the user's own slot (`{<slot tag>}`) and
readers sum the hashes of every slot: 16,384 small hashes, read in one round trip per node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from redis.cluster import RedisCluster

from features import keys, resp
from features.cluster import ClusterPipe, slot_tag, slot_tags


def key_of(client: resp.Client, prefix: str) -> Callable[[bytes], bytes]:
    """The tallies key that moves with a write of the user whose state key is given."""
    if not isinstance(client, RedisCluster):
        single = keys.tallies(prefix).encode()
        return lambda _state_key: single
    return lambda state_key: keys.slot_tallies(prefix, slot_tag(state_key)).encode()


def all_keys(client: resp.Client, prefix: str) -> list[str]:
    """Every key the tallies may be kept in."""
    if not isinstance(client, RedisCluster):
        return [keys.tallies(prefix)]
    return [keys.slot_tallies(prefix, tag) for tag in slot_tags()]


def read(client: resp.Client, prefix: str) -> dict[str, int]:
    """Every tally, summed over the hashes that hold them (field -> count)."""
    if not isinstance(client, RedisCluster):
        raw = client.hgetall(keys.tallies(prefix))
        return {resp.text(name): int(count) for name, count in raw.items()}
    names = [key.encode() for key in all_keys(client, prefix)]
    commands = [(name, resp.command(b"HGETALL", name)) for name in names]
    total: Counter[str] = Counter()
    for reply in resp.checked(ClusterPipe(client).execute(commands)):
        for name, count in resp.hash_items(reply):
            total[resp.text(name)] += int(count)
    return dict(total)
