"""What a stage of `segstream bench` costs, per event, and what a target rate needs from it.

Wall time depends on how busy a shared machine is; CPU time per event does much less, and it
adds up across processes and Redis shards. So a stage is measured as: the service's CPU (every
thread of the process: the loop, librdkafka, the census) per event, and Redis' CPU (every
primary, `INFO cpu`) per event and per user write; and Redis memory per user (`MEMORY USAGE`).
`needs` turns the CPU figures into processes, partitions and Redis primaries for a target rate.
"""

from __future__ import annotations

import math
import random
import resource
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

from redis.cluster import RedisCluster

from features import keys, resp

# Share of a core a process or a Redis primary is planned at: headroom for bursts and catch-up.
PLANNED_LOAD: Final = 0.7
# Partitions per process: room to add processes later without repartitioning the topic.
PARTITIONS_PER_PROCESS: Final = 2


def process_cpu_s() -> float:
    """CPU seconds of this process so far, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def redis_cpu_s(client: resp.Client) -> float:
    """CPU seconds Redis spent so far, summed over its primaries."""
    if isinstance(client, RedisCluster):
        nodes = client.get_primaries()  # type: ignore[no-untyped-call]
        found = [client.info("cpu", target_nodes=node) for node in nodes]
    else:
        found = [client.info("cpu")]
    return sum(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) for info in found)


@dataclass
class Costs:
    """CPU spent while a stage ran; `figures` once it is done."""

    service_s: float = 0.0
    redis_s: float = 0.0
    notes: dict[str, float] = field(default_factory=dict)

    def figures(self, events: int, writes: int) -> dict[str, float]:
        return {
            "service_cpu_us_per_event": round(self.service_s / max(events, 1) * 1e6, 1),
            "redis_cpu_us_per_event": round(self.redis_s / max(events, 1) * 1e6, 2),
            "redis_cpu_us_per_write": round(self.redis_s / max(writes, 1) * 1e6, 2),
            "writes_per_event": round(writes / max(events, 1), 3),
        }


@contextmanager
def measured(client: resp.Client) -> Iterator[Costs]:
    """The CPU of this process and of Redis while the block runs."""
    costs = Costs()
    service, redis = process_cpu_s(), redis_cpu_s(client)
    yield costs
    costs.service_s = process_cpu_s() - service
    costs.redis_s = redis_cpu_s(client) - redis


def memory_per_user(
    client: resp.Client, prefix: str, user_ids: Iterable[str], sample: int = 500
) -> dict[str, object]:
    """`MEMORY USAGE` (SAMPLES 0: exact) and `OBJECT ENCODING` of `sample` users' state keys."""
    users = sorted(set(user_ids))
    chosen = random.Random(1).sample(users, min(sample, len(users)))
    names = [keys.state(prefix, user) for user in chosen]
    sizes = sorted(client.memory_usage(name, samples=0) or 0 for name in names)
    if not sizes:
        return {"users": 0}
    encodings = Counter(resp.text(client.object("encoding", name)) for name in names)
    return {
        "mean": round(statistics.mean(sizes), 1),
        "p95": sizes[int(0.95 * (len(sizes) - 1))],
        "max": sizes[-1],
        "object_encoding": dict(encodings),
        "users": len(users),
    }


def needs(rate: float, costs: dict[str, float]) -> dict[str, int]:
    """Processes, partitions and Redis primaries for `rate` events/s at the measured costs (each
    process and primary planned at `PLANNED_LOAD` of a core)."""
    processes = math.ceil(rate * costs["service_cpu_us_per_event"] / 1e6 / PLANNED_LOAD)
    primaries = math.ceil(rate * costs["redis_cpu_us_per_event"] / 1e6 / PLANNED_LOAD)
    return {
        "events_per_second": round(rate),
        "processes": processes,
        "partitions": processes * PARTITIONS_PER_PROCESS,
        "redis_primaries": primaries,
    }
