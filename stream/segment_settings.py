"""Settings of segmentation (`SEGSTREAM_SEGMENTS__*`): models, sampling, policy, snapshots."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from features.columns import numeric_names
from features.definitions import Window
from segments.config import CLASSIFIERS, CLUSTERERS, DAY_MS, DEFAULT_PLAYBOOK, SegmentConfig
from segments.rules import RuleError, RuleSet, parse_rules

MIN_SIGNING_KEY_BYTES: Final = 16
DEFAULT_RULES: Final = "vip: spend_30d > 500 and orders_30d >= 3"


class SegmentSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    clusterer: str = "kmeans"
    k: int = Field(7, ge=2, le=64)
    warmup: int = Field(200, ge=10)
    population: int = Field(10_000, ge=64, le=1_000_000)
    classifier: str = "logistic"
    learning_rate: float = Field(0.05, gt=0)
    label_window: int = Field(50_000, ge=100, le=10_000_000)
    # Samples a second the trainer learns from once the model has learned `young_samples`
    # (before, it learns from every scoring); the share of scorings that become labelled
    # propensity snapshots.
    learn_per_s: float = Field(5_000, ge=0)
    young_samples: int = Field(50_000, ge=0)
    label_rate: float = Field(1.0, ge=0, le=1)
    horizon_days: float = Field(7, gt=0)
    # Comma-separated model inputs (numeric feature names); empty: the default set.
    features: str = ""
    recency_days: str = "7,14,30,60"
    bands: str = "0.2,0.5"
    band_margin: float = Field(0.1, ge=0, lt=0.5)
    cluster_margin: float = Field(0.1, ge=0, lt=1)
    segment_margin: float = Field(0.1, ge=0, lt=1)
    confirmations: int = Field(2, ge=1)
    dwell_s: float = Field(86_400, ge=0)
    # `name: condition` rules separated by `;`; the first that matches names the segment.
    rules: str = DEFAULT_RULES
    # Segment -> marketing actions (JSON object of lists); empty: the default playbook.
    playbook: dict[str, list[str]] = Field(default_factory=dict)
    # Parent groups of the clusters; cross-sell rule minimums and recommendations per user;
    # the spend prediction's horizon; the share of a dense region's members inside its edge.
    parents: int = Field(3, ge=1, le=63)
    rule_min_support: float = Field(0.0005, ge=0, lt=1)
    rule_min_count: float = Field(5, ge=0)
    rule_min_confidence: float = Field(0.1, ge=0, le=1)
    rule_min_lift: float = Field(1.5, ge=0)
    recommendations: int = Field(3, ge=0, le=20)
    rule_half_life_days: float = Field(30, gt=0, le=3650)
    spend_horizon_days: float = Field(30, gt=0, le=3650)
    outlier_quantile: float = Field(0.98, ge=0.5, le=1)
    # Snapshots are signed with this key (HMAC-SHA256) and refused unpickled if it does not match.
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None
    snapshot_interval_s: float = Field(10, gt=0)
    refresh_interval_s: float = Field(1, gt=0)
    lease_ttl_s: float = Field(15, gt=0)

    @field_validator("clusterer", "classifier")
    @classmethod
    def _known_model(cls, value: str, info: ValidationInfo) -> str:
        choices = CLUSTERERS if info.field_name == "clusterer" else CLASSIFIERS
        if value not in choices:
            msg = f"must be one of {', '.join(choices)}"
            raise ValueError(msg)
        return value

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: str) -> str:
        unknown = [n for n in _split(value) if n not in numeric_names()]
        if unknown:
            msg = f"unknown features {unknown}; known: {', '.join(numeric_names())}"
            raise ValueError(msg)
        return value

    @field_validator("recency_days", "bands")
    @classmethod
    def _numbers(cls, value: str) -> str:
        _floats(value)
        return value

    @field_validator("rules")
    @classmethod
    def _valid_rules(cls, value: str) -> str:
        try:
            RuleSet(parse_rules(value), numeric_names())
        except RuleError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("signing_key")
    @classmethod
    def _long_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SIGNING_KEY_BYTES:
            msg = f"must be at least {MIN_SIGNING_KEY_BYTES} bytes"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SegmentSettings:
        if self.signing_key is not None and self.signing_key_file is not None:
            msg = "set signing_key or signing_key_file, not both"
            raise ValueError(msg)
        self.config()
        return self

    def signing(self) -> bytes | None:
        if self.signing_key is not None:
            return self.signing_key.get_secret_value().encode()
        if self.signing_key_file is not None:
            return self.signing_key_file.read_bytes().strip()
        return None

    def signed(self) -> SegmentSettings:
        """These settings, with a throwaway signing key when none is configured: for a run
        (demo, bench, evaluation) whose model snapshots are read by that run only."""
        if self.signing() is not None:
            return self
        return self.model_copy(update={"signing_key": SecretStr(uuid.uuid4().hex)})

    def config(
        self, windows: Sequence[Window] | None = None, *, keep_days: float = 0
    ) -> SegmentConfig:
        del windows  # rules were checked against every window's names
        recency = tuple(_floats(self.recency_days))
        bands = _floats(self.bands)
        if len(bands) != 2:
            msg = "bands must be two numbers: low,high"
            raise ValueError(msg)
        optional: dict[str, Any] = {}
        if features := tuple(_split(self.features)):
            optional["features"] = features
        return SegmentConfig(
            **optional,
            clusterer=self.clusterer,
            k=self.k,
            warmup=self.warmup,
            population=self.population,
            classifier=self.classifier,
            learning_rate=self.learning_rate,
            label_window=self.label_window,
            label_rate=self.label_rate,
            horizon_ms=int(self.horizon_days * DAY_MS),
            keep_ms=int(keep_days * DAY_MS),
            recency_days=recency,
            bands=(bands[0], bands[1]),
            band_margin=self.band_margin,
            cluster_margin=self.cluster_margin,
            segment_margin=self.segment_margin,
            confirmations=self.confirmations,
            dwell_ms=int(self.dwell_s * 1000),
            rules=parse_rules(self.rules),
            playbook={k: tuple(v) for k, v in self.playbook.items()} or DEFAULT_PLAYBOOK,
            parents=self.parents,
            rule_min_support=self.rule_min_support,
            rule_min_count=self.rule_min_count,
            rule_min_confidence=self.rule_min_confidence,
            rule_min_lift=self.rule_min_lift,
            recommendations=self.recommendations,
            rule_half_life_ms=int(self.rule_half_life_days * DAY_MS),
            spend_horizon_ms=int(self.spend_horizon_days * DAY_MS),
            outlier_quantile=self.outlier_quantile,
        )


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in _split(text)]
    except ValueError:
        msg = f"expected comma-separated numbers, got {text!r}"
        raise ValueError(msg) from None
