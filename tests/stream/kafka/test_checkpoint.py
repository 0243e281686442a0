"""The checkpoint against a real librdkafka consumer with no broker behind it: a commit nobody
answers must not hold the loop."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import Consumer

from stream.errors import CommitError
from stream.kafka.checkpoint import Checkpoint
from stream.kafka.publisher import Publisher

pytestmark = pytest.mark.unit

UNREACHABLE = "127.0.0.1:1"


def test_an_unanswered_commit_fails_in_time_and_stays_the_only_one_in_flight() -> None:
    quiet = logging.getLogger("librdkafka.test")
    # librdkafka gives up on the commit after the session timeout (6 s, its least).
    consumer = Consumer(
        {
            "bootstrap.servers": UNREACHABLE,
            "group.id": "checkpoint-test",
            "session.timeout.ms": 6000,
            "logger": quiet,
        }
    )
    publisher = Publisher({"bootstrap.servers": UNREACHABLE, "logger": quiet}, flush_timeout_s=1)
    checkpoint = Checkpoint(consumer, publisher, "events", 0.0, timeout_s=0.5)
    checkpoint.track({0: 4, 1: 9}, records=15, consumed_at=time.monotonic())
    started = time.monotonic()
    with pytest.raises(CommitError, match="unanswered after"):
        checkpoint.commit()
    assert time.monotonic() - started < 5.0  # unbounded, it took the 6 s session timeout
    # The offsets stay pending; the retry first waits on the commit in flight, in vain.
    assert checkpoint.pending and checkpoint.committed_records == 0
    with pytest.raises(CommitError, match="unanswered after"):
        checkpoint.commit()
    checkpoint.close()  # returns once librdkafka gives up on the commit in flight
    assert checkpoint.pending and checkpoint.committed_records == 0
    consumer.close()
