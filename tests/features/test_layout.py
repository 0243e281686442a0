"""The layout record: what it says, read back, and what a changed setting makes differ."""

from __future__ import annotations

import orjson
import pytest

from features import keys
from features.definitions import DEFAULT_WINDOWS, Rules, UserState, Window, parse_windows
from features.layout import FORMAT, Layout

pytestmark = pytest.mark.unit


def test_the_record_is_plain_json_naming_windows_buckets_fields_and_keys() -> None:
    layout = Layout.of(Rules(), "shop", segment_fields=["seq", "segment"])
    record = orjson.loads(layout.encode())
    assert record["format"] == FORMAT == 1
    assert record["windows"] == ["1h", "24h", "7d", "30d"]
    assert record["buckets"] == 24
    assert record["state"] == "10-digit version + msgpack UserState array"
    assert record["state_fields"] == list(UserState.__struct_fields__)
    assert record["segment_fields"] == ["seq", "segment"]
    assert record["user_ids"] == "raw"
    assert record["keys"] == {
        "state": keys.state("shop", "<user>"),
        "erased": keys.erased("shop", "<user>"),
        "watermarks": keys.watermarks("shop"),
    }
    assert Layout.decode(layout.encode()) == layout
    assert Layout.decode(layout.encode()).rolling_windows() == DEFAULT_WINDOWS


def test_other_windows_are_read_back_exactly() -> None:
    rules = Rules(windows=parse_windows(["15m", "2h", "3d"], 12))
    back = Layout.decode(Layout.of(rules, "p", pseudonymised=True).encode())
    assert back.rolling_windows() == rules.windows
    assert back.rolling_windows()[0] == Window("15m", 15 * 60_000, 12)
    assert back.user_ids == "hmac-sha256"


def test_differences_name_windows_buckets_and_ids_and_nothing_when_equal() -> None:
    mine = Layout.of(Rules(), "p")
    assert mine.differences(mine.encode()) == []
    other = Layout.of(Rules(windows=parse_windows(["1h", "7d"], 12)), "p", pseudonymised=True)
    assert mine.differences(other.encode()) == [
        "windows 1h,7d (here 1h,24h,7d,30d)",
        "buckets 12 (here 24)",
        "user ids hmac-sha256 (here raw)",
    ]
    assert mine.differences(b"not json")[0].startswith("not a layout record")


def test_a_newer_format_or_a_record_missing_a_field_is_refused_and_unknown_fields_ignored() -> None:
    record = orjson.loads(Layout.of(Rules(), "p").encode())
    with pytest.raises(ValueError, match="layout format 2, this code reads format 1"):
        Layout.decode(orjson.dumps({**record, "format": 2}))
    with pytest.raises(ValueError, match="windows"):
        Layout.decode(orjson.dumps({k: v for k, v in record.items() if k != "windows"}))
    assert (
        Layout.decode(orjson.dumps({**record, "added_later": [1, 2]})).windows == record["windows"]
    )


def test_windows_of_different_bucket_counts_cannot_be_described() -> None:
    windows = (*parse_windows(["1h"], 24), *parse_windows(["7d"], 12))
    with pytest.raises(ValueError, match="one bucket count"):
        Layout.of(Rules(windows=windows), "p")


def test_a_reader_following_only_the_record_computes_the_windowed_counts() -> None:
    """What a program in another language does: decode the msgpack array by the record's field
    order, then sum the buckets by its `window_sums` rule; it agrees with the service's own
    features for every window and event type."""
    import msgspec

    from features.definitions import TYPE_NAMES, apply_event, compute_features
    from features.events import Event

    hour = 3_600_000
    state = UserState()
    for i, kind in enumerate(["view", "purchase", "view", "add_to_cart", "view", "review"] * 9):
        ts = 1_770_000_000_000 + i * 5 * hour // 3
        event = Event(f"e{i}", "u", kind, ts, price=10.0, quantity=1, order_id=f"o{i}")
        apply_event(state, event, DEFAULT_WINDOWS)
    now = state.last_seen + 2 * hour
    record = orjson.loads(Layout.of(Rules(), "p").encode())
    assert "t // (L // B) - B < k <= t // (L // B)" in record["window_sums"]
    fields = msgspec.msgpack.decode(msgspec.msgpack.encode(state))
    windows = fields[record["state_fields"].index("windows")]
    units = {"h": hour, "d": 24 * hour, "m": 60_000}
    expected = compute_features(state, now, DEFAULT_WINDOWS)
    for name, buckets in zip(record["windows"], windows, strict=True):
        length = int(name[:-1]) * units[name[-1]]
        width = length // record["buckets"]
        newest = now // width
        kept = [b for k, b in buckets.items() if newest - record["buckets"] < int(k) <= newest]
        for slot, type_name in enumerate(TYPE_NAMES):
            assert sum(b[slot] for b in kept) == expected[f"{type_name}_{name}"], (name, type_name)
