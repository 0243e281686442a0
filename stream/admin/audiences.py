"""`segstream audience add | list | show | remove | preview`: audiences as an operator runs them.

The commands change the catalog in Redis (`stream.service.audience_catalog`); running instances
follow it within a refresh interval and backfill the existing users at a bounded rate. Member
counts are the tallies that move with every user's write; the backfill's progress is what each
partition's owner records (`stream.service.sweep`).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Final

from features import keys, resp, tallies
from segments.audiences import Audience, Catalog
from segments.engine import Engine
from stream.errors import SegstreamError
from stream.service.audience_catalog import AudienceCatalog
from stream.service.wiring import feature_store, redis_client
from stream.settings import Settings

PREVIEW_SAMPLE: Final = 2_000
# 95% of samples fall within this many standard errors of the true share.
Z95: Final = 1.96


def add(settings: Settings, name: str, condition: str) -> dict[str, Any]:
    """Add an audience; the running service backfills it over the existing users."""
    windows = settings.features.rules().windows
    rules = [rule.name for rule in settings.segments.config().rules]
    Catalog().adding(name, condition, windows, rules)  # a bad one is refused before Redis
    catalog = _catalog(_open(settings), settings).change(
        lambda c: c.adding(name, condition, windows, rules)
    )
    added = catalog.audiences[-1]  # `adding` puts it last
    return {"added": _describe(added), "catalog_version": catalog.version}


def remove(settings: Settings, name: str) -> dict[str, Any]:
    """Remove an audience; the running service publishes its members' leaves."""
    catalog = _catalog(_open(settings), settings).change(lambda c: c.removing(name))
    return {"removed": name, "catalog_version": catalog.version}


def listing(settings: Settings) -> dict[str, Any]:
    client = _open(settings)
    catalog = _catalog(client, settings).load()
    members = _members(client, settings.key_prefix, [a.name for a in catalog.audiences])
    progress = _backfill(client, settings, catalog.version) if catalog.version else None
    return {
        "catalog_version": catalog.version,
        "audiences": [{**_describe(a), "members": members[a.name]} for a in catalog.audiences],
        "backfill": progress,
    }


def show(settings: Settings, name: str) -> dict[str, Any] | None:
    """One audience with its member count and the backfill's progress; None if unknown."""
    client = _open(settings)
    catalog = _catalog(client, settings).load()
    audience = catalog.named(name)
    if audience is None:
        return None
    members = _members(client, settings.key_prefix, [name])[name]
    return {
        **_describe(audience),
        "members": members,
        "catalog_version": catalog.version,
        "backfill": _backfill(client, settings, catalog.version),
    }


def _backfill(client: resp.Client, settings: Settings, version: int) -> dict[str, Any]:
    """How far the owners of the partitions brought their users up to catalog `version`:
    partitions done, users checked of the users stored."""
    progress = _catalog(client, settings).progress()
    users = _users_by_partition(client, settings.key_prefix)
    done = [
        p for p in users if (got := progress.get(p)) and got["version"] == version and got["done"]
    ]
    checked = sum(
        min(got["checked"], users[p])
        for p in users
        if (got := progress.get(p)) and got["version"] == version
    )
    return {
        "partitions": len(users),
        "partitions_done": len(done),
        "users": sum(users.values()),
        "users_checked": checked,
        "complete": len(done) == len(users),
    }


def wait_backfill(settings: Settings, version: int, timeout_s: float) -> dict[str, Any]:
    """Wait until every partition's users are up to catalog `version`, with progress on stderr;
    the last progress, `complete` false when the time ran out (is the service running?)."""
    deadline = time.monotonic() + timeout_s
    terminal = sys.stderr.isatty()
    shown = ""
    client = _open(settings)
    while True:
        state = _backfill(client, settings, version)
        line = (
            f"backfill: {state['partitions_done']}/{state['partitions']} partitions,"
            f" {state['users_checked']:,}/{state['users']:,} users checked"
        )
        if terminal:  # one line, rewritten
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        elif line != shown:  # a log: a line per change
            print(line, file=sys.stderr, flush=True)
        shown = line
        if state["complete"] or time.monotonic() >= deadline:
            if terminal:
                print(file=sys.stderr)
            return state
        time.sleep(0.5)


