"""The shared model's keys deleted under the service: it goes on and publishes anew."""

from __future__ import annotations

import pytest
import redis

from features import keys
from tests.faults.harness import Rig, keyed, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


def model_version(client: redis.Redis, prefix: str) -> int:
    return int(client.get(keys.model_current(prefix)) or 0)


def delete_model(client: redis.Redis, prefix: str) -> list[bytes]:
    """Every key of the model: versions, trainer state, meta, lease."""
    found = list(client.scan_iter(match=f"{keys.model_tag(prefix)}:*"))
    if found:
        client.delete(*found)
    return found


def test_model_snapshots_deleted_while_running_and_between_runs(
    rig: Rig, events: list[bytes]
) -> None:
    client, prefix = rig.client(), rig.names
    half = len(events) // 2
    feeder = rig.feed.send_over(keyed(events[:half]), seconds=15)
    service = rig.service().start()
    wait_until(lambda: model_version(client, prefix) >= 2, "model v2", alive=[service])
    assert delete_model(client, prefix)
    wait_until(lambda: model_version(client, prefix) >= 1, "a model published anew", 60, [service])
    feeder.finish()
    rig.wait_drained([service])
    rig.stop(service)

    # Between runs: the next run starts without any model and publishes one.
    assert delete_model(client, prefix)
    rig.feed.send(keyed(events[half:]))
    service.start()
    rig.wait_drained([service])
    wait_until(lambda: model_version(client, prefix) >= 1, "a model after restart", 60, [service])
    rig.stop(service)
    rig.verify()
