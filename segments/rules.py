"""Rule segments: named conditions over user features, configured as text.

A configuration such as ``vip: spend_30d > 500 and orders_30d >= 3; deal_seeker: ...`` holds rules
separated by ``;`` or newlines, each ``name: expression``. An expression is a small, checked subset
of Python expression syntax: ``and``/``or``/``not``, comparisons (chains included), ``+ - * /``,
unary ``-``/``+``, feature names and int/float numbers. A rule set may also know text names
(``segment == 'Champions'``, ``!=`` too) and set names (``'books' in top_categories``, ``not in``
too), which take quoted strings. It is parsed with `ast` and compiled once
into two closure trees, never handed to ``eval``: one over numpy columns for a whole batch of users
(`RuleSet.evaluate`) and one over plain floats for a single user (`RuleSet.matching`). Both follow
IEEE double arithmetic, with one exception shared by both: dividing by zero gives 0.0, so a ratio
such as ``spend_30d / orders_30d`` is usable for users without orders.
"""

from __future__ import annotations

import ast
import difflib
import operator
import re
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

_Vector = npt.NDArray[np.float64]
_Mask = npt.NDArray[np.bool_]
_Columns = Mapping[str, _Vector]
_Values = Mapping[str, float]

_NAME: Final = re.compile(r"[a-z][a-z0-9_]*")
_SEPARATOR: Final = re.compile(r"[;\n]")


class RuleError(ValueError):
    """A rule that cannot be used; the message names the rule and the problem."""


@dataclass(frozen=True)
class Rule:
    name: str
    expression: str


def parse_rules(text: str) -> tuple[Rule, ...]:
    """The rules of a configuration text, in order; blank entries are skipped.

    Checks the layout, the names and the expression syntax; whether an expression only uses the
    allowed constructs and known features is checked by `RuleSet`.
    """
    rules = []
    for number, entry in enumerate(filter(None, map(str.strip, _SEPARATOR.split(text))), 1):
        name, colon, expression = entry.partition(":")
        if not colon:
            msg = f"rule #{number}: expected 'name: expression', got {entry!r}"
            raise RuleError(msg)
        rules.append(Rule(name.strip(), expression.strip()))
    _check_names(rules)
    for rule in rules:
        _parse(rule)
    return tuple(rules)