def preview(settings: Settings, condition: str, sample: int = PREVIEW_SAMPLE) -> dict[str, Any]:
    """The estimated size of an audience with this condition, from a uniform sample of the
    stored users, evaluated as the service would; nothing is changed."""
    windows = settings.features.rules().windows
    rules = [rule.name for rule in settings.segments.config().rules]
    catalog = Catalog().adding("preview", condition, windows, rules)
    engine = Engine(settings.segments.config(keep_days=settings.features.ttl_days), windows)
    engine.set_audiences(catalog)
    client = _open(settings)
    users = _users_by_partition(client, settings.key_prefix)
    total = sum(users.values())
    sampled = _sample(client, settings.key_prefix, users, sample)
    store = feature_store(settings, client)
    states = store.peek(sampled)
    marks = store.stored_watermarks()
    now = [marks.get(s.partition, s.last_seen) for s in states.values()]
    members = engine.members(list(states.values()), now)
    matching = sum(1 for m in members if m)
    return {"condition": condition.strip(), **_estimate(matching, len(states), total)}


def _estimate(matching: int, sampled: int, total: int) -> dict[str, Any]:
    """The share with a 95% interval (normal approximation, with the finite population
    correction: a sample of every user has no error)."""
    share = matching / sampled if sampled else 0.0
    correction = math.sqrt(max(0.0, (total - sampled) / (total - 1))) if total > 1 else 0.0
    error = Z95 * math.sqrt(share * (1 - share) / sampled) * correction if sampled else 0.0
    return {
        "users": total,
        "sampled": sampled,
        "matching": matching,
        "share": round(share, 4),
        "estimated_members": round(share * total),
        "low": max(0, math.floor((share - error) * total)),
        "high": min(total, math.ceil((share + error) * total)),
    }


def _sample(client: resp.Client, prefix: str, users: dict[int, int], size: int) -> list[str]:
    """About `size` distinct users, each partition's share by its user count (ZRANDMEMBER)."""
    total = sum(users.values())
    if not total:
        return []
    pipe = client.pipeline(transaction=False)
    for partition, count in users.items():
        pipe.zrandmember(keys.timers(prefix, partition), max(1, round(size * count / total)))
    return [user.decode() for found in pipe.execute() for user in found or []]


def _users_by_partition(client: resp.Client, prefix: str) -> dict[int, int]:
    """Stored users per input partition: every user with a state has a timer there. The
    partitions are the events topic's, as the service recorded it (else found by SCAN)."""
    count = client.hget(keys.origin(prefix), "partitions")
    if count is not None:
        partitions = list(range(int(count)))
    else:
        pattern = keys.timers(prefix, 0)[:-1] + "*"
        found = client.scan_iter(match=pattern, count=1_000)
        partitions = sorted(int(key.decode().rsplit(":", 1)[1]) for key in found)
    pipe = client.pipeline(transaction=False)
    for partition in partitions:
        pipe.zcard(keys.timers(prefix, partition))
    return dict(zip(partitions, pipe.execute(), strict=True))


def _members(client: resp.Client, prefix: str, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    counts = tallies.read(client, prefix)
    return {n: counts.get(f"audience:{n}", 0) for n in names}


def _describe(audience: Audience) -> dict[str, Any]:
    return {"name": audience.name, "condition": audience.condition, "version": audience.version}


def _catalog(client: resp.Client, settings: Settings) -> AudienceCatalog:
    return AudienceCatalog(client, settings.key_prefix)


def _open(settings: Settings) -> resp.Client:
    """A client on a prefix the service has run under (its layout record says so): a typo in
    the prefix or the URL would otherwise make an audience no instance follows."""
    client = redis_client(settings)
    if not client.exists(keys.layout(settings.key_prefix)):
        msg = (
            f"no segstream state under the key prefix {settings.key_prefix!r} in this Redis"
            f" ({keys.layout(settings.key_prefix)!r} is missing; the service writes it when it"
            " starts): check SEGSTREAM_KEY_PREFIX and SEGSTREAM_REDIS__URL, or start the"
            " service first"
        )
        raise SegstreamError(msg)
    return client
