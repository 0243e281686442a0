"""A hand count of campaign outcomes from what a consumer of the segments topic sees and the
events sent: what the service's `offer:` and `conversion:` tallies must equal."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any


def offers_by_user(changes: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, list[str]]]]:
    """Per user, in order, each offer: the event time of the changes of one scoring that
    carried actions, and their `<segment>|<action>` pairs (an action without its item)."""
    offers: dict[str, list[tuple[int, list[str]]]] = defaultdict(list)
    ordered = sorted(changes, key=lambda c: (c["user_id"], int(c["change_id"].rsplit(":", 1)[1])))
    for change in ordered:
        if change["type"] == "audience" or not change["actions"]:
            continue
        segment = change["current"]["segment"] if change["type"] == "segment" else change["segment"]
        pairs = [f"{segment}|{a.split(':', 1)[0]}" for a in change["actions"]]
        mine = offers[change["user_id"]]
        if mine and mine[-1][0] == change["event_time_ms"]:  # one scoring's changes: one offer
            mine[-1][1].extend(p for p in pairs if p not in mine[-1][1])
        else:
            mine.append((change["event_time_ms"], list(dict.fromkeys(pairs))))
    return offers


def expected_tallies(
    changes: Iterable[Mapping[str, Any]],
    purchases: Mapping[str, list[int]] | None,
    horizon_ms: int,
) -> dict[str, int]:
    """`offer:<pair>` per offer; with the purchases' event times by user, `conversion:<pair>`
    for each offer followed by a purchase within the horizon and before the next offer."""
    expected: dict[str, int] = defaultdict(int)
    for user, made in offers_by_user(changes).items():
        for i, (at, pairs) in enumerate(made):
            for pair in pairs:
                expected[f"offer:{pair}"] += 1
            if purchases is None:
                continue
            until = min(at + horizon_ms, made[i + 1][0] if i + 1 < len(made) else 2**62)
            if any(at < ts <= until for ts in purchases.get(user, [])):
                for pair in pairs:
                    expected[f"conversion:{pair}"] += 1
    return dict(expected)
