"""A backfill cut short and a restart between records, on a real Redis, driving the service's
step as the loop does (events, commits, then the empty batches of an idle stream): changes that
were stored but never published reach the topic through the next owner without waiting for an
event, and a restarted instance backfills with the stored model, not without one."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from features import keys
from features.events import Event, decode_event
from stream.kafka.handler import Batch, Origin, OutMessage
from stream.kafka.partitioning import partition_of
from stream.service.audience_catalog import AudienceCatalog
from stream.service.segment_handler import SegmentHandler
from stream.service.wiring import build_handler
from stream.settings import Settings
from stream.tools.evaluate import FAR_FUTURE_MS
from tests.stream.service.test_segments_e2e import client_for, generated, with_segments

pytestmark = pytest.mark.integration

PARTITIONS = 3
EMPTY = Batch("events", [], [], [])


def instance(settings: Settings, committed: dict[int, int]) -> SegmentHandler:
    """A new instance given every partition, as the loop gives them after a (re)start."""
    handler = build_handler(settings)
    handler.partitions_assigned(list(range(PARTITIONS)))
    assigned = tuple(range(PARTITIONS))
    handler.check_origin(Origin(settings.topics.events, "", PARTITIONS, assigned, committed, {}))
    return handler


def consume(handler: SegmentHandler, lines: list[bytes]) -> dict[int, int]:
    """The events in one batch, committed; returns the committed offsets."""
    events: list[Event] = []
    partitions: list[int] = []
    offsets: list[int] = []
    next_offsets = dict.fromkeys(range(PARTITIONS), 0)
    for line in lines:
        event = decode_event(line, now_ms=FAR_FUTURE_MS)
        assert isinstance(event, Event)
        partition = partition_of(event.user_id.encode(), PARTITIONS)
        events.append(event)
        partitions.append(partition)
        offsets.append(next_offsets[partition])
        next_offsets[partition] += 1
    handler.handle(Batch("events", events, partitions, offsets))
    handler.committing(next_offsets)
    handler.committed(next_offsets)
    return next_offsets


def idle(handler: SegmentHandler) -> list[dict[str, object]]:
    """What the loop does between records: empty batches while the handler is busy, each
    batch's messages delivered before the next."""
    published: list[OutMessage] = []
    while handler.busy():
        published += handler.handle(EMPTY).messages
        handler.delivered()
    return [orjson.loads(m.value) for m in published if m.value is not None]


def clusters(settings: Settings, handler: SegmentHandler) -> dict[str, int]:
    from segments.policy import load

    return {user: load(state.segment).cluster for user, state in handler.store.states()}


def test_a_backfill_cut_short_is_published_by_the_next_owner_without_an_event(
    settings: Settings, tmp_path: Path
) -> None:
    settings = with_segments(settings, refresh_interval_s=0.01)
    catalog = AudienceCatalog(client_for(settings), settings.key_prefix)
    first = instance(settings, {})
    committed = consume(first, generated(tmp_path, 200, 10, 3))
    version = first.sync.params.version
    assert version > 0 and first.sync.params.clusters_ready

    catalog.change(lambda c: c.adding("everyone", "events_total >= 1"))
    assert first.busy()
    lost = first.handle(EMPTY).messages  # stored, then the process dies before publishing
    first.sync.close()
    assert len(lost) == 200

    # The next owner, with no event coming: it publishes them from the outbox, then drops them.
    second = instance(settings, committed)
    again = idle(second)
    lost_ids = {orjson.loads(m.value)["change_id"] for m in lost if m.value is not None}
    assert lost_ids <= {c["change_id"] for c in again}
    outboxes = [keys.outbox(settings.key_prefix, p) for p in range(PARTITIONS)]
    assert sum(client_for(settings).zcard(k) for k in outboxes) == 0
    before = clusters(settings, second)
    assert -1 not in before.values()
    second.sync.close()

    # A restart between records: the backfill scores with the stored model (the clusters the
    # first backfill brought up to date with it stay where they are).
    third = instance(settings, committed)
    catalog.change(lambda c: c.adding("buyers", "orders_total >= 1"))
    changes = idle(third)
    assert changes and {c["model_version"] for c in changes} == {version}
    assert {c["reason"] for c in changes} == {"backfill"}
    assert clusters(settings, third) == before
    third.close()
