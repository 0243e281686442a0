"""The publisher against a real librdkafka producer with no broker behind it."""

from __future__ import annotations

import logging

import pytest

from stream.errors import DeliveryError
from stream.kafka.handler import OutMessage
from stream.kafka.publisher import Publisher

pytestmark = pytest.mark.unit


def unreachable() -> Publisher:
    config = {
        "bootstrap.servers": "127.0.0.1:1",
        "message.timeout.ms": 300,
        "logger": logging.getLogger("librdkafka"),
    }
    return Publisher(config, flush_timeout_s=5)


def test_undelivered_records_raise_on_flush_and_are_queued_again() -> None:
    publisher = unreachable()
    publisher.produce(OutMessage("t", b"k", b"v1", [("h", b"1")]))
    publisher.produce(OutMessage("t", b"k", b"v2"))
    resent: list[OutMessage] = []
    send = publisher._send
    publisher._send = lambda m: (resent.append(m), send(m))  # type: ignore[method-assign]
    with pytest.raises(DeliveryError) as info:
        publisher.flush()
    assert info.value.code == "_MSG_TIMED_OUT"
    # Both records went back to the producer for the next attempt, headers included.
    assert sorted((m.value, m.headers) for m in resent) == [
        (b"v1", [("h", b"1")]),
        (b"v2", None),
    ]
    with pytest.raises(DeliveryError):
        publisher.flush()


def test_a_latched_error_surfaces_on_the_next_produce() -> None:
    publisher = unreachable()
    publisher.produce(OutMessage("t", None, b"v"))
    publisher._producer.flush(2)  # delivery report arrives; the error is latched, not raised
    with pytest.raises(DeliveryError, match="delivery to t"):
        publisher.produce(OutMessage("t", None, b"w"))
