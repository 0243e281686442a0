"""Errors of the segmentation layer."""

from __future__ import annotations


class SegmentsError(Exception):
    """Root of segmentation errors."""


class SnapshotError(SegmentsError):
    """A model snapshot could not be trusted or read (bad signature, wrong format)."""
