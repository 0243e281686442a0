"""The only module that produces to Kafka: segment changes and dead letters go through here.

The first delivery error is latched in the delivery callback and raised on the next `produce` or
`flush` (so a failure is never silent), and undelivered records are queued again before the error
is raised, so a retried flush sends them instead of losing them.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, cast

from confluent_kafka import KafkaError, Message, Producer

from stream.errors import DeliveryError
from stream.kafka.handler import Headers, OutMessage

logger = logging.getLogger(__name__)


class Publisher:
    def __init__(self, config: dict[str, Any], *, flush_timeout_s: float = 30.0) -> None:
        self._config = config
        self._flush_timeout_s = flush_timeout_s
        self._producer = Producer(self._config)
        self._failed: list[OutMessage] = []
        self._error: DeliveryError | None = None
        self._fatal = False

    def produce(self, message: OutMessage) -> None:
        self._raise_latched()
        self._send(message)

    def flush(self) -> None:
        """Wait until every record is acknowledged; raise `DeliveryError` if any is not."""
        self._raise_latched()
        remaining = self._producer.flush(self._flush_timeout_s)
        self._raise_latched()
        if remaining:
            msg = f"{remaining} records still undelivered after {self._flush_timeout_s}s"
            raise DeliveryError(msg)

    def close(self) -> None:
        self._producer.flush(self._flush_timeout_s)
        self._producer.close()

    def _send(self, message: OutMessage) -> None:
        while True:
            try:
                self._producer.produce(
                    message.topic,
                    message.value,
                    message.key,
                    headers=cast("list[tuple[str, str | bytes | None]] | None", message.headers),
                    # The report does not carry headers back, so the message rides along.
                    on_delivery=partial(self._on_delivery, message),
                )
                return
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self._producer.poll(0.05)

    def _on_delivery(self, message: OutMessage, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        self._failed.append(message)
        self._fatal = self._fatal or err.fatal()
        if self._error is None:
            self._error = DeliveryError(
                f"delivery to {msg.topic()}[{msg.partition()}] failed: {err.str()}",
                code=err.name(),
            )

    def _raise_latched(self) -> None:
        if self._error is None:
            return
        error, self._error = self._error, None
        failed, self._failed = self._failed, []
        if self._fatal:
            # An idempotent producer in a fatal state accepts nothing more: start a new one.
            logger.error("producer hit a fatal error; recreating it")
            self._producer = Producer(self._config)
            self._fatal = False
        for message in failed:
            self._send(message)
        raise error


def message_headers(msg: Message) -> Headers:
    """A record's headers as (name, bytes) pairs, whatever form the client returned them in."""
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(str(name), _as_bytes(value)) for name, value in pairs]


def _as_bytes(value: object) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else str(value).encode()
