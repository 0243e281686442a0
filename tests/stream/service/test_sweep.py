"""The sweep on a real Redis: after a new placement, every user with a timer in an owned
partition is handed out, a bounded number per batch."""

from __future__ import annotations

import pytest

from features import keys
from stream.service import sweep as sweep_module
from stream.service.sweep import SWEEP_PER_BATCH, Sweep
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
    assert 0 < len(first) < len(names)
    sweep.follow(2)
    again = [u for b in walk(sweep) for u in b]
    assert set(again) == set(names)
