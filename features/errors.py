"""Exceptions of the features package."""

from __future__ import annotations


class FeaturesError(Exception):
    """Root of every error the features package raises on purpose."""


class StoreUnavailableError(FeaturesError):
    """Redis did not answer or refused a call; nothing of the batch was acknowledged."""


class ScriptsReloadedError(StoreUnavailableError):
    """Redis answered without our scripts (it restarted); they are loaded again, so the batch
    can be retried at once rather than after the outage's grown backoff."""


class ConflictError(FeaturesError):
    """A user's state kept changing under us (another writer); retrying the batch resolves it."""
