"""Audiences: named conditions that operators define and change while the service runs.

A user belongs to every audience whose condition holds, besides the one primary segment. A
condition is the rule language of `segments.rules` over the numeric features, the assignment's
numbers (`cluster`, -1 without one; `propensity`, NaN without one, so no comparison holds),
its text (`segment`, `rfm`, `propensity_band`) and sets of names (`top_categories`, the top 3;
`categories`, every category seen; `rules`, the rule segments the user is a member of):

    propensity > 0.6 and 'electronics' in top_categories and segment != 'Lost'

The catalog lists the audiences with the catalog version that added each. It is versioned as a
whole: every add or remove makes a new version, which the service follows within seconds
(`stream.service.audience_catalog`). Membership moves with the margin of rule segments: a user
leaves only when the condition fails with the numeric features nudged either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from features.columns import numeric_names
from features.definitions import DEFAULT_WINDOWS, UserState, Window, top_categories
from segments.policy import BANDS, NO_BAND, Record
from segments.rules import Rule, RuleError, RuleSet
from segments.scoring import RFM_SEGMENTS

NUMBERS: Final = ("cluster", "propensity")
TEXT: Final = ("segment", "rfm", "propensity_band")
SETS: Final = ("top_categories", "categories", "rules")
# Every audience is evaluated for every scored user: the catalog stays small.
MAX_AUDIENCES: Final = 64
MAX_CONDITION_CHARS: Final = 1_000
# Names travel in every change and label a metric.
MAX_NAME_CHARS: Final = 64


class AudienceError(ValueError):
    """An audience that cannot be added or removed; the message says why."""


class UnknownAudienceError(AudienceError):
    """No audience of that name."""


class Audience(msgspec.Struct, frozen=True):
    name: str
    condition: str
    version: int  # the catalog version that added it: carried on its membership changes


class Catalog(msgspec.Struct, frozen=True):
    version: int = 0
    audiences: tuple[Audience, ...] = ()

    def named(self, name: str) -> Audience | None:
        return next((a for a in self.audiences if a.name == name), None)

    def adding(
        self,
        name: str,
        condition: str,
        windows: Sequence[Window] = DEFAULT_WINDOWS,
        rules: Sequence[str] = (),
    ) -> Catalog:
        """The next version with the audience added; raises AudienceError for a bad one. Quoted
        segment, RFM, band and rule names must be ones that exist (`rules`: the rule segments
        configured), so that a typo is not an audience nobody can enter."""
        if len(name) > MAX_NAME_CHARS:
            msg = f"audience name longer than {MAX_NAME_CHARS} characters: {name[:20]!r}..."
            raise AudienceError(msg)
        if self.named(name) is not None:
            msg = f"audience {name!r} exists (remove it first to change its condition)"
            raise AudienceError(msg)
        if len(self.audiences) >= MAX_AUDIENCES:
            msg = f"at most {MAX_AUDIENCES} audiences; remove one first"
            raise AudienceError(msg)
        if len(condition) > MAX_CONDITION_CHARS:
            msg = f"audience {name!r}: condition longer than {MAX_CONDITION_CHARS} characters"
            raise AudienceError(msg)
        audience = Audience(name, condition.strip(), self.version + 1)
        compile_condition(name, audience.condition, windows, _values(rules))
        return Catalog(self.version + 1, (*self.audiences, audience))

    def removing(self, name: str) -> Catalog:
        if self.named(name) is None:
            msg = f"no audience {name!r}"
            raise UnknownAudienceError(msg)
        kept = tuple(a for a in self.audiences if a.name != name)
        return Catalog(self.version + 1, kept)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Catalog).decode


def encode(catalog: Catalog) -> bytes:
    return _encode(catalog)


def decode(raw: bytes) -> Catalog:
    return _decode(raw)


def compile_condition(
    name: str,
    condition: str,
    windows: Sequence[Window] = DEFAULT_WINDOWS,
    values: Mapping[str, Sequence[str]] | None = None,
) -> RuleSet:
    """The condition compiled as the service evaluates it; AudienceError names the problem."""
    try:
        return _rule_set([Rule(name, condition)], windows, values)
    except RuleError as exc:
        raise AudienceError(str(exc).replace("rule ", "audience ", 1)) from None


def _values(rules: Sequence[str]) -> dict[str, Sequence[str]]:
    """Every value the closed text and set names can take."""
    return {
        "segment": (*RFM_SEGMENTS, *rules),
        "rfm": RFM_SEGMENTS,
        "propensity_band": (*BANDS, NO_BAND),
        "rules": tuple(rules),
    }


def _rule_set(
    rules: Sequence[Rule],
    windows: Sequence[Window],
    values: Mapping[str, Sequence[str]] | None = None,
) -> RuleSet:
    known = (*numeric_names(windows), *NUMBERS)
    return RuleSet(rules, known, text=TEXT, sets=SETS, values=values)


class Audiences:
    """A catalog compiled for evaluation over a batch of users."""

    def __init__(self, catalog: Catalog, windows: Sequence[Window] = DEFAULT_WINDOWS) -> None:
        self.catalog = catalog
        self._rules = _rule_set([Rule(a.name, a.condition) for a in catalog.audiences], windows)
        self.names = self._rules.names
        # The features the conditions read from the users' states.
        self.features = tuple(n for n in self._rules.features if n not in NUMBERS)
        self._context = tuple(n for n in self._rules.features if n in NUMBERS)
        self._context += self._rules.context
        self.version_of = {a.name: a.version for a in catalog.audiences}

    def __bool__(self) -> bool:
        return bool(self.names)

    def evaluate(
        self,
        features: Mapping[str, npt.NDArray[np.float64]],
        records: Sequence[Record],
        states: Sequence[UserState],
    ) -> npt.NDArray[np.bool_]:
        """Which users match which audiences, (n, len(names)); `features` holds a column of
        every name in `features`, the records and states give the rest."""
        columns: dict[str, npt.NDArray[Any]] = dict(features)
        for name in self._context:
            numeric, value_of = _CONTEXT[name]
            values = [value_of(r, s) for r, s in zip(records, states, strict=True)]
            columns[name] = _column(values, numeric)
        if not columns:  # conditions of constants only: n from the records
            columns["_rows"] = np.zeros(len(records))
        return self._rules.evaluate(columns)


def _column(values: list[object], numeric: bool) -> npt.NDArray[Any]:
    if numeric:
        return np.asarray(values, dtype=np.float64)
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


# Each context name: whether it is a number, and its value from a user's record and state.
_CONTEXT: Final[dict[str, tuple[bool, Callable[[Record, UserState], object]]]] = {
    "cluster": (True, lambda r, s: r.cluster),
    "propensity": (True, lambda r, s: r.propensity if r.propensity >= 0 else math.nan),
    "segment": (False, lambda r, s: r.segment),
    "rfm": (False, lambda r, s: r.rfm),
    "propensity_band": (False, lambda r, s: r.band),
    "top_categories": (False, lambda r, s: frozenset(top_categories(s.categories))),
    "categories": (False, lambda r, s: frozenset(s.categories)),
    "rules": (False, lambda r, s: frozenset(r.rules)),
}
