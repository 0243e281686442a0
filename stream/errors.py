"""Exceptions of the stream package: one root, small leaves, messages that carry context."""

from __future__ import annotations


class SegstreamError(Exception):
    """Root of every error segstream raises on purpose."""


class ConfigError(SegstreamError):
    """A setting is invalid; the message names it. Raised at start, before anything runs."""


class TransientError(SegstreamError):
    """A dependency (Redis, the broker) failed in a way that a retry may fix."""


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


class BrokerUnavailableError(SegstreamError):
    """The Kafka cluster did not answer an admin request in time."""


class LocalStackError(SegstreamError):
    """A local Redis or broker could not be started."""
