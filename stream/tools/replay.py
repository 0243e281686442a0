"""Replay a JSONL or CSV file (gzip too) into the events topic, keyed by user id, optionally paced.

Lines are sent as they are: a line the service will reject still travels, so the service's
dead-letter topic, not this tool, decides what is invalid and nothing disappears silently.
"""

from __future__ import annotations

import csv
import gzip
import io
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson
from confluent_kafka import KafkaError, Message, Producer

from features.events import parse_timestamp
from stream.kafka.topics import ensure_topics
from stream.settings import Settings, producer_config

_CSV_INTS = frozenset({"quantity", "schema_version"})
_CSV_FLOATS = frozenset({"price", "rating"})


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None
    value: bytes
    ts_ms: int | None


@dataclass
class ReplaySummary:
    sent: int = 0
    bytes: int = 0
    errors: int = 0
    unkeyed: int = 0
    elapsed_s: float = 0.0
    first_error: str = ""

    def as_dict(self) -> dict[str, object]:
        rate = self.sent / self.elapsed_s if self.elapsed_s else 0.0
        return {
            "sent": self.sent,
            "bytes": self.bytes,
            "errors": self.errors,
            "unkeyed": self.unkeyed,
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_second": round(rate, 1),
            **({"first_error": self.first_error} if self.first_error else {}),
        }


@dataclass(frozen=True)
class Pacing:
    """At most one of `rate` (events/s) and `speed` (event-time factor); neither means unpaced."""

    rate: float | None = None
    speed: float | None = None

    def __post_init__(self) -> None:
        if self.rate is not None and self.speed is not None:
            msg = "choose one of --rate and --speed"
            raise ValueError(msg)
        for name, value in (("rate", self.rate), ("speed", self.speed)):
            if value is not None and value <= 0:
                msg = f"--{name} must be > 0, got {value}"
                raise ValueError(msg)


def open_text(path: Path) -> tuple[io.BufferedIOBase, Callable[[], int]]:
    """The file's (decompressed) bytes and a function giving how many raw bytes were read."""
    plain = path.open("rb")
    if path.suffix == ".gz":
        return _ClosingGzip(plain), plain.tell
    return plain, plain.tell


class _ClosingGzip(gzip.GzipFile):
    """A gzip reader that also closes the file it reads from."""

    def __init__(self, raw: io.BufferedReader) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def read_records(path: Path) -> Iterator[Record]:
    stream, _ = open_text(path)
    with stream:
        yield from iter_records(stream, path)


def iter_records(stream: io.BufferedIOBase, path: Path) -> Iterator[Record]:
    suffixes = [s.lower() for s in path.suffixes]
    if ".csv" in suffixes:
        yield from _csv_records(stream)
    else:
        yield from _jsonl_records(stream)


def _jsonl_records(stream: io.BufferedIOBase) -> Iterator[Record]:
    for line in stream:
        value = line.rstrip(b"\r\n")
        if value.strip():
            yield _record(value)


def _csv_records(stream: io.BufferedIOBase) -> Iterator[Record]:
    with io.TextIOWrapper(cast("IO[bytes]", stream), encoding="utf-8", newline="") as text:
        for row in csv.DictReader(text):
            event = {k: _csv_value(k, v) for k, v in row.items() if k and v not in (None, "")}
            yield _record(orjson.dumps(event))


def _csv_value(name: str, text: str) -> Any:
    try:
        if name in _CSV_INTS or (name == "ts" and text.isdigit()):
            return int(text)
        if name in _CSV_FLOATS:
            return float(text)
    except ValueError:
        return text  # left as text so the service dead-letters it with its reason
    return text


def _record(value: bytes) -> Record:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return Record(None, value, None)
    if not isinstance(obj, dict):
        return Record(None, value, None)
    user = obj.get("user_id")
    ts = obj.get("ts")
    ts_ms = parse_timestamp(ts) if isinstance(ts, int | str) and not isinstance(ts, bool) else None
    key = user.encode() if isinstance(user, str) and user else None
    return Record(key, value, ts_ms)


class Pacer:
    """Sleeps so that record i goes out at its scheduled time; coarse sleeps keep overhead low."""

    def __init__(self, pacing: Pacing) -> None:
        self._pacing = pacing
        self._start = time.monotonic()
        self._first_ts: int | None = None

    def wait(self, index: int, ts_ms: int | None) -> None:
        due = self._due(index, ts_ms)
        if due is None:
            return
        ahead = due - (time.monotonic() - self._start)
        if ahead > 0.001:
            time.sleep(ahead)

    def _due(self, index: int, ts_ms: int | None) -> float | None:
        if self._pacing.rate is not None:
            return index / self._pacing.rate
        if self._pacing.speed is None or ts_ms is None:
            return None
        if self._first_ts is None:
            self._first_ts = ts_ms
        return max(0, ts_ms - self._first_ts) / 1000 / self._pacing.speed


def replay(
    records: Iterator[Record],
    producer: Producer | None,
    topic: str,
    pacing: Pacing,
    progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Send `records` (or only count them when `producer` is None: a dry run)."""
    summary = ReplaySummary()
    started = time.monotonic()

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            summary.sent += 1
            summary.bytes += len(msg.value() or b"")
            return
        summary.errors += 1
        summary.first_error = summary.first_error or err.str()

    pacer = Pacer(pacing)
    for index, record in enumerate(records):
        pacer.wait(index, record.ts_ms)
        summary.unkeyed += record.key is None
        if producer is None:
            summary.sent += 1
            summary.bytes += len(record.value)
        else:
            _produce(producer, topic, record, on_delivery)
        if progress is not None and index % 1000 == 0:
            progress(index)
    if producer is not None:
        remaining = producer.flush(60)
        summary.errors += remaining
    summary.elapsed_s = time.monotonic() - started
    return summary


def _produce(
    producer: Producer, topic: str, record: Record, on_delivery: Callable[..., None]
) -> None:
    while True:
        try:
            producer.produce(topic, record.value, record.key, on_delivery=on_delivery)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.05)


def replay_values(settings: Settings, values: Iterable[bytes]) -> ReplaySummary:
    """JSON events into the settings' events topic (created if missing), keyed by their user id,
    as fast as they go (the bench's input)."""
    ensure_topics(settings)
    records = (Record(orjson.loads(v)["user_id"].encode(), v, None) for v in values)
    return replay(records, Producer(producer_config(settings)), settings.topics.events, Pacing())
