from __future__ import annotations

import gzip
import time
from pathlib import Path

import orjson
import pytest

from stream.tools.replay import Pacer, Pacing, Record, read_records, replay

pytestmark = pytest.mark.unit

EVENTS = [
    {"event_id": "e1", "user_id": "u1", "type": "view", "ts": 1000, "price": 9.5},
    {"event_id": "e2", "user_id": "u2", "type": "purchase", "ts": "2025-11-27T00:00:00Z",
     "price": 20.0, "quantity": 2, "order_id": "o1"},
]  # fmt: skip


def write_jsonl(path: Path) -> Path:
    lines = b"\n".join(orjson.dumps(e) for e in EVENTS) + b"\n{broken\n\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(lines))
    else:
        path.write_bytes(lines)
    return path


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_jsonl_lines_are_sent_as_they_are_keyed_by_user(tmp_path: Path, name: str) -> None:
    records = list(read_records(write_jsonl(tmp_path / name)))
    assert [r.key for r in records] == [b"u1", b"u2", None]
    assert orjson.loads(records[0].value) == EVENTS[0]
    assert records[2].value == b"{broken"
    assert records[0].ts_ms == 1000
    assert records[1].ts_ms == 1_764_201_600_000


@pytest.mark.parametrize("name", ["events.csv", "events.csv.gz"])
def test_csv_rows_become_contract_json(tmp_path: Path, name: str) -> None:
    text = (
        b"event_id,user_id,type,ts,price,quantity,order_id,rating\n"
        b"e1,u1,view,1000,9.5,,,\n"
        b"e2,u2,purchase,2025-11-27T00:00:00Z,20,2,o1,\n"
        b"e3,u3,review,3000,,,,4\n"
    )
    path = tmp_path / name
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    records = list(read_records(path))
    assert orjson.loads(records[0].value) == {
        "event_id": "e1", "user_id": "u1", "type": "view", "ts": 1000, "price": 9.5,
    }  # fmt: skip
    second = orjson.loads(records[1].value)
    assert second["ts"] == "2025-11-27T00:00:00Z"
    assert (second["price"], second["quantity"]) == (20.0, 2)
    assert orjson.loads(records[2].value)["rating"] == 4.0
    assert [r.key for r in records] == [b"u1", b"u2", b"u3"]


def test_dry_run_counts_everything(tmp_path: Path) -> None:
    summary = replay(read_records(write_jsonl(tmp_path / "e.jsonl")), None, "t", Pacing())
    assert (summary.sent, summary.errors, summary.unkeyed) == (3, 0, 1)
    assert summary.bytes == sum(len(r.value) for r in read_records(tmp_path / "e.jsonl"))


def test_pacing_options_are_exclusive_and_positive() -> None:
    with pytest.raises(ValueError, match="one of"):
        Pacing(rate=1, speed=1)
    with pytest.raises(ValueError, match="--rate"):
        Pacing(rate=0)


def test_rate_pacing_never_runs_ahead_of_schedule() -> None:
    records = (Record(b"k", b"{}", None) for _ in range(101))
    started = time.monotonic()
    replay(records, None, "t", Pacing(rate=1000))
    # The pacer sleeps once it is more than 1 ms ahead, so it may finish up to 1 ms early.
    assert time.monotonic() - started >= 0.1 - 0.0011


def test_speed_pacing_keeps_event_time_gaps_scaled() -> None:
    pacer = Pacer(Pacing(speed=10))
    assert pacer._due(0, 5_000) == 0
    assert pacer._due(1, 6_000) == pytest.approx(0.1)
    assert pacer._due(2, 25_000) == pytest.approx(2.0)
    assert pacer._due(3, None) is None
