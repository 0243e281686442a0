"""The layout record: how users' states are stored and their features computed, as JSON.

Every instance writes it at start under `keys.layout(prefix)`, so a reader that has only the
Redis URL and the key prefix (`stream.client.SegmentClient`, or a program in another language)
knows the rolling windows to compute features with, and how to decode a state:

    {"format": 1, "windows": ["1h", "24h", "7d", "30d"], "buckets": 24,
     "state": "10-digit version + msgpack UserState array", "state_fields": ["counts", ...],
     "segment": "...", "segment_fields": ["seq", "segment", ...], "user_ids": "raw",
     "keys": {"state": "seg:{u:<user>}", ...}, "as_of": "..."}

A reader ignores fields it does not know; `format` changes only when one it relies on changes
meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from features import keys
from features.definitions import Rules, UserState, Window, parse_windows

FORMAT: Final = 1
STATE: Final = "10-digit version + msgpack UserState array"
SEGMENT: Final = (
    "msgpack array of segments.policy.Record in the state's `segment` field (empty: the user"
    " was not scored yet)"
)
AS_OF: Final = (
    "features are computed as of the event-time watermark of the user's input partition"
    " (state field `partition`, a field of the `watermarks` hash), else the user's `last_seen`"
)
WINDOW_SUMS: Final = (
    "state field `windows` holds per window (in `windows` order) a map bucket index -> [count"
    " of view, search, add_to_cart, remove_from_cart, purchase, review, spend, orders]; a"
    " window of length L with B buckets (bucket length L // B ms) sums, as of time t ms, the"
    " buckets k with t // (L // B) - B < k <= t // (L // B)"
)
RAW: Final = "raw"
PSEUDONYMISED: Final = "hmac-sha256"  # features.privacy.Pseudonymizer: 32 hex digits


class Layout(msgspec.Struct, frozen=True, kw_only=True):
    """The record as stored; build it with `Layout.of`."""

    format: int = FORMAT
    windows: list[str]
    buckets: int
    state: str = STATE
    state_fields: list[str] = msgspec.field(
        default_factory=lambda: list(UserState.__struct_fields__)
    )
    segment: str = SEGMENT
    segment_fields: list[str] = msgspec.field(default_factory=list)
    # "raw", or "hmac-sha256" when user ids are pseudonymised before they are stored.
    user_ids: str = RAW
    keys: dict[str, str] = msgspec.field(default_factory=dict)
    as_of: str = AS_OF
    window_sums: str = WINDOW_SUMS

    @classmethod
    def of(
        cls,
        rules: Rules,
        prefix: str,
        *,
        pseudonymised: bool = False,
        segment_fields: Sequence[str] = (),
    ) -> Layout:
        """The layout of a store folding with `rules` under `prefix`."""
        buckets = {window.buckets for window in rules.windows}
        if len(buckets) != 1:
            msg = f"windows must share one bucket count to be described, got {sorted(buckets)}"
            raise ValueError(msg)
        user = "<user>"
        return cls(
            windows=[window.name for window in rules.windows],
            buckets=buckets.pop(),
            segment_fields=list(segment_fields),
            user_ids=PSEUDONYMISED if pseudonymised else RAW,
            keys={
                "state": keys.state(prefix, user),
                "erased": keys.erased(prefix, user),
                "watermarks": keys.watermarks(prefix),
            },
        )

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(cls, raw: bytes) -> Layout:
        """The record from its stored JSON; ValueError when it is not one this code can read."""
        try:
            layout = _decode(raw)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            msg = f"not a layout record: {exc}"
            raise ValueError(msg) from exc
        if layout.format != FORMAT:
            msg = f"layout format {layout.format}, this code reads format {FORMAT}"
            raise ValueError(msg)
        return layout

    def rolling_windows(self) -> tuple[Window, ...]:
        """The windows to compute features with (`features.definitions.compute_features`)."""
        return parse_windows(self.windows, self.buckets)

    def differences(self, stored: bytes) -> list[str]:
        """What a stored record says otherwise than this one about how states are folded."""
        try:
            other = Layout.decode(stored)
        except ValueError as exc:
            return [str(exc)]
        found = []
        if other.windows != self.windows:
            found.append(f"windows {','.join(other.windows)} (here {','.join(self.windows)})")
        if other.buckets != self.buckets:
            found.append(f"buckets {other.buckets} (here {self.buckets})")
        if other.user_ids != self.user_ids:
            found.append(f"user ids {other.user_ids} (here {self.user_ids})")
        return found


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Layout).decode
