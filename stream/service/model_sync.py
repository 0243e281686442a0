"""One model for every instance of a group: versioned, signed snapshots in Redis.

One instance at a time holds the trainer lease (a Redis key with a TTL that its holder
renews). The holder learns from a sample of its own partitions' users (ids are hash-partitioned,
so that is a uniform sample) and publishes a snapshot now and then; publishing is a Lua call
that checks the lease, so a holder that lost it cannot publish. Every instance, the holder
included, scores with the latest published version, so the same features get the same
segment everywhere. A new holder resumes from the trainer's state stored with the latest
version, and so does a restart.

What is stored, and how, is `stream.service.model_store`.

Learning: while the model is young it learns from every scoring, and publishes each time its
samples double, so a new stream gets a model within its first batches; after that the trainer
samples scorings so that it learns at most `learn_per_s` samples a second, whatever the traffic.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping

from segments.engine import Scored
from segments.errors import SnapshotError
from segments.model import Model
from segments.scoring import Params, cold_params
from stream.errors import ConfigError
from stream.ops import metrics
from stream.service.model_store import ModelStore, mismatch_message

logger = logging.getLogger(__name__)

# Samples and labels learned since the last version before event time alone calls for another:
# past its youth the trainer learns at most LEARN_PER_S a second, so a replay gets at most a
# version a second at the default rate (each costs a refit, some milliseconds).
PUBLISH_AFTER = 5_000


class ModelSync:
    """What one instance does about the model each batch: follow the published version, and,
    while it holds the lease, learn and publish."""

    def __init__(
        self,
        store: ModelStore,
        model: Model,
        *,
        snapshot_interval_s: float,
        refresh_interval_s: float,
        lease_ttl_s: float,
        learn_per_s: float,
        young_samples: int,
    ) -> None:
        self._store = store
        self._fresh = model  # a new, untrained model: what the first trainer starts from
        self.fingerprint = model.fingerprint
        self.owner = uuid.uuid4().hex
        self._snapshot_s = snapshot_interval_s
        self._refresh_s = refresh_interval_s
        self._lease_ms = int(lease_ttl_s * 1000)
        self._learn_per_s = learn_per_s
        self._young = young_samples
        self.params = cold_params(model.config.features)
        self._model: Model | None = None  # only while holding the lease
        self._next_refresh = 0.0
        self._next_follow = 0.0
        self._last_publish = 0.0
        # Each partition's event-time watermark at the last version.
        self._published_marks: dict[int, int] = {}
        self._last_kept = 0.0
        self._learned_since = 0
        self._milestone = 0
        self._allowance = 0.0
        self._allowance_at = time.monotonic()
        self._checked = False
        self._refused_version = 0  # the current version when a snapshot of it was refused
        self._trainer_refused = False

    @property
    def trainer(self) -> bool:
        return self._model is not None

    def check_settings(self) -> None:
        """Refuse a stored model built with other settings (ConfigError naming them)."""
        self._refuse_unless_usable(self._store.current())
        self._checked = True

    def _refuse_unless_usable(self, version: int) -> None:
        if not version:
            return
        meta = self._store.meta()
        if meta is None:
            msg = (
                f"the model in Redis (v{version}) was stored by an earlier segstream, without"
                " the settings it was built with; start a new model with `segstream model"
                " reset --yes` (stop every instance first)"
            )
            raise ConfigError(msg)
        problem = mismatch_message(meta["fingerprint"], self.fingerprint)
        if problem is not None:
            raise ConfigError(problem)

    def refresh(self) -> None:
        """Every `refresh_interval_s`: renew or take the lease, and load a newer version."""
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self._refresh_s
        if not self._checked:
            self.check_settings()
        holds = not self._trainer_refused and self._store.hold_lease(self.owner, self._lease_ms)
        if holds and self._model is None:
            try:
                self._model = self._resume()
            except SnapshotError as exc:
                self._refuse_trainer(exc)
            except BaseException:
                self._store.release(self.owner)  # let another instance try at once
                raise
            else:
                self._milestone = 2 * self._learned(self._model)
                logger.info("holding the trainer lease from model v%d", self._model.version)
        elif not holds and self._model is not None:
            logger.info("lost the trainer lease")
            self._model = None
        self._follow()

    def follow(self) -> None:
        """Every `refresh_interval_s`: load a newer version, without asking for the lease (what
        an instance does between records: it scores, for a sweep, but does not learn)."""
        now = time.monotonic()
        if now < self._next_follow:
            return
        self._next_follow = now + self._refresh_s
        if not self._checked:
            self.check_settings()
        self._follow()

    def learn_share(self, scorings: int) -> float:
        """The share of this batch's scorings to learn from: none unless training, all while
        the model is young, then what the rate allows."""
        model = self._model
        if model is None or not scorings:
            return 0.0
        if model.learned < self._young:
            return 1.0
        now = time.monotonic()
        rate = self._learn_per_s
        self._allowance = min(self._allowance + rate * (now - self._allowance_at), rate)
        self._allowance_at = now
        return min(1.0, max(self._allowance, 0.0) / scorings)

    def learn(self, scored: Scored, watermarks: Mapping[int, int]) -> None:
        """Learn from the batch's samples and resolved labels (trainer only); publish when
        due. Past the youth, labels beyond a second's allowance are left out too."""
        model = self._model
        if model is None:
            return
        # The youth is not charged to the allowance: the rate bounds what comes after it.
        charge = 0 if model.learned < self._young else 1
        for sample in scored.samples:
            model.learn(sample.user, sample.inputs, sample.frequency, sample.monetary)
        self._allowance -= charge * len(scored.samples)
        labels = 0
        for label in scored.labels:
            if charge and self._allowance <= -self._learn_per_s:
                break
            model.learn_label(label.inputs, label.bought, label.propensity)
            self._allowance -= charge
            labels += 1
        self._learned_since += len(scored.samples) + labels
        metrics.SAMPLES_LEARNED.labels("segment").inc(len(scored.samples))
        metrics.SAMPLES_LEARNED.labels("propensity").inc(labels)
        # Baskets and spend labels are few (a basket's growth, a label a user a month) and not
        # charged: they do not move the publishing schedule either.
        for basket in scored.baskets:
            model.learn_basket(basket)
        for spend in scored.spend_labels:
            model.learn_spend(spend.inputs, spend.spent)
        metrics.SAMPLES_LEARNED.labels("basket").inc(len(scored.baskets))
        metrics.SAMPLES_LEARNED.labels("spend").inc(len(scored.spend_labels))
        reason = self._publish_due(model, watermarks)
        if reason is not None:
            self._publish(model, watermarks, reason)

    def close(self) -> None:
        if self._model is not None:
            self._store.release(self.owner)
            self._model = None

    def _resume(self) -> Model:
        model = self._store.trainer() if self._store.current() else None
        return model if model is not None else self._fresh

    def _refuse_trainer(self, exc: SnapshotError) -> None:
        """A trainer's snapshot that fails its signature is not learned on: scoring goes on
        with the published version, and this instance stops asking for the lease (every
        instance would refuse it; an operator resets the model or restores the key)."""
        self._store.release(self.owner)
        self._trainer_refused = True
        metrics.SNAPSHOTS_REFUSED.labels("trainer").inc()
        logger.error("not training: %s; scoring goes on with model v%d", exc, self.params.version)

    def _follow(self) -> None:
        version = self._store.current()
        if version <= self.params.version or version == self._refused_version:
            return
        self._refuse_unless_usable(version)
        params = self._load_good(version)
        if params is None:
            # A forged or corrupt current version: the newest good one stored instead (a scan
            # of the keyspace, so only after a refusal).
            for candidate in self._store.versions(version - 1):
                if candidate <= self.params.version or params is not None:
                    break
                params = self._load_good(candidate)
            self._refused_version = version
        if params is not None:
            self.params = params
            metrics.MODEL_VERSION.set(params.version)
            logger.info("scoring with model v%d", params.version)

    def _load_good(self, version: int) -> Params | None:
        """The version's parameters, or None if it is gone or refused (counted, logged)."""
        try:
            return self._store.load(version)
        except SnapshotError as exc:
            metrics.SNAPSHOTS_REFUSED.labels("scoring").inc()
            logger.error("model v%d refused: %s", version, exc)
            return None

    @staticmethod
    def _learned(model: Model) -> int:
        return model.learned + model.labels_learned

    def _publish_due(self, model: Model, watermarks: Mapping[int, int]) -> str | None:
        """Why a new version is due now, or None: a part became usable, the young model's
        learning doubled (its centres may then move to a new placement), or the interval
        passed in wall time or in event time, whichever first. Live the two are the same; a
        replay of history gets versions as its event time passes, each once PUBLISH_AFTER new
        samples were learned, so that replays of the same events get the same versions."""
        published = self.params
        if not self._learned_since or not (
            published.clusters_ready or model.propensity_ready or model.clusters_ready
        ):
            return None
        readiness = [
            (not published.clusters_ready and model.clusters_ready, "clusters"),
            (not published.propensity_ready and model.propensity_ready, "propensity"),
            (model.learned < self._young and self._learned(model) >= self._milestone, "doubled"),
            (time.monotonic() - self._last_publish >= self._snapshot_s, "interval"),
            (self._event_time_passed(watermarks), "event time"),
        ]
        return next((reason for due, reason in readiness if due), None)

    def _event_time_passed(self, watermarks: Mapping[int, int]) -> bool:
        """An interval of event time passed on some partition (partitions of a replayed
        backlog are read one after another, each from its own past), and enough was learned."""
        interval_ms = self._snapshot_s * 1000
        passed = any(
            mark - self._published_marks.get(partition, 0) >= interval_ms
            for partition, mark in watermarks.items()
        )
        return passed and self._learned_since >= PUBLISH_AFTER

    def _publish(self, model: Model, watermarks: Mapping[int, int], reason: str) -> None:
        model.version = max(model.version, self._store.current())
        try:
            params = model.params()
            bad = params.non_finite()
        except (ValueError, ArithmeticError) as exc:  # numpy's refusals of NaN and inf
            params, bad = None, [f"{type(exc).__name__}: {exc}"]
        if params is None or bad:
            # Scoring with it would put every user in one cluster; the last good version stays.
            logger.error("model not published: non-finite %s", bad)
            self._last_publish = time.monotonic()
            return
        now = time.monotonic()
        # The trainer's state (large) is only for a new trainer to resume from: kept as of
        # at most one interval ago.
        keep = now - self._last_kept >= self._snapshot_s or model.learned < self._young
        if self._store.publish(self.owner, params, model, keep_trainer=keep):
            self.params = params
            metrics.MODEL_VERSION.set(params.version)
            logger.info(
                "published model v%d (%s; %d samples, %d labels)",
                params.version,
                reason,
                model.learned,
                model.labels_learned,
            )
            if keep:
                self._last_kept = now
        self._last_publish = now
        self._published_marks.update(watermarks)
        self._learned_since = 0
        if reason in ("clusters", "doubled"):
            self._milestone = 2 * self._learned(model)
