"""Keys are placed as Java clients place them: murmur2, checked against Kafka's own values."""

from __future__ import annotations

import zlib

import pytest

from stream.kafka.partitioning import murmur2, partition_of
from stream.settings import load_settings, producer_config

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("clean_env")]

# Kafka's UtilsTest.testMurmur2 (clients/src/test/java/org/apache/kafka/common/utils/), and the
# empty input, whose value is the mixing of the seed alone.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
    b"": 275646681,
}


@pytest.mark.parametrize(("data", "expected"), JAVA_MURMUR2.items(), ids=repr)
def test_murmur2_gives_the_java_clients_values(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_partition_of_is_the_positive_hash_modulo_the_partitions() -> None:
    # toPositive(-790332482) = -790332482 & 0x7fffffff = 1357151166.
    assert [partition_of(b"foobar", n) for n in (1, 10, 50)] == [0, 1357151166 % 10, 16]
    # Not abs(): toPositive keeps the low 31 bits, which abs() would not.
    assert partition_of(b"21", 7) == (-973932308 & 0x7FFFFFFF) % 7 != abs(-973932308) % 7


def test_every_partition_gets_keys_and_crc32_would_place_them_elsewhere() -> None:
    keys = [f"u{i:07d}".encode() for i in range(600)]
    placed = [partition_of(k, 6) for k in keys]
    assert set(placed) == set(range(6))
    moved = sum(p != zlib.crc32(k) % 6 for k, p in zip(keys, placed, strict=True))
    assert moved > 300  # about five in six: the two partitioners are unrelated


def test_a_topic_has_at_least_one_partition() -> None:
    with pytest.raises(ValueError, match="partitions=0"):
        partition_of(b"u1", 0)


def test_every_producer_partitions_by_murmur2_unless_told_otherwise(
    clean_env: pytest.MonkeyPatch,
) -> None:
    assert producer_config(load_settings())["partitioner"] == "murmur2_random"
    clean_env.setenv("SEGSTREAM_KAFKA__CONFIG__PARTITIONER", "consistent_random")
    assert producer_config(load_settings())["partitioner"] == "consistent_random"
