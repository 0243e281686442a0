"""Signed model snapshots (`segments.snapshots`): a round trip, and every tampered, mis-keyed or
malformed blob refused with `SnapshotError` before anything in it is unpickled.

The payload holds a `Tripwire`, whose `__reduce__` makes unpickling call `_tripped`, which
records the call; a refused blob must leave that record empty. The round-trip test shows the
tripwire does fire when a blob is accepted, so its silence elsewhere means something.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from segments.errors import SegmentsError, SnapshotError
from segments.snapshots import MAGIC, seal, unseal

pytestmark = pytest.mark.unit

KEY = b"k" * 32
MAC_BYTES = hashlib.sha256().digest_size
TRIPPED: list[str] = []


def _tripped(tag: str) -> str:
    TRIPPED.append(tag)
    return tag


class Tripwire:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __reduce__(self) -> tuple[Callable[[str], str], tuple[str]]:
        return _tripped, (self.tag,)


@pytest.fixture(autouse=True)
def _reset_tripwire() -> Iterator[None]:
    TRIPPED.clear()
    yield
    TRIPPED.clear()


def payload() -> dict[str, Any]:
    return {
        "version": 7,
        "centers": np.arange(12, dtype=np.float64).reshape(3, 4),
        "names": ("events_total", "spend_total"),
        "wire": Tripwire("ran"),
    }


def test_seal_then_unseal_gives_the_payload_back() -> None:
    blob = seal(payload(), KEY)
    assert TRIPPED == []  # sealing pickles, it does not unpickle
    restored = unseal(blob, KEY)
    assert TRIPPED == ["ran"]
    assert restored["version"] == 7
    assert restored["names"] == ("events_total", "spend_total")
    assert restored["wire"] == "ran"
    np.testing.assert_array_equal(restored["centers"], payload()["centers"])


def test_a_sealed_blob_is_header_mac_and_pickle() -> None:
    blob = seal({"a": 1}, KEY)
    assert blob.startswith(MAGIC)
    body = blob[len(MAGIC) + MAC_BYTES :]
    assert pickle.loads(body) == {"a": 1}
    expected = hmac.new(KEY, MAGIC + body, hashlib.sha256).digest()
    assert blob[len(MAGIC) : len(MAGIC) + MAC_BYTES] == expected


def test_an_empty_key_still_round_trips_and_differs_from_others() -> None:
    blob = seal({"a": 1}, b"")
    assert unseal(blob, b"") == {"a": 1}
    with pytest.raises(SnapshotError):
        unseal(blob, KEY)


def flip(blob: bytes, at: int) -> bytes:
    data = bytearray(blob)
    data[at] ^= 0x01
    return bytes(data)


BODY_POSITIONS = ["first", "middle", "last"]


@pytest.mark.parametrize("where", BODY_POSITIONS)
def test_a_flipped_body_byte_is_refused_unread(where: str) -> None:
    blob = seal(payload(), KEY)
    start = len(MAGIC) + MAC_BYTES
    at = {"first": start, "middle": (start + len(blob)) // 2, "last": len(blob) - 1}[where]
    with pytest.raises(SnapshotError, match="signature"):
        unseal(flip(blob, at), KEY)
    assert TRIPPED == []


@pytest.mark.parametrize("at", [0, MAC_BYTES // 2, MAC_BYTES - 1], ids=lambda i: f"mac-byte-{i}")
def test_a_flipped_signature_byte_is_refused_unread(at: int) -> None:
    blob = seal(payload(), KEY)
    with pytest.raises(SnapshotError, match="signature"):
        unseal(flip(blob, len(MAGIC) + at), KEY)
    assert TRIPPED == []


@pytest.mark.parametrize(
    "key",
    [b"K" + KEY[1:], KEY[:-1], KEY + b"k", b""],
    ids=["one-byte-different", "shorter", "longer", "empty"],
)
def test_a_wrong_key_is_refused_unread(key: bytes) -> None:
    blob = seal(payload(), KEY)
    with pytest.raises(SnapshotError, match="signature"):
        unseal(blob, key)
    assert TRIPPED == []


def resigned_with_other_header(blob: bytes) -> bytes:
    """Another header with a MAC that is valid for it under the right key."""
    other = b"segstream-model/2\n"
    body = blob[len(MAGIC) + MAC_BYTES :]
    return other + hmac.new(KEY, other + body, hashlib.sha256).digest() + body


BAD_HEADERS: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda blob: b"",
    "no-header": lambda blob: blob[len(MAGIC) :],
    "bare-pickle": lambda blob: blob[len(MAGIC) + MAC_BYTES :],
    "header-byte-flipped": lambda blob: flip(blob, 3),
    "header-without-newline": lambda blob: MAGIC[:-1] + blob[len(MAGIC) :],
    "other-version": resigned_with_other_header,
    "leading-space": lambda blob: b" " + blob,
}


@pytest.mark.parametrize("mangle", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_a_bad_header_is_refused_unread(mangle: Callable[[bytes], bytes]) -> None:
    blob = seal(payload(), KEY)
    with pytest.raises(SnapshotError, match="header"):
        unseal(mangle(blob), KEY)
    assert TRIPPED == []


TRUNCATIONS: dict[str, Callable[[bytes], bytes]] = {
    "header-only": lambda blob: blob[: len(MAGIC)],
    "inside-the-signature": lambda blob: blob[: len(MAGIC) + MAC_BYTES // 2],
    "signature-without-body": lambda blob: blob[: len(MAGIC) + MAC_BYTES],
    "body-cut-short": lambda blob: blob[:-5],
    "byte-appended": lambda blob: blob + b".",
    "body-of-another-snapshot": lambda blob: (
        blob[: len(MAGIC) + MAC_BYTES] + seal({"other": 1}, KEY)[len(MAGIC) + MAC_BYTES :]
    ),
}


@pytest.mark.parametrize("mangle", TRUNCATIONS.values(), ids=TRUNCATIONS.keys())
def test_a_truncated_or_spliced_blob_is_refused_unread(mangle: Callable[[bytes], bytes]) -> None:
    blob = seal(payload(), KEY)
    with pytest.raises(SnapshotError):
        unseal(mangle(blob), KEY)
    assert TRIPPED == []


def test_snapshot_errors_are_segmentation_errors() -> None:
    assert issubclass(SnapshotError, SegmentsError)
    with pytest.raises(SegmentsError):
        unseal(b"nope", KEY)
