"""Dead letters: an invalid or late record, its original bytes, and headers saying where from."""

from __future__ import annotations

import hashlib

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from features.events import InvalidEvent
from stream.kafka.handler import OutMessage
from stream.kafka.publisher import message_headers

HEADER_PREFIX = "segstream."
MAX_MESSAGE_CHARS = 1_000
# Brokers and librdkafka refuse records over 1,000,000 bytes by default: a larger one could never
# be dead-lettered, and the partition would stop on it for good. Room is left for our headers.
MAX_RECORD_BYTES = 900_000
MAX_KEPT_KEY_BYTES = 1_024

Pair = tuple[str, str]


def dead_letter(dlq_topic: str, msg: Message, stage: str, invalid: InvalidEvent) -> OutMessage:
    """The DLQ record for `msg`: same key and value bytes, original headers kept, origin added
    (a reference instead when the record is too large for any topic)."""
    ts_type, ts = msg.timestamp()
    origin = [
        ("origin.topic", msg.topic() or ""),
        ("origin.partition", str(msg.partition())),
        ("origin.offset", str(msg.offset())),
        ("origin.timestamp", "" if ts_type == TIMESTAMP_NOT_AVAILABLE else str(ts)),
        ("stage", stage),
        ("error.reason", invalid.reason),
        ("error.class", invalid.error_class),
        ("error.message", invalid.message[:MAX_MESSAGE_CHARS]),
    ]
    key, value, headers = msg.key(), msg.value(), message_headers(msg)
    size = len(key or b"") + len(value or b"") + sum(len(n) + len(v) for n, v in headers)
    if size > MAX_RECORD_BYTES:
        key, reference = _reference(key, value or b"", size)
        value, headers = b"", []
        origin += reference
    headers.extend((HEADER_PREFIX + name, text.encode()) for name, text in origin)
    return OutMessage(dlq_topic, key, value, headers)


def _reference(key: bytes | None, value: bytes, size: int) -> tuple[bytes | None, list[Pair]]:
    """A record too large to forward is dead-lettered as a reference to the original, which
    stays in the input topic until its retention ends: the key (when short), sizes and a hash."""
    omitted = ["value", "headers"]
    if key is not None and len(key) > MAX_KEPT_KEY_BYTES:
        omitted.append("key")
        key = None
    return key, [
        ("omitted", ",".join(omitted)),
        ("original.bytes", str(size)),
        ("value.bytes", str(len(value))),
        ("value.sha256", hashlib.sha256(value).hexdigest()),
    ]


def origin_of(headers: list[tuple[str, bytes]]) -> dict[str, str]:
    """The segstream headers of a dead letter as a dict without the prefix (for tools and tests)."""
    return {
        name.removeprefix(HEADER_PREFIX): value.decode()
        for name, value in headers
        if name.startswith(HEADER_PREFIX)
    }
