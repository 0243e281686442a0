"""One frozen settings object; the environment is read here and nowhere else.

Environment variables use the prefix `SEGSTREAM_` and `__` for nesting
(`SEGSTREAM_KAFKA__BOOTSTRAP_SERVERS`); CLI flags override them. Any librdkafka property passes
through `SEGSTREAM_KAFKA__CONFIG__<NAME>` (underscores become dots) or `-X name=value`.
Secrets never appear in a repr or a log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, get_origin
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from features.definitions import Rules, parse_windows
from stream.errors import ConfigError
from stream.segment_settings import SegmentSettings

if TYPE_CHECKING:
    from confluent_kafka import KafkaError

logger = logging.getLogger(__name__)

ENV_PREFIX: Final = "SEGSTREAM_"
_SECRET_KEY = re.compile(
    r"password|secret|token|credentials|sasl\.oauthbearer\.config|key$",
    re.I,
)
REDACTED: Final = "**********"
MIN_KEY_BYTES: Final = 16


def _frozen() -> ConfigDict:
    return ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(BaseModel):
    model_config = _frozen()

    bootstrap_servers: str = Field("localhost:9092", min_length=1)
    group_id: str = Field("segstream", min_length=1)
    # A dead member's partitions move on within 10 s. Tansu (the local broker) takes about half
    # the session timeout to form a group, so the demo and the bench use 6 s: quick joins,
    # still above librdkafka's heartbeat interval.
    session_timeout_ms: int = Field(10_000, ge=1_000)
    # Brokers that do not wake a waiting fetch on new data (Tansu) add up to this much latency;
    # on Apache Kafka it only paces fetches of idle partitions. 10 ms: p50 110 -> 43 ms measured.
    fetch_wait_max_ms: int = Field(10, ge=1, le=10_000)
    config: dict[str, str] = Field(default_factory=dict)

    @field_validator("config", mode="before")
    @classmethod
    def _dotted_keys(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k).lower().replace("_", "."): str(v) for k, v in value.items()}
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (redact_config(value) if name == "config" else value)


class RedisSettings(BaseModel):
    model_config = _frozen()

    url: str = Field("redis://localhost:6379/0", min_length=1)
    socket_timeout_s: float = Field(5.0, gt=0)
    # A Redis Cluster: `url` names any one node; the service learns the others from it, groups
    # its calls by node and follows slots that move (features.cluster).
    cluster: bool = False

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            msg = "must start with redis://, rediss:// or unix://"
            raise ValueError(msg)
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "url" else value)


class TopicSettings(BaseModel):
    model_config = _frozen()

    events: str = Field("user-events", min_length=1)
    segments: str = Field("user-segments", min_length=1)
    dlq: str = Field("user-events.dlq", min_length=1)
    partitions: int = Field(6, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1)
    create: bool = True


class LoopSettings(BaseModel):
    model_config = _frozen()

    # Larger batches give a user several events per batch, so one state write covers them:
    # 2,000 -> 5,000 took the pipeline from 38.5k to 41.8k events/s on generated sessions.
    batch_size: int = Field(5_000, ge=1, le=100_000)
    # How long a consume waits to fill a batch; under backlog batches fill at once anyway.
    batch_timeout_s: float = Field(0.01, gt=0, le=60)
    # Offsets are committed at most this often; a crash re-reads at most this much, which the
    # Redis fences make harmless.
    commit_interval_s: float = Field(1.0, ge=0, le=600)
    # How long the loop waits for the broker to acknowledge a flush or an offset commit before
    # it pauses and tries again.
    flush_timeout_s: float = Field(30.0, gt=0)
    backoff_initial_s: float = Field(0.1, gt=0)
    backoff_max_s: float = Field(10.0, gt=0)
    max_event_bytes: int = Field(16_384, ge=64)
    # A partition more than this ahead in event time of the slowest one still delivering is
    # paused until the others are within half of it (0: never); one that delivered nothing for
    # `idle_s` is idle. Live, partitions are seconds apart; a replayed backlog is read in slices
    # of half a day: an hour cost a third of the pipeline's throughput on a week of generated
    # events (prefetched records dropped at every pause), a day cost 0.03 ARI and AUC on a month.
    max_drift_s: float = Field(43_200, ge=0)
    idle_s: float = Field(1.0, gt=0)
    max_future_ms: int = Field(3_600_000, ge=0)


class FeatureSettings(BaseModel):
    model_config = _frozen()

    # Comma-separated <number><m|h|d>.
    windows: str = "1h,24h,7d,30d"
    buckets: int = Field(24, ge=1, le=1_000)
    # Events more than this behind their partition's event-time watermark are dead-lettered.
    lateness_s: float = Field(3_600, ge=0)
    # A user's keys expire after this long without an event, in event time (0: never). A year,
    # as RFM analysis looks back: a customer who buys once or twice a year stays known, and
    # the win-back segments (At Risk, Hibernating, Lost) keep their members long enough to act.
    ttl_days: float = Field(365, ge=0)
    # Users whose state the owner of a partition keeps in memory.
    cache_users: int = Field(200_000, ge=0)

    @field_validator("windows")
    @classmethod
    def _known_windows(cls, value: str) -> str:
        parse_windows(_names(value), 1)
        return value

    def rules(self) -> Rules:
        return Rules(int(self.lateness_s * 1000), parse_windows(_names(self.windows), self.buckets))


def _names(windows: str) -> list[str]:
    return [w.strip() for w in windows.split(",") if w.strip()] or [""]


class PrivacySettings(BaseModel):
    model_config = _frozen()

    # When set, user ids are replaced by HMAC-SHA256(key, id) before they are stored or emitted.
    pseudonymize_key: SecretStr | None = None
    pseudonymize_key_file: Path | None = None

    @field_validator("pseudonymize_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_KEY_BYTES:
            msg = f"must be at least {MIN_KEY_BYTES} bytes"
            raise ValueError(msg)
        return value

    @field_validator("pseudonymize_key_file")
    @classmethod
    def _readable_key_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_file():
            msg = f"{value} is not a readable file"
            raise ValueError(msg)
        if len(value.read_bytes().strip()) < MIN_KEY_BYTES:
            msg = f"the key in {value} must be at least {MIN_KEY_BYTES} bytes"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _one_key(self) -> PrivacySettings:
        if self.pseudonymize_key is not None and self.pseudonymize_key_file is not None:
            msg = "set pseudonymize_key or pseudonymize_key_file, not both"
            raise ValueError(msg)
        return self

    def key(self) -> bytes | None:
        if self.pseudonymize_key is not None:
            return self.pseudonymize_key.get_secret_value().encode()
        if self.pseudonymize_key_file is not None:
            return self.pseudonymize_key_file.read_bytes().strip()
        return None


class MetricsSettings(BaseModel):
    model_config = _frozen()

    # /metrics, /healthz and /readyz; 0 serves nothing (tools, tests).
    port: int = Field(9400, ge=0, le=65_535)
    # Every interface: probes and scrapers come from outside the pod or container.
    host: str = Field("0.0.0.0", min_length=1)
    # Liveness fails after this long without a loop iteration; a paused retry still iterates.
    stall_s: float = Field(60.0, gt=0)
    # Readiness fails after this long without a byte from any broker (a frozen broker's TCP
    # connection stays up, so librdkafka's broker state alone would say "up").
    kafka_silence_s: float = Field(30.0, gt=0)


class ApiSettings(BaseModel):
    model_config = _frozen()

    # `GET /v1/users/{id}` on the metrics port: a user's segment and features. Off unless asked
    # for: the metrics port is often reachable from more places than user data should be.
    enabled: bool = False


class LogSettings(BaseModel):
    model_config = _frozen()

    level: str = Field("INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    format: str = Field("json", pattern=r"^(json|text)$")


class Settings(BaseSettings):
    """Every setting of the service; build it with `load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    loop: LoopSettings = Field(default_factory=LoopSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    segments: SegmentSettings = Field(default_factory=SegmentSettings)
    key_prefix: str = Field("seg", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read the environment, apply `overrides` (nested dicts), and fail naming the bad setting."""
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        msg = f"invalid settings: {problems}"
        raise ConfigError(msg) from None
    except SettingsError as exc:
        msg = f"invalid settings: {exc} (complex values are JSON)"
        raise ConfigError(msg) from None


def is_setting(name: str) -> bool:
    """Whether the environment variable `name` sets something; others are ignored."""
    parts = name.removeprefix(ENV_PREFIX).lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            return False
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        rest = parts[i + 1 :]
        # A mapping (kafka.config) takes one more part: SEGSTREAM_KAFKA__CONFIG__<NAME>.
        return not rest or (get_origin(annotation) is dict and len(rest) == 1)
    return False


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """`SEGSTREAM_*` variables that set nothing: typos, or names injected by a platform (such
    as Kubernetes service links), so they are reported, not refused."""
    return sorted(n for n in environ if n.startswith(ENV_PREFIX) and not is_setting(n))


def _describe(error: Mapping[str, Any]) -> str:
    path = [str(part) for part in error["loc"]]
    env_name = ENV_PREFIX + "__".join(part.upper() for part in path)
    shown = _redact_input(error.get("input"))
    secret = any(_SECRET_KEY.search(part) for part in path) or (path and path[-1] == "url")
    # No such setting, so nothing says what the value is: a misspelled secret is still one.
    if secret or error.get("type") == "extra_forbidden":
        shown = REDACTED
    return f"{env_name} ({'.'.join(path)}): {error['msg']} (got {shown!r})"


def _redact_input(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: REDACTED if _SECRET_KEY.search(str(k)) or k == "url" else _redact_input(v)
            for k, v in value.items()
        }
    return value


def redact_config(config: Mapping[str, str]) -> dict[str, str]:
    return {k: (REDACTED if _SECRET_KEY.search(k) else v) for k, v in config.items()}


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}{REDACTED}@{host}"))


def _client_base(settings: Settings) -> dict[str, Any]:
    # librdkafka's own log lines and errors go through Python logging, not straight to stderr.
    return {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "logger": logging.getLogger("librdkafka"),
        "error_cb": log_client_error,
    }


def log_client_error(err: KafkaError) -> None:
    logger.warning("kafka client error: %s (%s)", err.str(), err.name())


def consumer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka config of the service's consumer; pass-through settings win over ours."""
    kafka = settings.kafka
    return {
        **_client_base(settings),
        "group.id": kafka.group_id,
        # Offsets are committed by the checkpoint only, after side effects are acknowledged.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": kafka.session_timeout_ms,
        "fetch.wait.max.ms": kafka.fetch_wait_max_ms,
        # Consumer lag per partition and when a broker last answered, for metrics, readiness
        # and telling an idle topic from a silent broker.
        "statistics.interval.ms": 1_000,
        **kafka.config,
    }


def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka config of every producer; idempotence keeps retries from duplicating."""
    return {
        **_client_base(settings),
        "enable.idempotence": True,
        "acks": "all",
        # A few ms of lingering turns per-record sends into batches at high rates.
        "linger.ms": 5,
        "compression.type": "lz4",
        # A key goes to the partition Java clients pick, toPositive(murmur2(key)) % partitions
        # (`stream.kafka.partitioning`), not librdkafka's default CRC-32: other services that
        # produce or look up by user id agree with us. Records without a key spread at random.
        "partitioner": "murmur2_random",
        **settings.kafka.config,
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    return {**_client_base(settings), **settings.kafka.config}
