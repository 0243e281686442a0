"""What an instance does about the shared model (`stream.service.model_sync.ModelSync`), against an
in-memory store: how much it learns (all while young, then a rate), when it publishes a version
(readiness, doublings, an interval of wall or event time), and refusing a model built with other
settings. The Redis side (`ModelStore`) is covered end to end on a real server."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from segments.config import SegmentConfig
from segments.engine import Label, Sample, Scored
from segments.fingerprint import differences, fingerprint
from segments.model import Model
from segments.scoring import Params, cold_params
from stream.errors import ConfigError
from stream.service import model_sync as models
from stream.service.model_store import describe, mismatch_message
from stream.service.model_sync import PUBLISH_AFTER, ModelSync

pytestmark = pytest.mark.unit

CONFIG = SegmentConfig(k=2, warmup=10)
WIDTH = len(CONFIG.features)
DAY = 86_400_000


class MemoryStore:
    """ModelStore's contract in memory: one lease, versions, the trainer's state, meta."""

    def __init__(self) -> None:
        self.holder: str | None = None
        self.versions: dict[int, Params] = {}
        self.kept: Model | None = None
        self.meta_: dict[str, Any] | None = None
        self.published: list[tuple[int, bool]] = []  # version, trainer kept

    def meta(self) -> dict[str, Any] | None:
        return self.meta_

    def hold_lease(self, owner: str, ttl_ms: int) -> bool:
        if self.holder in (None, owner):
            self.holder = owner
            return True
        return False

    def release(self, owner: str) -> None:
        if self.holder == owner:
            self.holder = None

    def current(self) -> int:
        return max(self.versions, default=0)

    def load(self, version: int) -> Params | None:
        return self.versions.get(version)

    def trainer(self) -> Model | None:
        return self.kept

    def publish(self, owner: str, params: Params, model: Model, *, keep_trainer: bool) -> bool:
        if self.holder != owner or params.version <= self.current():
            return False
        self.versions[params.version] = params
        if keep_trainer:
            self.kept = model
        self.meta_ = describe(model)
        self.published.append((params.version, keep_trainer))
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(models.time, "monotonic", clock)
    return clock


def sync(store: MemoryStore, *, young: int = 1_000, rate: float = 100.0) -> ModelSync:
    model = Model(CONFIG, fingerprint(CONFIG, ()))
    instance = ModelSync(
        store,  # type: ignore[arg-type]
        model,
        snapshot_interval_s=10,
        refresh_interval_s=1,
        lease_ttl_s=15,
        learn_per_s=rate,
        young_samples=young,
    )
    instance.refresh()
    return instance


def samples(n: int, start: int = 0) -> Scored:
    rng = np.random.default_rng(start)
    return Scored(
        samples=[
            Sample(f"u{start + i}", rng.normal(size=WIDTH).tolist(), 1.0, 10.0) for i in range(n)
        ]
    )


def labels(n: int) -> Scored:
    rng = np.random.default_rng(n)
    return Scored(
        labels=[Label(rng.normal(size=WIDTH).tolist(), bool(i % 2), 0.5, 0) for i in range(n)]
    )


def test_a_follower_learns_nothing(clock: Clock) -> None:
    store = MemoryStore()
    store.holder = "someone else"
    follower = sync(store)
    assert not follower.trainer
    assert follower.learn_share(500) == 0.0


def test_the_young_model_learns_every_scoring_then_a_rate(clock: Clock) -> None:
    store = MemoryStore()
    trainer = sync(store, young=30, rate=100.0)
    assert trainer.learn_share(500) == 1.0
    trainer.learn(samples(30), {0: DAY})
    # Grown up: 100 samples a second, at most a second's worth at once.
    clock.now += 0.5
    assert trainer.learn_share(500) == pytest.approx(50 / 500)
    trainer.learn(samples(50, 100), {0: DAY})
    clock.now += 10
    assert trainer.learn_share(500) == pytest.approx(100 / 500)
    assert trainer.learn_share(50) == 1.0


def test_labels_past_a_seconds_debt_are_left_out_once_grown_up(clock: Clock) -> None:
    store = MemoryStore()
    trainer = sync(store, young=0, rate=100.0)
    clock.now += 1
    trainer.learn_share(10)
    trainer.learn(labels(500), {0: DAY})
    model = trainer._model
    assert model is not None
    # An allowance of 100 plus a second of debt: 200 labels.
    assert model.labels_learned == 200


def test_versions_come_with_readiness_doublings_and_intervals(clock: Clock) -> None:
    store = MemoryStore()
    trainer = sync(store, young=10_000)
    trainer.learn(samples(5), {0: DAY})
    assert store.published == []  # 5 users: no centres yet, no labels
    trainer.learn(samples(10, 5), {0: DAY})
    assert [v for v, _ in store.published] == [1]  # clusters
    assert trainer.params.clusters_ready
    trainer.learn(samples(10, 15), {0: DAY})
    assert len(store.published) == 1  # 25 learned: not doubled from 15, no interval passed
    trainer.learn(samples(10, 25), {0: DAY})
    assert len(store.published) == 2  # 35 >= 30: doubled
    clock.now += 11
    trainer.learn(samples(1, 40), {0: DAY})
    assert len(store.published) == 3  # ten seconds of wall time
    assert all(kept for _, kept in store.published)  # young: the trainer's state goes along


def test_event_time_calls_for_a_version_once_enough_was_learned(clock: Clock) -> None:
    store = MemoryStore()
    trainer = sync(store, young=20)
    trainer.learn(samples(20), {0: DAY, 1: DAY})
    published = len(store.published)
    # A replay: an hour of event time on one partition passes within a millisecond.
    trainer.learn(samples(10, 100), {0: DAY, 1: DAY + 3_600_000})
    assert len(store.published) == published  # too little learned since the last version
    trainer.learn(samples(PUBLISH_AFTER, 1_000), {0: DAY, 1: DAY + 3_600_000})
    assert len(store.published) == published + 1
    # Grown up, the trainer's large state is kept at most once an interval of wall time.
    assert store.published[-1][1] is False


def test_a_model_built_with_other_settings_is_refused() -> None:
    store = MemoryStore()
    other = SegmentConfig(k=3, warmup=10)
    store.versions[1] = cold_params(other.features)
    store.meta_ = {"fingerprint": fingerprint(other, ())}
    with pytest.raises(ConfigError, match="SEGSTREAM_SEGMENTS__K is '2' here but '3'"):
        sync(store)


def test_a_model_stored_without_its_settings_is_refused() -> None:
    """A version without a meta was stored by an earlier segstream: its pickle may not even
    load, so the service stops with the way forward instead of guessing."""
    store = MemoryStore()
    store.versions[4] = cold_params(CONFIG.features)
    with pytest.raises(ConfigError, match=r"v4\) was stored by an earlier segstream.*reset"):
        sync(store)


def test_library_versions_are_compared_by_what_keeps_pickles_readable() -> None:
    ours = fingerprint(CONFIG, ())
    assert differences({**ours, "river": ours["river"] + ".1"}, ours) == []
    assert differences({**ours, "numpy": "1.26.4"}, {**ours, "numpy": "2.4.6"}) == ["numpy"]
    assert differences({**ours, "river": "0.21.0"}, {**ours, "river": "0.26.1"}) == ["river"]
    message = mismatch_message({**ours, "river": "0.21.0"}, {**ours, "river": "0.26.1"})
    assert message is not None
    assert "the installed river version is '0.26.1' here but '0.21.0'" in message
    assert mismatch_message(ours, ours) is None


def test_non_finite_inputs_are_refused_and_the_centres_stay_finite(clock: Clock) -> None:
    store = MemoryStore()
    trainer = sync(store, young=10_000)
    poisoned = samples(15)
    poisoned.samples[3] = Sample("u3", [float("inf")] * WIDTH, 1.0, 10.0)
    poisoned.samples[4] = Sample("u4", [0.0] * WIDTH, 1.0, float("nan"))
    trainer.learn(poisoned, {0: DAY})
    trainer.learn(Scored(labels=[Label([float("nan")] * WIDTH, True, 0.5, 0)]), {0: DAY})
    model = trainer._model
    assert model is not None
    assert (model.refused, model.learned, model.labels_learned) == (3, 13, 0)
    assert [v for v, _ in store.published] == [1]
    assert trainer.params.non_finite() == []


def test_a_model_gone_non_finite_is_not_published(clock: Clock) -> None:
    store = MemoryStore()
    trainer = sync(store, young=10_000)
    trainer.learn(samples(15), {0: DAY})
    good = trainer.params
    model = trainer._model
    assert model is not None
    # However it got there (a bug, a forged trainer state), NaN never reaches the instances.
    model.population._rows[:] = np.nan
    clock.now += 11
    trainer.learn(samples(1, 40), {0: DAY})
    assert [v for v, _ in store.published] == [1]
    assert trainer.params is good
