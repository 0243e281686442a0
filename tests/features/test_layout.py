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
