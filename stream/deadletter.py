"""Dead letters: an invalid or late record, its original bytes, and headers saying where from."""

from __future__ import annotations

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from features.events import InvalidEvent
from stream.publisher import OutMessage, message_headers

HEADER_PREFIX = "segstream."
MAX_MESSAGE_CHARS = 1_000


def dead_letter(dlq_topic: str, msg: Message, stage: str, invalid: InvalidEvent) -> OutMessage:
    """The DLQ record for `msg`: same key and value bytes, original headers kept, origin added."""
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
    headers = message_headers(msg)
    headers.extend((HEADER_PREFIX + name, value.encode()) for name, value in origin)
    return OutMessage(dlq_topic, msg.key(), msg.value(), headers)


def origin_of(headers: list[tuple[str, bytes]]) -> dict[str, str]:
    """The segstream headers of a dead letter as a dict without the prefix (for tools and tests)."""
    return {
        name.removeprefix(HEADER_PREFIX): value.decode()
        for name, value in headers
        if name.startswith(HEADER_PREFIX)
    }
