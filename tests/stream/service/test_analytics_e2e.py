"""The analytics beside the segments, live in the service (a real broker and Redis, the real
loop): cross-sell rules counted in the stream and read back, recommendations in the changes,
spend predictions, parent groups, outliers, and campaign outcomes counted exactly."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from segments.policy import load
from stream.admin.profiles import all_profiles
from stream.admin.rules import rules
from stream.client import SegmentClient
from stream.kafka.loop import Loop
from stream.kafka.topics import ensure_topics
from stream.ops.health import Health, serve
from stream.service.wiring import build_handler, feature_store, read_api
from stream.settings import ApiSettings, Settings
from stream.tools.generate import PLANTED_RULES
from stream.tools.local_servers import free_port
from tests.http_tools import get
from tests.kafka_tools import changes_of, drain, produce
from tests.stream.service.campaign_count import expected_tallies
from tests.stream.service.test_segments_e2e import (
    DAY,
    generated,
    keyed,
    store_for,
    tallies,
    with_segments,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3


USERS = 1_000
Run = tuple[Settings, list[bytes], list[dict[str, Any]]]


def test_the_analytics_live_in_the_service(settings: Settings, tmp_path: Path) -> None:
    """One run of the service, then each capability as a user of it would check it."""
    run = _run(settings, tmp_path)
    _cross_sell_rules_are_read_back_and_recommended(run)
    _spend_parents_and_outliers_are_in_every_profile(run)
    _campaign_outcomes_are_counted_once(run)


def _run(settings: Settings, tmp_path: Path) -> Run:
    """1,000 generated users over 40 days through the service (the planted rules are in a few
    dozen baskets each); a spend horizon of a week, so that its labels resolve, and the
    regressor predicts, well inside the run."""
    settings = with_segments(settings, spend_horizon_days=7.0)
    assert settings.topics.partitions == PARTITIONS
    ensure_topics(settings)
    lines = generated(tmp_path, users=USERS, days=40, seed=31)
    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(lines))
    handler = build_handler(settings)
    try:
        summary = Loop(settings, handler).run(until_idle=2.0)
    finally:
        handler.close()
    assert summary.processed == len(lines)
    changes = changes_of(drain(settings.kafka.bootstrap_servers, settings.topics.segments, 3))
    return settings, lines, changes


def _cross_sell_rules_are_read_back_and_recommended(run: Run) -> None:
    settings, _, changes = run
    with SegmentClient(settings.redis.url, settings.key_prefix) as client:
        for planted in PLANTED_RULES:
            found = client.rules(planted.antecedent)
            assert found, f"no rule from {planted.antecedent}"
            assert found[0]["consequent"] == planted.consequent, found
            assert found[0]["lift"] > 10
        # The command reads what the client reads.
        assert rules(settings, PLANTED_RULES[0].antecedent, 10) == client.rules(
            PLANTED_RULES[0].antecedent
        )
        best = client.rules(top=10)
        assert _over_http(settings, PLANTED_RULES[0].antecedent) == client.rules(
            PLANTED_RULES[0].antecedent
        )
    assert {(r["antecedent"], r["consequent"]) for r in best} >= {
        (p.antecedent, p.consequent) for p in PLANTED_RULES[:2]
    }
    # A cross-sell action names each of the user's recommendations, and nothing else.
    named = 0
    consequents = {p.consequent for p in PLANTED_RULES}
    for change in changes:
        if change["type"] != "segment":
            continue
        items = [a.split(":", 1)[1] for a in change["actions"] if ":" in a]
        recommended = change["current"]["recommendations"]
        if items:
            assert set(items) == set(recommended), change
            named += bool(consequents & set(items))
    assert named > 0, "no change recommended a planted consequent"


def _over_http(settings: Settings, item: str) -> list[dict[str, Any]]:
    """The item's rules as `GET /v1/rules/{item}` answers them, from the service's own lookups."""
    api = settings.model_copy(update={"api": ApiSettings(enabled=True)})
    lookups = read_api(api)
    assert lookups is not None
    port = free_port()
    server = serve(Health(stall_s=60.0, users=lookups[0], rules=lookups[1]), port, "127.0.0.1")
    assert server is not None
    try:
        status, body = get(port, f"/v1/rules/{item}")
    finally:
        server.shutdown()
        server.server_close()
    assert status == 200, body
    answer = orjson.loads(body)
    assert answer["item"] == item
    return list(answer["rules"])


def _spend_parents_and_outliers_are_in_every_profile(run: Run) -> None:
    settings, _, _ = run
    meta = store_for(settings).meta()
    assert meta is not None
    assert meta["spend_labels_learned"] >= 100
    params = store_for(settings).load(meta["version"])
    assert params is not None and params.hierarchy is not None
    assert len(set(params.hierarchy.parent_of.values())) == 3  # the default parent groups
    shown = [p["segment"] for p in all_profiles(settings)]
    assert len(shown) == USERS
    predicted = [s["predicted_spend"] for s in shown if s["predicted_spend"] is not None]
    assert len(predicted) > USERS / 2 and all(p >= 0 for p in predicted)
    outliers = sum(s["outlier"] for s in shown)
    assert 0 < outliers < USERS / 10, outliers
    store = feature_store(settings)
    for user, state in store.states():
        record = load(state.segment)
        if record.version == params.version and record.cluster >= 0:
            assert record.parent == params.hierarchy.parent(record.cluster), user


def _campaign_outcomes_are_counted_once(run: Run) -> None:
    """The tallies equal a hand count: an offer per change that carried actions, and a
    conversion when a purchase followed within the horizon, before the next offer."""
    settings, lines, changes = run
    purchases: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        event = orjson.loads(line)
        if event["type"] == "purchase":
            purchases[event["user_id"]].append(event["ts"])
    expected = expected_tallies(changes, purchases, int(settings.segments.horizon_days * DAY))
    counted = {k: v for k, v in tallies(settings).items() if k.startswith(("offer:", "conv"))}
    assert counted == expected
    assert sum(v for k, v in counted.items() if k.startswith("conversion:")) > 0