class RuleSet:
    """Rules compiled for vectorized evaluation over a batch and for one user at a time."""

    def __init__(
        self,
        rules: Sequence[Rule],
        known: Collection[str],
        *,
        text: Collection[str] = (),
        sets: Collection[str] = (),
        values: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """`values` names, for some text and set names, every value they can take: a quoted
        name outside it is refused (a typo would match nobody, silently)."""
        _check_names(rules)
        closed = {name: frozenset(v) for name, v in (values or {}).items()}
        names = _Names(frozenset(known), frozenset(text), frozenset(sets), closed)
        compiled = [_Compiler(rule, names).compile() for rule in rules]
        self.names: tuple[str, ...] = tuple(rule.name for rule in rules)
        self.features: tuple[str, ...] = tuple(sorted(set().union(*(c.features for c in compiled))))
        # The text and set names the rules read: `evaluate` takes them as object columns.
        self.context: tuple[str, ...] = tuple(sorted(set().union(*(c.context for c in compiled))))
        self._vector = tuple(c.vector for c in compiled)
        self._scalar = tuple(c.scalar for c in compiled)

    def evaluate(self, columns: Mapping[str, npt.NDArray[np.float64]]) -> npt.NDArray[np.bool_]:
        """Which users match which rules: a bool array of shape (n, len(names)).

        `columns` must hold every name of `features` (a missing one raises KeyError), each of shape
        (n,). When the rules use no feature, n is taken from any column given (0 if none).
        """
        data = {name: np.asarray(columns[name], dtype=np.float64) for name in self.features}
        data |= {name: np.asarray(columns[name], dtype=object) for name in self.context}
        out = np.empty((_rows(data, columns), len(self.names)), dtype=np.bool_)
        # Overflow and inf - inf give inf and nan silently, as Python floats do in `matching`.
        with np.errstate(all="ignore"):
            for index, rule in enumerate(self._vector):
                out[:, index] = rule(data)
        return out

    def matching(self, values: Mapping[str, float]) -> list[str]:
        """Names of the rules one user matches, in config order (agrees with `evaluate`)."""
        return [name for name, rule in zip(self.names, self._scalar, strict=True) if rule(values)]


def _rows(data: _Columns, columns: _Columns) -> int:
    shapes = {array.shape for array in data.values()}
    if len(shapes) > 1 or any(len(shape) != 1 for shape in shapes):
        msg = f"feature columns must all have the same shape (n,), got {sorted(shapes)}"
        raise ValueError(msg)
    if shapes:
        return int(shapes.pop()[0])
    return len(next(iter(columns.values()), ()))


def _check_names(rules: Sequence[Rule]) -> None:
    seen: set[str] = set()
    for rule in rules:
        if not _NAME.fullmatch(rule.name):
            msg = f"rule {rule.name!r}: bad name (lowercase letters, digits, '_'; a letter first)"
            raise RuleError(msg)
        if rule.name in seen:
            msg = f"rule {rule.name!r}: duplicate name"
            raise RuleError(msg)
        seen.add(rule.name)


def _parse(rule: Rule) -> ast.expr:
    if not rule.expression.strip():
        msg = f"rule {rule.name!r}: empty expression"
        raise RuleError(msg)
    try:
        # Python only warns of some slips (`100and x`): here they are errors, not stderr noise.
        with warnings.catch_warnings():
            warnings.simplefilter("error", SyntaxWarning)
            return ast.parse(rule.expression.strip(), mode="eval").body
    except SyntaxWarning as exc:
        msg = f"rule {rule.name!r}: syntax error in {rule.expression!r}: {exc}"
        raise RuleError(msg) from None
    except SyntaxError as exc:
        msg = f"rule {rule.name!r}: syntax error in {rule.expression!r}: {exc.msg}"
        raise RuleError(msg) from None


# Closure types: a numeric or boolean node, over numpy columns or over one user's floats.
_VectorNumber = Callable[[_Columns], _Vector]
_VectorCondition = Callable[[_Columns], _Mask]
_ScalarNumber = Callable[[_Values], float]
_ScalarCondition = Callable[[_Values], bool]


class _Number(NamedTuple):
    vector: _VectorNumber
    scalar: _ScalarNumber


class _Condition(NamedTuple):
    vector: _VectorCondition
    scalar: _ScalarCondition


@dataclass(frozen=True)
class _Compiled:
    vector: _VectorCondition
    scalar: _ScalarCondition
    features: frozenset[str]
    context: frozenset[str]


class _Names(NamedTuple):
    """What a rule may name: numeric features, text values and sets of strings."""

    numbers: frozenset[str]
    text: frozenset[str]
    sets: frozenset[str]
    values: Mapping[str, frozenset[str]]  # every value some text and set names can take


def _vector_divide(left: _Vector, right: _Vector) -> _Vector:
    out = np.zeros(np.broadcast_shapes(left.shape, right.shape), dtype=np.float64)
    np.divide(left, right, out=out, where=right != 0)
    return out


def _scalar_divide(left: float, right: float) -> float:
    return left / right if right != 0 else 0.0


# Each operator as a pair: elementwise over columns, and over one user's floats.
_Arithmetic = tuple[Callable[[_Vector, _Vector], _Vector], Callable[[float, float], float]]
_Test = tuple[Callable[[_Vector, _Vector], _Mask], Callable[[float, float], bool]]

_ARITHMETIC: Final[dict[type[ast.operator], _Arithmetic]] = {
    ast.Add: (operator.add, operator.add),
    ast.Sub: (operator.sub, operator.sub),
    ast.Mult: (operator.mul, operator.mul),
    ast.Div: (_vector_divide, _scalar_divide),
}
_COMPARISONS: Final[dict[type[ast.cmpop], _Test]] = {
    ast.Lt: (operator.lt, operator.lt),
    ast.LtE: (operator.le, operator.le),
    ast.Gt: (operator.gt, operator.gt),
    ast.GtE: (operator.ge, operator.ge),
    ast.Eq: (operator.eq, operator.eq),
    ast.NotEq: (operator.ne, operator.ne),
}
_SYMBOLS: Final[dict[type[ast.AST], str]] = {
    ast.Pow: "**",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.MatMult: "@",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.Invert: "~",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
}
_CONSTRUCTS: Final[dict[type[ast.AST], str]] = {
    ast.Call: "function call",
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.IfExp: "conditional expression",
    ast.NamedExpr: "assignment expression",
    ast.JoinedStr: "f-string",
    ast.List: "list",
    ast.Tuple: "tuple",
    ast.Set: "set",
    ast.Dict: "dict",
}


class _Compiler:
    """Checks one rule's syntax tree and builds its closures, collecting the features it reads."""

    def __init__(self, rule: Rule, names: _Names) -> None:
        self._rule = rule
        self._names = names
        self._known = names.numbers
        self._features: set[str] = set()
        self._context: set[str] = set()

    def compile(self) -> _Compiled:
        condition = self._condition(_parse(self._rule))
        features, context = frozenset(self._features), frozenset(self._context)
        return _Compiled(condition.vector, condition.scalar, features, context)

    def _error(self, problem: str) -> RuleError:
        return RuleError(f"rule {self._rule.name!r}: {problem}")

    def _text(self, node: ast.AST) -> str:
        segment = ast.get_source_segment(self._rule.expression.strip(), node)
        return segment if segment is not None else ast.unparse(node)

    def _condition(self, node: ast.expr) -> _Condition:
        match node:
            case ast.BoolOp():
                return self._bool_op(node)
            case ast.UnaryOp(op=ast.Not()):
                return _negate(self._condition(node.operand))
            case ast.Compare():
                return self._compare(node)
        # A forbidden construct or unknown feature inside is the more useful error, so look first.
        self._number(node)
        msg = f"{self._text(node)!r} must be a condition (a comparison, or and/or/not of them)"
        raise self._error(msg)

    def _number(self, node: ast.expr) -> _Number:
        match node:
            case ast.BinOp():
                return self._arithmetic(node)
            case ast.UnaryOp(op=ast.USub() | ast.UAdd()):
                return _sign(self._number(node.operand), negative=isinstance(node.op, ast.USub))
            case ast.Name():
                return self._feature(node)
            case ast.Constant():
                return self._constant(node)
            case ast.BoolOp() | ast.Compare() | ast.UnaryOp(op=ast.Not()):
                msg = f"condition {self._text(node)!r} cannot be used as a number"
            case ast.UnaryOp():
                msg = f"operator {_SYMBOLS[type(node.op)]!r} is not allowed: {self._text(node)!r}"
            case _:
                construct = _CONSTRUCTS.get(type(node), type(node).__name__)
                msg = f"{construct} is not allowed: {self._text(node)!r}"
        raise self._error(msg)

    def _bool_op(self, node: ast.BoolOp) -> _Condition:
        parts = [self._condition(value) for value in node.values]
        if isinstance(node.op, ast.And):
            return _all_of(parts)
        return _any_of(parts)

    def _compare(self, node: ast.Compare) -> _Condition:
        special = self._text_test(node) or self._set_test(node)
        if special is not None:
            return special
        tests = []
        for op in node.ops:
            if type(op) not in _COMPARISONS:
                msg = f"operator {_SYMBOLS[type(op)]!r} is not allowed: {self._text(node)!r}"
                raise self._error(msg)
            tests.append(_COMPARISONS[type(op)])
        operands = [self._number(operand) for operand in [node.left, *node.comparators]]
        return _chain(tests, operands)

    def _text_test(self, node: ast.Compare) -> _Condition | None:
        """`segment == 'Champions'` (or the name on the right; `!=` too), else None."""
        if len(node.ops) != 1 or not isinstance(node.ops[0], ast.Eq | ast.NotEq):
            return None
        pair = [node.left, node.comparators[0]]
        names = [n.id for n in pair if isinstance(n, ast.Name) and n.id in self._names.text]
        if not names:
            return None
        wanted = self._quoted([n for n in pair if not isinstance(n, ast.Name)], node, names[0])
        name = names[0]
        self._context.add(name)
        test = _Condition(
            lambda columns: np.asarray(columns[name] == wanted, dtype=np.bool_),
            lambda values: values[name] == wanted,  # type: ignore[comparison-overlap]
        )
        return _negate(test) if isinstance(node.ops[0], ast.NotEq) else test

    def _set_test(self, node: ast.Compare) -> _Condition | None:
        """`'books' in top_categories` (`not in` too), else None."""
        in_test = len(node.ops) == 1 and isinstance(node.ops[0], ast.In | ast.NotIn)
        if not in_test or not self._names.sets:
            return None
        right = node.comparators[0]
        if not isinstance(right, ast.Name) or right.id not in self._names.sets:
            sets = ", ".join(sorted(self._names.sets))
            msg = f"'in' needs a set on its right ({sets}): {self._text(node)!r}"
            raise self._error(msg)
        name = right.id
        wanted = self._quoted([node.left], node, name)
        self._context.add(name)

        def vector(columns: _Columns) -> _Mask:
            return np.fromiter((wanted in s for s in columns[name]), np.bool_, len(columns[name]))

        test = _Condition(vector, lambda values: wanted in values[name])  # type: ignore[operator]
        return _negate(test) if isinstance(node.ops[0], ast.NotIn) else test

    def _quoted(self, nodes: Sequence[ast.expr], node: ast.Compare, name: str) -> str:
        match nodes:
            case [ast.Constant(value=str() as value)]:
                return self._known_value(name, value)
        how = f"{name} == 'x'" if name in self._names.text else f"'x' in {name}"
        msg = f"{name!r} is compared with a quoted name only, as in {how}: "
        raise self._error(msg + repr(self._text(node)))

    def _known_value(self, name: str, value: str) -> str:
        allowed = self._names.values.get(name)
        if allowed is None or value in allowed:
            return value
        close = difflib.get_close_matches(value, sorted(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(repr(v) for v in sorted(allowed)) or "none"
        msg = f"{name} is never {value!r}{hint}; it is one of: {known}"
        raise self._error(msg)

    def _arithmetic(self, node: ast.BinOp) -> _Number:
        if type(node.op) not in _ARITHMETIC:
            msg = f"operator {_SYMBOLS[type(node.op)]!r} is not allowed: {self._text(node)!r}"
            raise self._error(msg)
        vector_op, scalar_op = _ARITHMETIC[type(node.op)]
        left, right = self._number(node.left), self._number(node.right)
        return _Number(
            lambda columns: vector_op(left.vector(columns), right.vector(columns)),
            lambda values: scalar_op(left.scalar(values), right.scalar(values)),
        )

    def _feature(self, node: ast.Name) -> _Number:
        name = node.id
        if name in self._names.text or name in self._names.sets:
            how = f"{name} == 'x'" if name in self._names.text else f"'x' in {name}"
            msg = f"{name!r} is not a number: use it as {how}"
            raise self._error(msg)
        if name not in self._known:
            close = difflib.get_close_matches(name, sorted(self._known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msg = f"unknown feature {name!r}{hint}"
            raise self._error(msg)
        self._features.add(name)
        # float() so an int passed for one user computes exactly as the float64 column does.
        return _Number(lambda columns: columns[name], lambda values: float(values[name]))

    def _constant(self, node: ast.Constant) -> _Number:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            msg = f"constant {self._text(node)!r} is not allowed: only int and float numbers are"
            raise self._error(msg)
        try:
            number = float(value)
        except OverflowError:
            msg = f"number {self._text(node)!r} is too large"
            raise self._error(msg) from None
        # A 0-d array broadcasts against the columns like a scalar while keeping array typing.
        array = np.asarray(number, dtype=np.float64)
        return _Number(lambda columns: array, lambda values: number)


def _sign(operand: _Number, *, negative: bool) -> _Number:
    if not negative:
        return operand
    return _Number(lambda columns: -operand.vector(columns), lambda values: -operand.scalar(values))


def _negate(operand: _Condition) -> _Condition:
    return _Condition(
        lambda columns: ~operand.vector(columns), lambda values: not operand.scalar(values)
    )


def _all_of(parts: Sequence[_Condition]) -> _Condition:
    def vector(columns: _Columns) -> _Mask:
        result = parts[0].vector(columns)
        for part in parts[1:]:
            result = result & part.vector(columns)
        return result

    return _Condition(vector, lambda values: all(part.scalar(values) for part in parts))


def _any_of(parts: Sequence[_Condition]) -> _Condition:
    def vector(columns: _Columns) -> _Mask:
        result = parts[0].vector(columns)
        for part in parts[1:]:
            result = result | part.vector(columns)
        return result

    return _Condition(vector, lambda values: any(part.scalar(values) for part in parts))


def _chain(tests: Sequence[_Test], operands: Sequence[_Number]) -> _Condition:
    """`a < b <= c` as `a < b and b <= c`, each operand computed once, as Python does."""

    def vector(columns: _Columns) -> _Mask:
        values = [operand.vector(columns) for operand in operands]
        result = tests[0][0](values[0], values[1])
        for index in range(1, len(tests)):
            result = result & tests[index][0](values[index], values[index + 1])
        return result

    def scalar(values: _Values) -> bool:
        left = operands[0].scalar(values)
        for (_, test), operand in zip(tests, operands[1:], strict=True):
            right = operand.scalar(values)
            if not test(left, right):
                return False
            left = right
        return True

    return _Condition(vector, scalar)
