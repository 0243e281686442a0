"""Exceptions of the features package."""

from __future__ import annotations


class FeaturesError(Exception):
    """Root of every error the features package raises on purpose."""


class StoreUnavailableError(FeaturesError):
    """Redis did not answer or refused a call; nothing of the batch was acknowledged."""


class ConflictError(FeaturesError):
    """A user's state kept changing under us (another writer); retrying the batch resolves it."""
