"""`segstream bench --processes N`: the worst case run by N service processes of one group.

Scaling out is meant to add capacity at the same cost per event: each process reports its own
CPU per event, and Redis' CPU per user write is measured over all of them, to compare with the
one-process run of the same bench (`stream.tools.sizing`).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from multiprocessing.queues import Queue
from typing import Any

from stream.kafka.loop import Loop
from stream.service.wiring import build_handler, redis_client
from stream.settings import Settings
from stream.tools.replay import replay_values
from stream.tools.sizing import Costs, measured, process_cpu_s

# A member ends once it has read nothing for this long (the others took the rest).
IDLE_END_S = 5.0


def run_processes(settings: Settings, values: Sequence[bytes], processes: int) -> dict[str, Any]:
    """Replay `values` into a fresh topic, then consume it with `processes` service processes."""
    replay_values(settings, values)
    context = multiprocessing.get_context("spawn")
    results: Queue[dict[str, Any]] = context.Queue()
    members = [context.Process(target=_member, args=(settings, results)) for _ in range(processes)]
    with measured(redis_client(settings)) as costs:
        for member in members:
            member.start()
        found = [results.get(timeout=600) for _ in members]
        for member in members:
            member.join(timeout=60)
    return _figures(found, costs, len(values))


def _member(settings: Settings, results: Queue[dict[str, Any]]) -> None:
    handler = build_handler(settings)
    try:
        started = process_cpu_s()
        summary = Loop(settings, handler).run(until_idle=IDLE_END_S)
        cpu_s = process_cpu_s() - started
    finally:
        handler.close()
    results.put(
        {
            "consumed": summary.consumed,
            "busy_s": summary.busy_s,
            "cpu_s": cpu_s,
            "writes": handler.store.writes,
        }
    )


def _figures(found: list[dict[str, Any]], costs: Costs, sent: int) -> dict[str, Any]:
    consumed = sum(m["consumed"] for m in found)
    costs.service_s = sum(m["cpu_s"] for m in found)
    writes = sum(m["writes"] for m in found)
    return {
        "processes": len(found),
        "consumed": consumed,
        "sent": sent,
        "events_per_second": round(consumed / max(m["busy_s"] for m in found)),
        "each": [
            {
                "consumed": m["consumed"],
                "events_per_second": round(m["consumed"] / max(m["busy_s"], 1e-9)),
                "service_cpu_us_per_event": round(m["cpu_s"] / max(m["consumed"], 1) * 1e6, 1),
            }
            for m in found
        ],
        "costs": costs.figures(consumed, writes),
    }
