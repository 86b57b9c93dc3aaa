"""Safe arithmetic on a text expression: numbers, ``+ - * / ** %`` and parentheses.

The expression comes from an LLM, hence from whoever talks to it: it is parsed with
``ast`` and walked node by node, never given to ``eval``, and every intermediate result
is bounded so that ``9**9**9`` is refused instead of freezing the worker's event loop.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable

Number = int | float

MAX_LENGTH = 500  # characters of an expression
MAX_INT_BITS = 4096  # about 1,200 digits: far beyond any sensible answer, cheap to compute
ALLOWED = "numbers, + - * / ** % and parentheses"


class NotArithmetic(ValueError):
    """The expression is not plain arithmetic, or its result would be too large."""


def _power(base: Number, exponent: Number) -> Number:
    # An int power is exact and grows without bound: refuse it before computing when
    # even its smallest possible size is too large (the result is then checked exactly).
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and (base.bit_length() - 1) * exponent > MAX_INT_BITS
    ):
        raise NotArithmetic("the result is too large")
    result: Number | complex = base**exponent
    if isinstance(result, complex):  # (-8) ** 0.5
        raise NotArithmetic("the result is not a real number")
    return result


_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


def evaluate(expression: str) -> Number:
    """The value of ``expression``; ``NotArithmetic`` if it is anything but arithmetic
    (``ZeroDivisionError`` and ``OverflowError`` pass through)."""
    if len(expression) > MAX_LENGTH:
        raise NotArithmetic(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise NotArithmetic(f"not an arithmetic expression ({exc.msg}); use {ALLOWED}") from None
    return _value(tree.body)


def _value(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):  # an int to Python, not a number to a reader
            raise NotArithmetic(f"only {ALLOWED} are allowed (found {node.value})")
        return _bounded(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        return _bounded(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    raise NotArithmetic(f"only {ALLOWED} are allowed (found {_describe(node)})")


def _bounded(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise NotArithmetic("the result is too large")
    return value


def _describe(node: ast.expr) -> str:
    if isinstance(node, ast.Constant):
        return f"the {type(node.value).__name__} {node.value!r}"
    if isinstance(node, ast.BinOp | ast.UnaryOp | ast.BoolOp):
        return f"the operator {type(node.op).__name__}"
    return type(node).__name__  # Call, Name, Attribute, Compare, ...
