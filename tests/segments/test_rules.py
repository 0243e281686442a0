"""Rule segments: parsing the configuration text, rejecting what the grammar leaves out, and the
vectorized and scalar evaluations, checked against values worked out by hand and against each other.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from segments.rules import Rule, RuleError, RuleSet, parse_rules

pytestmark = pytest.mark.unit

KNOWN = frozenset(
    {"spend_30d", "orders_30d", "searches_total", "avg_order_value", "views_7d", "mean_rating"}
)


def columns(**values: list[float]) -> dict[str, npt.NDArray[np.float64]]:
    return {name: np.array(column, dtype=np.float64) for name, column in values.items()}


def one_rule(expression: str) -> RuleSet:
    return RuleSet([Rule("r", expression)], KNOWN)


def rows_of(data: dict[str, npt.NDArray[np.float64]]) -> list[dict[str, float]]:
    n = len(next(iter(data.values())))
    return [{name: float(column[i]) for name, column in data.items()} for i in range(n)]


# --- parsing -------------------------------------------------------------------------------------


def test_parse_rules_splits_on_semicolons_and_newlines() -> None:
    text = (
        "vip: spend_30d > 500 and orders_30d >= 3; deal_seeker: searches_total >= 10\n"
        "\n"
        "  browser :views_7d>20  \r\n"
        "low_rated: mean_rating < 2;"
    )
    assert parse_rules(text) == (
        Rule("vip", "spend_30d > 500 and orders_30d >= 3"),
        Rule("deal_seeker", "searches_total >= 10"),
        Rule("browser", "views_7d>20"),
        Rule("low_rated", "mean_rating < 2"),
    )


@pytest.mark.parametrize("text", ["", "   ", "\n;\n ; "], ids=["empty", "spaces", "separators"])
def test_parse_rules_of_blank_text_is_empty(text: str) -> None:
    assert parse_rules(text) == ()


def test_parse_rules_rejects_a_duplicate_name() -> None:
    with pytest.raises(RuleError, match=r"rule 'vip': duplicate name"):
        parse_rules("vip: spend_30d > 1\nother: orders_30d > 1; vip: spend_30d > 2")


def test_rule_set_rejects_a_duplicate_name() -> None:
    with pytest.raises(RuleError, match=r"rule 'a': duplicate name"):
        RuleSet([Rule("a", "spend_30d > 1"), Rule("a", "spend_30d > 2")], KNOWN)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("VIP", id="uppercase"),
        pytest.param("1vip", id="leading-digit"),
        pytest.param("_vip", id="leading-underscore"),
        pytest.param("vip-x", id="dash"),
        pytest.param("big spender", id="space"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_names_are_rejected(name: str) -> None:
    with pytest.raises(RuleError, match=rf"rule '{name}': bad name"):
        parse_rules(f"ok: spend_30d > 1; {name}: spend_30d > 2")
    with pytest.raises(RuleError, match=rf"rule '{name}': bad name"):
        RuleSet([Rule(name, "spend_30d > 1")], KNOWN)


def test_parse_rules_rejects_an_entry_without_a_colon() -> None:
    with pytest.raises(RuleError, match=r"rule #2: expected 'name: expression'"):
        parse_rules("vip: spend_30d > 1; spend_30d > 2")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("vip:", "empty expression", id="empty"),
        pytest.param("vip:   ", "empty expression", id="blank"),
        pytest.param("vip: spend_30d >", "syntax error", id="dangling-operator"),
        pytest.param("vip: (spend_30d > 1", "syntax error", id="open-parenthesis"),
    ],
)
def test_parse_rules_rejects_bad_expression_syntax(text: str, problem: str) -> None:
    with pytest.raises(RuleError, match=rf"rule 'vip': {problem}"):
        parse_rules(text)


def test_names_and_features() -> None:
    rules = RuleSet(
        parse_rules("z: spend_30d > 1 and views_7d < 3; a: views_7d / orders_30d > 0; m: 1 < 2"),
        KNOWN,
    )
    assert rules.names == ("z", "a", "m")
    assert rules.features == ("orders_30d", "spend_30d", "views_7d")


# --- rejected constructs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        pytest.param("log(spend_30d) > 1", "function call is not allowed", id="call"),
        pytest.param("spend_30d.real > 1", "attribute access is not allowed", id="attribute"),
        pytest.param("spend_30d[0] > 1", "subscript is not allowed", id="subscript"),
        pytest.param("spend_30d ** 2 > 1", "operator '\\*\\*' is not allowed", id="power"),
        pytest.param("spend_30d // 2 > 1", "operator '//' is not allowed", id="floor-division"),
        pytest.param("spend_30d % 2 > 1", "operator '%' is not allowed", id="modulo"),
        pytest.param("spend_30d > 1 & 2", "operator '&' is not allowed", id="bitwise-and"),
        pytest.param("spend_30d > 1 | 2", "operator '\\|' is not allowed", id="bitwise-or"),
        pytest.param("~spend_30d > 1", "operator '~' is not allowed", id="invert"),
        pytest.param("spend_30d in orders_30d", "operator 'in' is not allowed", id="in"),
        pytest.param("spend_30d is orders_30d", "operator 'is' is not allowed", id="is"),
        pytest.param("(lambda: 1) > spend_30d", "lambda is not allowed", id="lambda"),
        pytest.param("(1 if spend_30d else 0) > 0", "conditional expression", id="if-expression"),
        pytest.param("(spend_30d := 1) > 0", "assignment expression", id="walrus"),
        pytest.param("[1] > spend_30d", "list is not allowed", id="list"),
        pytest.param("(1, 2) > spend_30d", "tuple is not allowed", id="tuple"),
        pytest.param("spend_30d > 'a'", "constant \"'a'\" is not allowed", id="string"),
        pytest.param("spend_30d > None", "constant 'None' is not allowed", id="none"),
        pytest.param("spend_30d > True", "constant 'True' is not allowed", id="bool"),
        pytest.param("spend_30d > 1j", "constant '1j' is not allowed", id="complex"),
        pytest.param("spend_30d > " + "9" * 400, "is too large", id="huge-int"),
        pytest.param("", "empty expression", id="empty"),
        pytest.param("   ", "empty expression", id="blank"),
        pytest.param("spend_30d >", "syntax error", id="syntax-error"),
        pytest.param("spend_30d + 1", "'spend_30d \\+ 1' must be a condition", id="arithmetic"),
        pytest.param("spend_30d", "'spend_30d' must be a condition", id="bare-feature"),
        pytest.param("1", "'1' must be a condition", id="bare-number"),
        pytest.param("not spend_30d", "'spend_30d' must be a condition", id="not-number"),
        pytest.param("spend_30d > 1 and 2", "'2' must be a condition", id="and-number"),
        pytest.param(
            "(spend_30d > 1) + 1 > 0", "'spend_30d > 1' cannot be used as a number", id="sum-bool"
        ),
        pytest.param(
            "(spend_30d > 1) == (orders_30d > 1)", "cannot be used as a number", id="compare-bools"
        ),
        pytest.param("-(spend_30d > 1) < 0", "cannot be used as a number", id="negate-bool"),
    ],
)
def test_rejected_constructs(expression: str, problem: str) -> None:
    with pytest.raises(RuleError, match=rf"^rule 'r': .*{problem}"):
        one_rule(expression)


def test_unknown_feature_suggests_the_closest_name() -> None:
    with pytest.raises(RuleError) as caught:
        one_rule("spend_30d > 1 and orders_3d >= 3")
    assert str(caught.value) == (
        "rule 'r': unknown feature 'orders_3d' (did you mean 'orders_30d'?)"
    )


def test_unknown_feature_without_a_close_name_has_no_suggestion() -> None:
    with pytest.raises(RuleError) as caught:
        one_rule("zzz > 1")
    assert str(caught.value) == "rule 'r': unknown feature 'zzz'"


def test_a_known_name_outside_the_catalog_is_unknown() -> None:
    with pytest.raises(RuleError, match="unknown feature 'spend_30d'"):
        RuleSet([Rule("r", "spend_30d > 1")], known={"orders_30d"})


# --- evaluation ----------------------------------------------------------------------------------


def test_vip_example_on_hand_made_rows() -> None:
    rules = RuleSet(parse_rules("vip: spend_30d > 500 and orders_30d >= 3"), KNOWN)
    data = columns(
        spend_30d=[600.0, 600.0, 500.0, 1000.0, 0.0, 500.01],
        orders_30d=[3.0, 2.0, 3.0, 10.0, 5.0, 3.0],
    )
    result = rules.evaluate(data)
    assert result.dtype == np.bool_
    assert result.shape == (6, 1)
    assert result[:, 0].tolist() == [True, False, False, True, False, True]
    assert rules.matching({"spend_30d": 600.0, "orders_30d": 3.0}) == ["vip"]
    assert rules.matching({"spend_30d": 500.0, "orders_30d": 30.0}) == []
    # An int for one user is taken as a float.
    assert rules.matching({"spend_30d": 501, "orders_30d": 3}) == ["vip"]


def test_two_rules_give_one_column_each_in_config_order() -> None:
    text = (
        "vip: spend_30d > 500 and orders_30d >= 3;"
        " deal_seeker: searches_total >= 10 and avg_order_value < 30"
    )
    rules = RuleSet(parse_rules(text), KNOWN)
    data = columns(
        spend_30d=[600.0, 20.0, 900.0],
        orders_30d=[4.0, 1.0, 5.0],
        searches_total=[0.0, 12.0, 10.0],
        avg_order_value=[150.0, 20.0, 29.5],
    )
    assert rules.evaluate(data).tolist() == [[True, False], [False, True], [True, True]]
    assert rules.matching(rows_of(data)[2]) == ["vip", "deal_seeker"]


def test_chained_comparison() -> None:
    rules = one_rule("0 < orders_30d <= 5")
    data = columns(orders_30d=[-1.0, 0.0, 0.5, 5.0, 5.01, 100.0])
    assert rules.evaluate(data)[:, 0].tolist() == [False, False, True, True, False, False]
    assert [bool(rules.matching(row)) for row in rows_of(data)] == [
        False,
        False,
        True,
        True,
        False,
        False,
    ]


def test_long_chain_needs_every_link() -> None:
    rules = one_rule("1 <= spend_30d < orders_30d != 7")
    data = columns(spend_30d=[1.0, 1.0, 0.0, 3.0], orders_30d=[2.0, 7.0, 2.0, 2.0])
    assert rules.evaluate(data)[:, 0].tolist() == [True, False, False, False]


def test_not_binds_tighter_than_and_which_binds_tighter_than_or() -> None:
    # Read as: (not a) or (b and c). Any other grouping differs on some of the eight rows.
    rules = one_rule("not spend_30d > 0 or orders_30d > 0 and views_7d > 0")
    bits = [(a, b, c) for a in (0.0, 1.0) for b in (0.0, 1.0) for c in (0.0, 1.0)]
    data = columns(
        spend_30d=[a for a, _, _ in bits],
        orders_30d=[b for _, b, _ in bits],
        views_7d=[c for _, _, c in bits],
    )
    expected = [True, True, True, True, False, False, False, True]
    assert rules.evaluate(data)[:, 0].tolist() == expected
    assert [rules.matching(row) == ["r"] for row in rows_of(data)] == expected


def test_parentheses_override_precedence() -> None:
    rules = one_rule("not (spend_30d > 0 or orders_30d > 0) and views_7d > 0")
    data = columns(spend_30d=[0.0, 1.0, 0.0], orders_30d=[0.0, 0.0, 0.0], views_7d=[1.0, 1.0, 0.0])
    assert rules.evaluate(data)[:, 0].tolist() == [True, False, False]


def test_arithmetic_precedence_and_unary_signs() -> None:
    # 2 + 3 * 4 = 14, not 20; -(-x) = x; +x = x.
    rules = RuleSet(
        parse_rules(
            "mul_first: spend_30d + orders_30d * views_7d == 14\n"
            "signs: -(-spend_30d) == +spend_30d and -spend_30d < 0\n"
            "left_to_right: spend_30d - orders_30d - views_7d == -5\n"
            "float_constant: spend_30d / 4 == 0.5"
        ),
        KNOWN,
    )
    data = columns(spend_30d=[2.0], orders_30d=[3.0], views_7d=[4.0])
    assert rules.evaluate(data).tolist() == [[True, True, True, True]]
    assert rules.matching(rows_of(data)[0]) == list(rules.names)


def test_division_by_zero_is_zero() -> None:
    rules = RuleSet(
        parse_rules(
            "zero_ratio: spend_30d / orders_30d == 0\n"
            "big_ratio: spend_30d / orders_30d > 100\n"
            "zero_over_zero: orders_30d / orders_30d == 0\n"
            "constant_zero: 1 / 0 == 0\n"
            "negative: spend_30d / orders_30d == -2.5"
        ),
        KNOWN,
    )
    # Any numpy warning (divide, invalid) would fail the test: pytest turns warnings into errors.
    data = columns(spend_30d=[50.0, 500.0, 0.0, -3.0, 10.0], orders_30d=[0.0, 2.0, 0.0, -0.0, -4.0])
    expected = [
        [True, False, True, True, False],
        [False, True, False, True, False],
        [True, False, True, True, False],
        [True, False, True, True, False],
        [False, False, False, True, True],
    ]
    assert rules.evaluate(data).tolist() == expected
    for row, flags in zip(rows_of(data), expected, strict=True):
        assert rules.matching(row) == [n for n, f in zip(rules.names, flags, strict=True) if f]


def test_no_rows() -> None:
    rules = RuleSet(parse_rules("a: spend_30d > 1; b: spend_30d / orders_30d < 2"), KNOWN)
    result = rules.evaluate(columns(spend_30d=[], orders_30d=[]))
    assert result.shape == (0, 2)
    assert result.dtype == np.bool_


def test_a_rule_without_features_covers_every_row() -> None:
    rules = RuleSet(parse_rules("everyone: 1 < 2; nobody: 2 < 1; vip: spend_30d > 5"), KNOWN)
    result = rules.evaluate(columns(spend_30d=[1.0, 10.0, 3.0]))
    assert result.tolist() == [[True, False, False], [True, False, True], [True, False, False]]
    assert rules.matching({"spend_30d": 0.0}) == ["everyone"]


def test_a_missing_column_is_a_key_error() -> None:
    rules = one_rule("spend_30d > 1 and orders_30d > 1")
    with pytest.raises(KeyError, match="orders_30d"):
        rules.evaluate(columns(spend_30d=[1.0]))
    with pytest.raises(KeyError, match="orders_30d"):
        rules.matching({"spend_30d": 2.0})


def test_columns_of_different_lengths_are_rejected() -> None:
    rules = one_rule("spend_30d > orders_30d")
    with pytest.raises(ValueError, match="same shape"):
        rules.evaluate(columns(spend_30d=[1.0, 2.0], orders_30d=[1.0]))


def test_no_rules() -> None:
    rules = RuleSet(parse_rules(""), KNOWN)
    assert rules.names == ()
    assert rules.features == ()
    assert rules.evaluate(columns(spend_30d=[1.0, 2.0])).shape == (2, 0)
    assert rules.matching({"spend_30d": 1.0}) == []


RANDOM_RULES = """
vip: spend_30d > 500 and orders_30d >= 3
deal_seeker: searches_total >= 10 and avg_order_value < 30
ratio: spend_30d / orders_30d > 150 or not views_7d < 50
band: 100 <= spend_30d - 2 * avg_order_value < 700
mixed: -mean_rating + 5 > 2 and (orders_30d == 0 or views_7d / searches_total >= 2.5)
edge: orders_30d != 2 and spend_30d * 0.5 <= avg_order_value + 100
"""


def test_evaluate_and_matching_agree_on_random_users() -> None:
    rng = np.random.RandomState(20251127)
    n = 400
    data = {
        # Whole numbers, many zeros: exercises ==, != and division by zero.
        "orders_30d": rng.randint(0, 6, n).astype(np.float64),
        "searches_total": rng.randint(0, 20, n).astype(np.float64),
        "views_7d": rng.randint(0, 120, n).astype(np.float64),
        "spend_30d": np.round(rng.exponential(300.0, n), 2),
        "avg_order_value": np.round(rng.uniform(0.0, 200.0, n), 2),
        "mean_rating": rng.uniform(1.0, 5.0, n),
    }
    rules = RuleSet(parse_rules(RANDOM_RULES), KNOWN)
    result = rules.evaluate(data)
    assert result.shape == (n, 6)
    # Each rule matches some users and not others, so agreement below is not trivially true.
    assert result.any(axis=0).all()
    assert (~result).any(axis=0).all()
    for i, row in enumerate(rows_of(data)):
        expected = [name for name, hit in zip(rules.names, result[i], strict=True) if hit]
        assert rules.matching(row) == expected, row


def test_random_users_against_python_expressions() -> None:
    # An independent reference: the same conditions written directly in Python.
    rng = np.random.RandomState(7)
    n = 300
    spend = np.round(rng.exponential(300.0, n), 2)
    orders = rng.randint(0, 6, n).astype(np.float64)
    rules = RuleSet(
        parse_rules("vip: spend_30d > 500 and orders_30d >= 3; aov: spend_30d / orders_30d < 90"),
        KNOWN,
    )
    result = rules.evaluate({"spend_30d": spend, "orders_30d": orders})
    vip = [s > 500 and o >= 3 for s, o in zip(spend, orders, strict=True)]
    aov = [(s / o if o else 0.0) < 90 for s, o in zip(spend, orders, strict=True)]
    assert result[:, 0].tolist() == vip
    assert result[:, 1].tolist() == aov
    assert 0 < sum(vip) < n
    assert 0 < sum(aov) < n
