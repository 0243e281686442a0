"""Transaction logs (customer, date, amount; CSV) as the service's purchase events.

Any log of purchases can be measured: `segstream evaluate --transactions FILE` replays it through
the service's step up to a split date and compares the service's propensity with baselines on
who bought after it (`stream.tools.baselines`). Columns are found by name (or given), dates may be
ISO-8601, `YYYYMMDD` or epoch milliseconds, and rows that cannot be read are counted, not
guessed at.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, TextIO, cast

import orjson

from features.events import parse_timestamp
from stream.errors import ConfigError
from stream.tools.replay import open_text

# Header names tried for each column, compared case-insensitively without "_", " " and "-".
CUSTOMER_NAMES: Final = ("customerid", "customer", "userid", "user", "clientid", "client")
DATE_NAMES: Final = ("date", "orderdate", "invoicedate", "ts", "timestamp", "time", "datetime")
AMOUNT_NAMES: Final = ("amount", "value", "revenue", "spend", "total", "sales", "dollarvalue")
DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class Transaction:
    customer: str
    ts_ms: int
    amount: float


@dataclass
class Log:
    """The transactions read, in time order, and what was skipped and why."""

    transactions: list[Transaction] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    columns: tuple[str, str, str] = ("", "", "")

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def read_log(path: Path, columns: Sequence[str] | None = None) -> Log:
    """Every readable row of the CSV (gzip too), sorted by time; ConfigError when the columns
    cannot be found or no row is readable."""
    with _open(path) as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        log = Log(columns=_columns(header, columns, path))
        customer, date, amount = log.columns
        for row in reader:
            _add(log, row.get(customer), row.get(date), row.get(amount))
    if not log.transactions:
        msg = f"{path}: no readable transaction (skipped: {log.skipped or 'no rows'})"
        raise ConfigError(msg)
    log.transactions.sort(key=lambda t: t.ts_ms)
    return log


def _open(path: Path) -> TextIO:
    return io.TextIOWrapper(cast("IO[bytes]", open_text(path)[0]), encoding="utf-8", newline="")


def _columns(
    header: Sequence[str], given: Sequence[str] | None, path: Path
) -> tuple[str, str, str]:
    if given is not None:
        missing = [name for name in given if name not in header]
        if len(given) != 3 or missing:
            msg = f"--columns must name 3 columns of {path} (it has {list(header)})"
            raise ConfigError(msg)
        return given[0], given[1], given[2]
    found = [_find(header, names) for names in (CUSTOMER_NAMES, DATE_NAMES, AMOUNT_NAMES)]
    if None in found:
        msg = (
            f"{path}: cannot tell the customer, date and amount columns apart in {list(header)};"
            " name them with --columns CUSTOMER,DATE,AMOUNT"
        )
        raise ConfigError(msg)
    return found[0] or "", found[1] or "", found[2] or ""


def _find(header: Sequence[str], names: Sequence[str]) -> str | None:
    plain = {
        name.lower().replace("_", "").replace(" ", "").replace("-", ""): name for name in header
    }
    return next((plain[n] for n in names if n in plain), None)


def _add(log: Log, customer: str | None, date: str | None, amount: str | None) -> None:
    if not customer or not customer.strip():
        log.skip("no_customer")
        return
    ts = _time(date or "")
    if ts is None:
        log.skip("bad_date")
        return
    try:
        value = float(amount or "")
    except ValueError:
        log.skip("bad_amount")
        return
    if not 0.0 <= value < float("inf"):
        log.skip("negative_amount" if value < 0 else "bad_amount")
        return
    log.transactions.append(Transaction(customer.strip(), ts, value))


def _time(text: str) -> int | None:
    text = text.strip()
    if len(text) == 8 and text.isdigit():  # YYYYMMDD
        text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
    if text.isdigit():
        return int(text)
    return parse_timestamp(text)


def as_events(transactions: Sequence[Transaction]) -> Iterator[bytes]:
    """Purchase events, one per row; the rows of one customer on one day are one order (a
    purchase occasion, as BG/NBD counts them)."""
    for number, t in enumerate(transactions):
        yield orjson.dumps(
            {
                "event_id": f"t{number}",
                "user_id": t.customer,
                "type": "purchase",
                "ts": t.ts_ms,
                "price": t.amount,
                "quantity": 1,
                "order_id": f"{t.customer}:{t.ts_ms // DAY_MS}",
            }
        )
