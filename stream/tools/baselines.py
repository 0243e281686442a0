"""What a purchase propensity is measured against on a calibration/holdout split of a log.

- RFM quintile scoring, the marketer's classic: recency (days since the last purchase), frequency
  (purchase days) and monetary value (spend) each scored 1-5 by quintile among the customers,
  summed.
- BG/NBD (Fader, Hardie and Lee, 2005), fit with the `lifetimes` library: the expected number of
  purchases over the holdout's length.

Both are computed as of the split from the calibration rows only, for every customer seen in
calibration; the outcome is whether the customer bought in the holdout.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stream.errors import ConfigError, SegstreamError
from stream.tools.transactions import DAY_MS, Transaction

Floats = npt.NDArray[np.float64]
# The plain maximum likelihood fit first; lifetimes advises a penalizer when it diverges.
PENALIZERS = (0.0, 0.001, 0.01, 0.1)


@dataclass(frozen=True)
class Customers:
    """Calibration summary per customer, in one order: purchase days, days from the first and
    from the last purchase day to the split, spend."""

    ids: list[str]
    days: Floats  # distinct purchase days
    first_age: Floats  # days from the first purchase day to the split (BG/NBD's T)
    last_age: Floats  # days from the last purchase day to the split
    spend: Floats


def summarize(calibration: Sequence[Transaction], split_ms: int) -> Customers:
    per: dict[str, tuple[set[int], float]] = {}
    for t in calibration:
        days, spend = per.get(t.customer, (set(), 0.0))
        days.add(t.ts_ms // DAY_MS)
        per[t.customer] = (days, spend + t.amount)
    split_day = split_ms / DAY_MS
    ids = list(per)
    return Customers(
        ids=ids,
        days=np.array([len(per[c][0]) for c in ids], dtype=np.float64),
        first_age=np.array([split_day - min(per[c][0]) for c in ids], dtype=np.float64),
        last_age=np.array([split_day - max(per[c][0]) for c in ids], dtype=np.float64),
        spend=np.array([per[c][1] for c in ids], dtype=np.float64),
    )


def quintiles(values: Floats) -> Floats:
    """1..5 by quintile of the values' ranks (ties share their mean rank)."""
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    # Tied values get the mean of their ranks, so a tie never straddles two scores at random.
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse.ravel(), weights=ranks)
    mean_ranks = (sums / counts)[inverse.ravel()]
    return np.ceil(5 * mean_ranks / len(values)).clip(1, 5)


def rfm_score(customers: Customers) -> Floats:
    recent = quintiles(-customers.last_age)
    return recent + quintiles(customers.days) + quintiles(customers.spend)


def bgnbd_expected(customers: Customers, holdout_days: float) -> Floats:
    """Expected purchase days over the holdout, from BG/NBD fit on the calibration summary."""
    frequency = customers.days - 1  # repeat purchase days
    recency = customers.first_age - customers.last_age  # first to last purchase day
    age = customers.first_age
    # lifetimes (2020) warns about options and APIs that pandas and numpy have deprecated since;
    # none of it changes the fit.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from lifetimes import BetaGeoFitter
        except ImportError:
            msg = (
                "the BG/NBD baseline needs the lifetimes package: pip install 'segstream[evaluate]'"
            )
            raise ConfigError(msg) from None
        from lifetimes.utils import ConvergenceError

        for penalizer in PENALIZERS:
            try:
                fitter = BetaGeoFitter(penalizer_coef=penalizer).fit(frequency, recency, age)
            except ConvergenceError:
                continue
            expected = fitter.conditional_expected_number_of_purchases_up_to_time(
                holdout_days, frequency, recency, age
            )
            return np.asarray(expected, dtype=np.float64)
    msg = f"BG/NBD did not converge on this log (penalizers tried: {PENALIZERS})"
    raise SegstreamError(msg)
