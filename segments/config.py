"""What the models learn from and how decisions are made; built once from settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final

from segments.rules import Rule

DAY_MS: Final = 86_400_000

# Behaviour per visit, conversion, price, recency and tenure, rather than lifetime volumes: a
# volume mostly says how long a user has been known. Measured with batch k-means (k=7) on the
# service's final states of generated users: ARI 0.48 -> 0.64 (3,000 users, 30 days) and
# 0.79 -> 0.84 (20,000 users, 60 days) against the lifetime totals used before. Days since the
# last purchase and the cart-to-purchase ratio are left out: they follow days since last seen
# and purchases and carts per visit, and in the service's own run (3,000 users) dropping them
# took ARI from 0.58 to 0.62 at the same propensity AUC.
DEFAULT_MODEL_FEATURES: Final = (
    "views_per_session", "searches_per_session", "add_to_cart_per_session",
    "remove_from_cart_per_session", "purchases_per_session", "reviews_per_session", "sessions",
    "price_level", "avg_order_value", "view_to_cart", "mean_rating", "days_since_last_seen",
    "distinct_categories", "tenure_days",
)  # fmt: skip
CLUSTERERS: Final = ("kmeans", "streamkmeans", "clustream", "dbstream", "denstream")
CLASSIFIERS: Final = ("logistic", "svm", "hoeffding")
RFM_FEATURES: Final = ("days_since_last_seen", "frequency", "monetary")
# Playbook actions that stand for "recommend something": on a change they are replaced by one
# `<action>:<item>` per cross-sell recommendation the user has (kept as they are without any).
CROSS_SELL_ACTIONS: Final = frozenset(
    {"cross_sell", "premium_cross_sell", "personal_recommendations"}
)

DEFAULT_PLAYBOOK: Final[Mapping[str, tuple[str, ...]]] = {
    "vip": ("vip_support", "early_access", "premium_cross_sell"),
    "Champions": ("loyalty_reward", "referral_invite", "new_arrivals"),
    "Loyal": ("loyalty_points", "cross_sell"),
    "Potential Loyalist": ("membership_offer", "cross_sell"),
    "New": ("welcome_series", "first_order_discount"),
    "Promising": ("onboarding_tips", "bestsellers"),
    "Need Attention": ("personal_recommendations", "limited_offer"),
    "About to Sleep": ("reactivation_discount", "popular_items"),
    "At Risk": ("win_back_offer", "personal_email"),
    "Can't Lose": ("vip_win_back", "personal_call"),
    "Hibernating": ("seasonal_offer",),
    "Lost": ("last_chance_offer",),
}


@dataclass(frozen=True)
class SegmentConfig:
    """Models, sampling and the decision policy (see README "Segmentation")."""

    features: tuple[str, ...] = DEFAULT_MODEL_FEATURES
    clusterer: str = "kmeans"
    k: int = 7
    # Users known before the first centres are seeded (k-means++ and Lloyd steps over them);
    # the centres are refit on the population of recently scored users at every version. Few,
    # so that a replayed backlog, read a partition at a time, gets its model in its first batch.
    warmup: int = 200
    # Recently scored users whose latest inputs the trainer keeps to refit the centres on.
    population: int = 10_000
    classifier: str = "logistic"
    # AdaGrad step of the online classifiers (`svm`, behind their own scaler); `logistic` is
    # refit on the latest `label_window` labels at every version instead.
    learning_rate: float = 0.05
    label_window: int = 50_000
    seed: int = 42
    # Share of scorings that start a labelled propensity snapshot (when none is pending).
    # Every one: 0.2 gave held-out ROC AUC 0.74 / 0.87, 1.0 gave 0.83 / 0.87 (3,000 users x 30
    # days / 20,000 x 60), and a pending snapshot per user bounds the cost.
    label_rate: float = 1.0
    horizon_ms: int = 7 * DAY_MS
    # How long a quiet user's state is kept (the features' TTL, 0: for ever): they are
    # re-scored every horizon until then.
    keep_ms: int = 0
    # Days since last seen under which R is 5, 4, 3, 2; beyond the last, R is 1. Fixed days, not
    # quantiles: users are scored when active, so quantiles of recency at scoring are all ~0.
    recency_days: tuple[float, ...] = (7.0, 14.0, 30.0, 60.0)
    bands: tuple[float, float] = (0.2, 0.5)
    band_margin: float = 0.1
    cluster_margin: float = 0.1
    # A segment move is marginal (taken only after confirmations) when the current RFM segment
    # is still what the user's values give nudged by this share towards more or less value.
    segment_margin: float = 0.1
    # A new segment or band is taken after this many scorings over at least this much event
    # time proposed it (see `policy.settle`).
    confirmations: int = 2
    dwell_ms: int = DAY_MS
    rules: tuple[Rule, ...] = ()
    playbook: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: DEFAULT_PLAYBOOK)
    # Parent groups the clusters are merged into (an agglomerative tree over the centres).
    parents: int = 3
    # Cross-sell rules between items (products, and categories) bought or carted together:
    # minimums a rule must pass, and how many recommendations a user gets from them.
    rule_min_support: float = 0.0005
    # Baskets (decayed) a pair must be in, whatever its support: on a young or small stream a
    # pair seen once with a rare item has a huge lift (300 users: a once-seen pair outranked
    # every planted rule).
    rule_min_count: float = 5.0
    rule_min_confidence: float = 0.1
    rule_min_lift: float = 1.5
    recommendations: int = 3
    # Event time after which a basket weighs half in the rules' counts.
    rule_half_life_ms: int = 30 * DAY_MS
    # Spend prediction: the spend over this much event time after a scoring.
    spend_horizon_ms: int = 30 * DAY_MS
    # A user is an outlier when farther from every dense region's centre than this share of
    # the region's own members are.
    outlier_quantile: float = 0.98

    @cached_property
    def recency_ms(self) -> tuple[int, ...]:
        return tuple(int(days * DAY_MS) for days in self.recency_days)

    @property
    def moment_ms(self) -> int:
        """The most event time one scoring may stand for. Users are scored once per batch, at
        its end; a batch spanning weeks (a replayed backlog of a quiet shop: CDNOW's 5,000
        rows are 20 days) would resolve snapshots weeks late and see one purchase of several,
        so it is scored in parts of at most this much. Live, a batch spans seconds."""
        return min(DAY_MS, self.horizon_ms)

    def __post_init__(self) -> None:
        checks = [
            (self.clusterer in CLUSTERERS, f"clusterer must be one of {CLUSTERERS}"),
            (self.classifier in CLASSIFIERS, f"classifier must be one of {CLASSIFIERS}"),
            (self.k >= 2, "k must be at least 2"),
            (self.population >= self.k, "population must hold at least k users"),
            (self.label_window >= 100, "label_window must hold at least 100 labels"),
            (0.0 <= self.label_rate <= 1.0, "label_rate must be in [0, 1]"),
            (self.horizon_ms > 0, "horizon must be positive"),
            (list(self.recency_days) == sorted(self.recency_days), "recency_days must increase"),
            (0.0 < self.bands[0] < self.bands[1] < 1.0, "bands must be 0 < low < high < 1"),
            (self.confirmations >= 1, "confirmations must be at least 1"),
            (0.0 <= self.segment_margin < 1.0, "segment_margin must be in [0, 1)"),
            (bool(self.features), "features must not be empty"),
            (self.parents >= 1, "parents must be at least 1"),
            (0.0 <= self.rule_min_support < 1.0, "rule_min_support must be in [0, 1)"),
            (self.rule_min_count >= 0.0, "rule_min_count must not be negative"),
            (0.0 <= self.rule_min_confidence <= 1.0, "rule_min_confidence must be in [0, 1]"),
            (self.rule_min_lift >= 0.0, "rule_min_lift must not be negative"),
            (0 <= self.recommendations <= 20, "recommendations must be in [0, 20]"),
            (self.rule_half_life_ms > 0, "rule_half_life must be positive"),
            (self.spend_horizon_ms > 0, "spend_horizon must be positive"),
            (0.5 <= self.outlier_quantile <= 1.0, "outlier_quantile must be in [0.5, 1]"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
