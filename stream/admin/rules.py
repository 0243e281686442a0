"""`segstream rules [ITEM]`: the cross-sell rules of the current model version, as the read
API gives them (`stream.client.SegmentClient.rules`)."""

from __future__ import annotations

import sys
from typing import Any

import orjson

from features import keys
from stream.client import SegmentClient
from stream.service.wiring import redis_client
from stream.settings import Settings


def rules(settings: Settings, item: str | None, top: int) -> list[dict[str, Any]]:
    """The rules of `item` (or the best over every item), best first; tells on stderr why
    there are none."""
    with SegmentClient(
        settings.redis.url, settings.key_prefix, cluster=settings.redis.cluster
    ) as client:
        found = client.rules(item, top)
    if not found:
        print(_why_none(settings, item), file=sys.stderr)
    return found


def _why_none(settings: Settings, item: str | None) -> str:
    meta_blob = redis_client(settings).get(keys.model_meta(settings.key_prefix))
    if meta_blob is None:
        return (
            f"no model under the key prefix {settings.key_prefix!r}: the service has not"
            " published one yet (or the prefix is not the service's SEGSTREAM_KEY_PREFIX)"
        )
    meta = orjson.loads(meta_blob)
    seen = f"model v{meta.get('version')} counted {meta.get('baskets', 0):.0f} baskets"
    if item is None:
        return f"no rule passes the minimums yet ({seen}; see SEGSTREAM_SEGMENTS__RULE_MIN_*)"
    return f"no rule from {item!r} passes the minimums ({seen}; see SEGSTREAM_SEGMENTS__RULE_MIN_*)"
