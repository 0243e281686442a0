"""Where a keyed record goes: the partitioner of Kafka's Java producer, in pure Python.

Every producer of segstream runs librdkafka's `murmur2_random` partitioner (`producer_config`),
which places a keyed record as the Java client does: `toPositive(murmur2(key)) % partitions`
(`org.apache.kafka.common.utils.Utils`). `partition_of` gives that placement without a broker,
for tools that model the loop (`segstream evaluate`) and for tests.
"""

from __future__ import annotations

import struct
from typing import Final

_SEED: Final = 0x9747B28C
_M: Final = 0x5BD1E995
_R: Final = 24
_MASK: Final = 0xFFFFFFFF
_WORDS: Final = struct.Struct("<I")


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2`: the 32-bit MurmurHash2 of `data` (seed 0x9747b28c), as the
    signed Java `int` it returns."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for (word,) in _WORDS.iter_unpack(data[:whole]):
        k = (word * _M) & _MASK
        k ^= k >> _R
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    if whole < length:
        # The last one to three bytes, little-endian, as Java's fall-through switch reads them.
        h ^= int.from_bytes(data[whole:], "little")
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_of(key: bytes, partitions: int) -> int:
    """The partition a Java producer (and ours) sends a record with this key to."""
    if partitions < 1:
        msg = f"partitions={partitions}: a topic has at least one partition"
        raise ValueError(msg)
    return (murmur2(key) & 0x7FFFFFFF) % partitions
