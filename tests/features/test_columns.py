"""`Columns` reads the same numbers as `compute_features`, on states folded from generated data."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.columns import Columns, numeric_names
from features.definitions import Rules, UserState, compute_features, decide
from features.events import Event, decode_event
from stream.tools.generate import generate

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def folded(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, UserState], int]:
    out: Path = tmp_path_factory.mktemp("gen") / "events.jsonl"
    generate(150, 40, 3, out, out.with_suffix(".csv"))
    states: dict[str, UserState] = {}
    rules, watermark = Rules(), 0
    for offset, line in enumerate(out.read_bytes().splitlines()):
        event = decode_event(line, now_ms=2**62)
        assert isinstance(event, Event)
        state = states.setdefault(event.user_id, UserState())
        decide(state, event, 0, offset, watermark, rules)
        watermark = max(watermark, event.ts_ms)
    return states, watermark


@pytest.mark.parametrize("days_later", [0, 3, 20])
def test_every_numeric_feature_matches_compute_features(
    folded: tuple[dict[str, UserState], int], days_later: int
) -> None:
    states, watermark = folded
    now = watermark + days_later * 86_400_000
    columns = Columns(numeric_names())
    matrix = columns.matrix(list(states.values()), [now] * len(states))
    for state, row in zip(states.values(), matrix.tolist(), strict=True):
        expected = compute_features(state, now)
        # A profile rounds money to cents and ratios to 4 digits for display; scoring does not.
        assert row == pytest.approx([expected[n] for n in columns.names], rel=1e-4, abs=6e-3)


def test_each_row_is_read_at_its_own_time(folded: tuple[dict[str, UserState], int]) -> None:
    states, watermark = folded
    columns = Columns(["events_7d", "days_since_last_seen"])
    chosen = list(states.values())[:20]
    times = [watermark + day * 86_400_000 for day in range(len(chosen))]
    matrix = columns.matrix(chosen, times)
    for state, at, row in zip(chosen, times, matrix.tolist(), strict=True):
        assert row == [columns.row(state, at)[0], columns.row(state, at)[1]]
        assert row[1] == pytest.approx(
            compute_features(state, at)["days_since_last_seen"], abs=1e-4
        )


def test_a_subset_keeps_the_order_asked_for() -> None:
    state = UserState(counts=[4, 1, 2, 0, 1, 0], orders=1, spend=30.0)
    columns = Columns(["orders_total", "views_total", "spend_total", "view_to_cart"])
    assert columns.row(state, 0) == [1, 4, 30.0, 0.5]
    assert columns.matrix([], []).shape == (0, 4)


def test_an_unknown_feature_is_named() -> None:
    with pytest.raises(ValueError, match="spend_3d"):
        Columns(["spend_3d"])
