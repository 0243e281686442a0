"""Model snapshots as bytes that are authenticated before they are unpickled.

Unpickling runs code, so a snapshot is trusted only if its HMAC-SHA256 under the shared key
matches: a snapshot written by anyone without the key is refused before `pickle.loads`.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any, Final

from segments.errors import SnapshotError

MAGIC: Final = b"segstream-model/1\n"
_MAC_BYTES: Final = hashlib.sha256().digest_size


def seal(payload: Any, key: bytes) -> bytes:
    body = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return MAGIC + _mac(key, body) + body


def unseal(blob: bytes, key: bytes) -> Any:
    if not blob.startswith(MAGIC):
        msg = "not a segstream model snapshot (bad header)"
        raise SnapshotError(msg)
    mac = blob[len(MAGIC) : len(MAGIC) + _MAC_BYTES]
    body = blob[len(MAGIC) + _MAC_BYTES :]
    if not hmac.compare_digest(mac, _mac(key, body)):
        msg = "model snapshot signature does not match the signing key; refusing to load it"
        raise SnapshotError(msg)
    return pickle.loads(body)


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, MAGIC + body, hashlib.sha256).digest()
