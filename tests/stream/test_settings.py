from __future__ import annotations

import logging

import pytest

from stream.cli.main import main
from stream.errors import ConfigError
from stream.settings import (
    consumer_config,
    load_settings,
    producer_config,
    redact_url,
    unknown_variables,
)

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("clean_env")]


def test_defaults_follow_the_design() -> None:
    s = load_settings()
    assert s.kafka.bootstrap_servers == "localhost:9092"
    assert s.redis.url == "redis://localhost:6379/0"
    assert (s.topics.events, s.topics.segments, s.topics.dlq) == (
        "user-events", "user-segments", "user-events.dlq",
    )  # fmt: skip
    assert s.kafka.group_id == "segstream"
    assert s.key_prefix == "seg"
    assert s.metrics.port == 9400


def test_environment_with_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGSTREAM_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("SEGSTREAM_TOPICS__PARTITIONS", "12")
    monkeypatch.setenv("SEGSTREAM_KEY_PREFIX", "shop1")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.topics.partitions == 12
    assert s.key_prefix == "shop1"


def test_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGSTREAM_KAFKA__GROUP_ID", "from-env")
    monkeypatch.setenv("SEGSTREAM_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    s = load_settings({"kafka": {"group_id": "from-flag"}})
    assert s.kafka.group_id == "from-flag"
    assert s.kafka.bootstrap_servers == "env:9092"


def test_librdkafka_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGSTREAM_KAFKA__CONFIG__SECURITY_PROTOCOL", "SASL_SSL")
    s = load_settings({"kafka": {"config": {"sasl.username": "svc"}}})
    config = consumer_config(s)
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.username"] == "svc"
    assert config["enable.auto.commit"] is False
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert producer_config(s)["enable.idempotence"] is True


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.key_prefix = "x"  # type: ignore[misc]


def test_secrets_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGSTREAM_KAFKA__CONFIG__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("SEGSTREAM_REDIS__URL", "redis://app:s3cret@redis.internal:6380/1")
    s = load_settings()
    for text in (repr(s), str(s), repr(s.kafka), repr(s.redis)):
        assert "hunter2" not in text
        assert "s3cret" not in text
    assert "redis.internal:6380" in repr(s.redis)
    assert consumer_config(s)["sasl.password"] == "hunter2"


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://:**********@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("SEGSTREAM_TOPICS__PARTITIONS", "many", "SEGSTREAM_TOPICS__PARTITIONS"),
        ("SEGSTREAM_TOPICS__PARTITIONS", "0", "SEGSTREAM_TOPICS__PARTITIONS"),
        ("SEGSTREAM_METRICS__PORT", "70000", "SEGSTREAM_METRICS__PORT"),
        ("SEGSTREAM_REDIS__URL", "http://x", "SEGSTREAM_REDIS__URL"),
        ("SEGSTREAM_KEY_PREFIX", "has space", "SEGSTREAM_KEY_PREFIX"),
        ("SEGSTREAM_LOOP__BATCH_SIZE", "-3", "SEGSTREAM_LOOP__BATCH_SIZE"),
        ("SEGSTREAM_KAFKA__NO_SUCH_THING", "1", "SEGSTREAM_KAFKA__NO_SUCH_THING"),
    ],
)
def test_invalid_setting_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_invalid_redis_url_message_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGSTREAM_REDIS__URL", "http://user:hunter2@x")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "hunter2" not in str(info.value)


def test_cli_exits_2_with_the_setting_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEGSTREAM_LOOP__BATCH_SIZE", "lots")
    assert main(["run", "--max-events", "1"]) == 2
    assert "SEGSTREAM_LOOP__BATCH_SIZE" in capsys.readouterr().err
    logging.getLogger().handlers.clear()


def test_cli_flag_x_passes_librdkafka_settings() -> None:
    from stream.cli.main import _overrides, _parser

    args = _parser().parse_args(["run", "-X", "socket.timeout.ms=1234", "--group-id", "g"])
    s = load_settings(_overrides(args))
    assert consumer_config(s)["socket.timeout.ms"] == "1234"
    assert s.kafka.group_id == "g"


def test_unknown_segstream_variables_are_reported_by_name() -> None:
    environ = {
        "SEGSTREAM_KEY_PREFIX": "x",
        "SEGSTREAM_KEY_PREFX": "typo",
        "SEGSTREAM_KAFKA__CONFIG__SECURITY_PROTOCOL": "SSL",
        "SEGSTREAM_SERVICE_HOST": "10.0.0.1",
        "HOME": "/root",
    }
    assert unknown_variables(environ) == ["SEGSTREAM_KEY_PREFX", "SEGSTREAM_SERVICE_HOST"]


@pytest.mark.parametrize(
    "name", ["SEGSTREAM_SEGMENTS__SIGNINGKEY", "SEGSTREAM_SEGMENTS__PSEUDONYMISE_KEY"]
)
def test_a_misspelled_secret_is_named_but_its_value_never_shown(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "s3cret-value-never-echoed")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert name in str(info.value)
    assert "s3cret" not in str(info.value)
