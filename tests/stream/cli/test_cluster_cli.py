"""Operator commands on a Redis Cluster reach the node that holds each key."""

from __future__ import annotations

import orjson
import pytest
import redis
from redis.cluster import RedisCluster

from features import keys
from stream.admin.rules import rules
from stream.settings import Settings

pytestmark = pytest.mark.integration


def test_rules_are_read_from_whichever_node_holds_the_model(
    settings: Settings, cluster_url: str
) -> None:
    cluster = RedisCluster.from_url(cluster_url)
    named = redis.Redis.from_url(cluster_url)  # the node the URL names
    port = named.connection_pool.connection_kwargs["port"]
    # A prefix whose model keys lie on another node than the one the URL names.
    prefix = next(
        f"{settings.key_prefix}-{i}"
        for i in range(100)
        if cluster.get_node_from_key(keys.model_rules(f"{settings.key_prefix}-{i}")).port != port
    )
    rule = {"antecedent": "a", "consequent": "b", "support": 0.1, "confidence": 0.5, "lift": 2.0}
    cluster.hset(keys.model_rules(prefix), "a", orjson.dumps([rule]))
    on_cluster = settings.model_copy(
        update={
            "redis": settings.redis.model_copy(update={"url": cluster_url, "cluster": True}),
            "key_prefix": prefix,
        }
    )
    assert rules(on_cluster, "a", 10) == [rule]
