"""Exceptions of the stream package: one root, small leaves, messages that carry context."""

from __future__ import annotations


class SegstreamError(Exception):
    """Root of every error segstream raises on purpose."""


class ConfigError(SegstreamError):
    """A setting is invalid; the message names it. Raised at start, before anything runs."""


class TransientError(SegstreamError):
    """A dependency (Redis, the broker) failed in a way that a retry may fix."""

    # The dependency answers again (Redis came back without our scripts, now loaded): retry
    # after the first backoff step, not after the one the outage grew to.
    retry_now: bool = False


class DeliveryError(TransientError):
    """Records were not acknowledged by the broker; `code` keeps the Kafka error code name."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class CommitError(TransientError):
    """An offset commit failed; `code` keeps the Kafka error code name."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class BrokerUnavailableError(TransientError):
    """The Kafka cluster did not answer an admin request in time."""


class StateLostError(SegstreamError):
    """Redis no longer holds the state this group built (restarted empty, flushed, an old
    backup), or the events topic is not the one it was built from. The service stops
    consuming: going on would lose or double-count events. `kind` is "lost" or "topic"."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class LocalStackError(SegstreamError):
    """A local Redis or broker could not be started."""
