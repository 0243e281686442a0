"""The sweep on a real Redis: after a new placement or a new audience catalog version, every user
with a timer in an owned partition is handed out, a bounded number per batch; a catalog's
backfill is recorded per partition and goes on after a restart."""

from __future__ import annotations

import msgspec
import pytest

from features import keys
from stream.service import sweep as sweep_module
from stream.service.sweep import SWEEP_PER_BATCH, Progress, Sweep
from stream.settings import Settings
from tests.stream.service.test_segments_e2e import client_for

pytestmark = pytest.mark.integration

USERS = 2 * SWEEP_PER_BATCH + 7


def timers_of(settings: Settings, partition: int, users: list[str]) -> None:
    client = client_for(settings)
    client.zadd(keys.timers(settings.key_prefix, partition), {u: i for i, u in enumerate(users)})


def walk(sweep: Sweep) -> list[dict[str, int]]:
    batches = []
    while sweep.active:
        batches.append(sweep.due())
        sweep.done()
    return batches


def test_a_new_placement_hands_out_every_owned_user_in_bounded_batches(
    settings: Settings,
) -> None:
    users = {p: [f"u{p}-{i}" for i in range(USERS)] for p in (0, 1)}
    for partition, names in users.items():
        timers_of(settings, partition, names)
    sweep = Sweep(client_for(settings), settings.key_prefix)
    sweep.partitions_assigned([0, 1])
    sweep.follow(3)  # where this instance starts: nothing to sweep
    assert not sweep.active
    assert sweep.due() == {}
    sweep.follow(4)
    batches = walk(sweep)
    assert len(batches) >= 4  # bounded: ZSCAN's count is a hint, so not exactly 2 * USERS / 1000
    assert all(len(b) <= 2 * SWEEP_PER_BATCH for b in batches)
    handed = [(u, p) for b in batches for u, p in b.items()]
    assert sorted(handed) == sorted((u, p) for p, names in users.items() for u in names)
    sweep.follow(4)  # the same placement again: not swept twice
    assert not sweep.active


def test_a_revoked_partition_drops_out_of_the_sweep(settings: Settings) -> None:
    for partition in (0, 1, 2):
        timers_of(settings, partition, [f"u{partition}-{i}" for i in range(10)])
    sweep = Sweep(client_for(settings), settings.key_prefix)
    sweep.partitions_assigned([0, 1, 2])
    sweep.follow(0)
    sweep.partitions_revoked([2])
    sweep.follow(1)
    assert set(sweep.due().values()) == {0, 1}
    sweep.done()
    sweep.partitions_assigned([2])  # owned again, but the sweep started without it
    assert not sweep.active
    assert sweep.due() == {}


def test_a_sweep_under_way_starts_again_at_a_newer_placement(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep_module, "SWEEP_PER_BATCH", 10)
    names = [f"u-{i}" for i in range(300)]
    timers_of(settings, 0, names)
    sweep = Sweep(client_for(settings), settings.key_prefix)
    sweep.partitions_assigned([0])
    sweep.follow(0)
    sweep.follow(1)
    first = sweep.due()
    sweep.done()
    assert 0 < len(first) < len(names)
    sweep.follow(2)
    again = [u for b in walk(sweep) for u in b]
    assert set(again) == set(names)


def progress_of(settings: Settings) -> dict[int, Progress]:
    stored = client_for(settings).hgetall(keys.audience_backfill(settings.key_prefix))
    return {int(p): msgspec.json.decode(v, type=Progress) for p, v in stored.items()}


def test_a_new_catalog_version_is_backfilled_and_recorded_per_partition(
    settings: Settings,
) -> None:
    users = {p: [f"u{p}-{i}" for i in range(50)] for p in (0, 1)}
    for partition, names in users.items():
        timers_of(settings, partition, names)
    sweep = Sweep(client_for(settings), settings.key_prefix)
    sweep.partitions_assigned([0, 1])
    sweep.follow(0, 0)  # no catalog ever made: nothing to backfill
    assert not sweep.active
    sweep.follow(0, 1)
    handed = [u for b in walk(sweep) for u in b]
    assert sorted(handed) == sorted(u for names in users.values() for u in names)
    assert progress_of(settings) == {
        0: Progress(1, 0, 50, done=True),
        1: Progress(1, 0, 50, done=True),
    }
    restarted = Sweep(client_for(settings), settings.key_prefix)
    restarted.partitions_assigned([0, 1])
    restarted.follow(0, 1)
    assert not restarted.active  # done before the restart: not swept again


def test_a_backfill_goes_on_where_it_was_after_a_restart(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep_module, "SWEEP_PER_BATCH", 10)
    names = [f"u-{i}" for i in range(300)]
    timers_of(settings, 0, names)
    sweep = Sweep(client_for(settings), settings.key_prefix)
    sweep.partitions_assigned([0])
    sweep.follow(0, 1)
    first = sweep.due()
    assert sweep.due() == first  # not stored yet (a failed batch): the same users again
    sweep.done()
    assert progress_of(settings)[0].checked == len(first)
    restarted = Sweep(client_for(settings), settings.key_prefix)
    restarted.partitions_assigned([0])
    restarted.follow(0, 1)
    rest = [u for b in walk(restarted) for u in b]
    assert set(first) | set(rest) == set(names)
    assert len(rest) < len(names)  # went on from the stored cursor
    assert progress_of(settings)[0].done
