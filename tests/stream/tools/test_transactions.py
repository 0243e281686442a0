"""Transaction logs read as purchase events (`stream.tools.transactions`) and the baselines they are
measured against (`stream.tools.baselines`): columns, dates, skipped rows, RFM quintiles, BG/NBD."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import orjson
import pytest

from stream.errors import ConfigError
from stream.tools.baselines import bgnbd_expected, quintiles, rfm_score, summarize
from stream.tools.quality import roc_auc
from stream.tools.transactions import DAY_MS, Transaction, as_events, read_log

pytestmark = pytest.mark.unit

T0 = 852_076_800_000  # 1997-01-01T00:00:00Z


def write(tmp_path: Path, text: str, name: str = "log.csv") -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_columns_are_found_by_name_and_rows_sorted_by_time(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Invoice Date,Customer_ID,Amount\n1997-01-03,7,10.5\n19970101,8,3\n1997-01-02T12:00,7,0\n",
    )
    log = read_log(path)
    assert log.columns == ("Customer_ID", "Invoice Date", "Amount")
    assert log.transactions == [
        Transaction("8", T0, 3.0),
        Transaction("7", T0 + DAY_MS + DAY_MS // 2, 0.0),
        Transaction("7", T0 + 2 * DAY_MS, 10.5),
    ]
    assert log.skipped == {}


def test_gzip_and_named_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "who,when,paid\na,1997-01-01,5\n", "log.csv.gz")
    log = read_log(path, ("who", "when", "paid"))
    assert log.transactions == [Transaction("a", T0, 5.0)]


def test_unreadable_rows_are_counted_not_guessed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "customer,date,amount\n"
        ",1997-01-01,5\n"
        "a,yesterday,5\n"
        "a,1997-01-01,five\n"
        "a,1997-01-01,-3\n"
        "a,1997-01-01,inf\n"
        "a,1997-01-01,4\n",
    )
    log = read_log(path)
    assert log.transactions == [Transaction("a", T0, 4.0)]
    assert log.skipped == {
        "no_customer": 1,
        "bad_date": 1,
        "bad_amount": 2,
        "negative_amount": 1,
    }


@pytest.mark.parametrize(
    ("text", "columns", "message"),
    [
        ("id,when,x\n1,1997-01-01,2\n", None, "cannot tell the customer, date and amount"),
        ("customer,date,amount\n1,1997-01-01,2\n", ("customer", "day", "amount"), "--columns"),
        ("customer,date,amount\n,nope,x\n", None, "no readable transaction"),
    ],
    ids=["unknown-header", "named-column-missing", "nothing-readable"],
)
def test_bad_logs_stop_with_a_message(
    tmp_path: Path, text: str, columns: tuple[str, str, str] | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        read_log(write(tmp_path, text), columns)


def test_each_row_is_a_purchase_and_a_customer_day_is_one_order() -> None:
    rows = [Transaction("a", T0, 5.0), Transaction("a", T0 + 3_600_000, 2.5)]
    events = [orjson.loads(e) for e in as_events(rows)]
    assert [e["type"] for e in events] == ["purchase", "purchase"]
    assert [e["event_id"] for e in events] == ["t0", "t1"]
    assert {e["order_id"] for e in events} == {f"a:{T0 // DAY_MS}"}
    assert [(e["price"], e["quantity"]) for e in events] == [(5.0, 1), (2.5, 1)]


def test_the_summary_counts_purchase_days_and_ages_at_the_split() -> None:
    split = T0 + 10 * DAY_MS
    rows = [
        Transaction("a", T0, 5.0),
        Transaction("a", T0 + 3_600_000, 5.0),  # same day: one purchase day
        Transaction("a", T0 + 4 * DAY_MS, 10.0),
        Transaction("b", T0 + 9 * DAY_MS, 1.0),
    ]
    customers = summarize(rows, split)
    assert customers.ids == ["a", "b"]
    np.testing.assert_array_equal(customers.days, [2, 1])
    np.testing.assert_array_equal(customers.first_age, [10, 1])
    np.testing.assert_array_equal(customers.last_age, [6, 1])
    np.testing.assert_array_equal(customers.spend, [20.0, 1.0])


def test_quintiles_share_ties_and_span_one_to_five() -> None:
    scores = quintiles(np.array([5.0, 1.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0]))
    # Ranks 1..10 with the two 1s sharing 1.5: score = ceil(rank / 2).
    assert scores.tolist() == [3, 1, 1, 5, 2, 4, 2, 5, 3, 4]
    assert quintiles(np.ones(7)).tolist() == [3] * 7


def test_rfm_ranks_recent_frequent_big_spenders_first() -> None:
    split = T0 + 100 * DAY_MS
    rows = [Transaction("loyal", T0 + d * DAY_MS, 50.0) for d in range(0, 100, 10)]
    rows += [Transaction("once", T0, 5.0), Transaction("lapsed", T0 + DAY_MS, 20.0)]
    rows += [Transaction("lapsed", T0 + 2 * DAY_MS, 20.0)]
    customers = summarize(rows, split)
    score = dict(zip(customers.ids, rfm_score(customers).tolist(), strict=True))
    assert score["loyal"] > score["lapsed"] > score["once"]


def test_bgnbd_expects_more_from_frequent_recent_customers() -> None:
    rng = np.random.default_rng(3)
    split = T0 + 200 * DAY_MS
    rows = []
    for c in range(300):
        rate = rng.choice([0.01, 0.05, 0.2])  # purchases a day
        alive_until = rng.integers(20, 200)
        days = [d for d in range(200) if d < alive_until and rng.uniform() < rate]
        rows += [Transaction(f"c{c}", T0 + d * DAY_MS, 10.0) for d in days or [0]]
    customers = summarize(rows, split)
    expected = bgnbd_expected(customers, 100.0)
    assert np.all(np.isfinite(expected)) and np.all(expected >= 0)
    # More purchase days (with the last one recent) should mean more purchases expected.
    busy = (customers.days >= 10) & (customers.last_age < 10)
    assert expected[busy].mean() > 3 * expected[customers.days == 1].mean()
    assert roc_auc(busy.astype(int).tolist(), expected.tolist()) > 0.9
