"""Which allowed functions and operators can raise an error on data-dependent values.

Why: a function that fails on some argument values turns a query into a yes/no oracle
(issue class 5, "error oracles"). ``lpad(carrier, CASE WHEN <one person's row> THEN 99
ELSE 2 END, '')`` fails exactly when that row exists; so does ``ln(0)``, ``chr(-1)``,
``date_trunc(<computed unit>, ts)``, an integer overflow, a cast, and far more than a
hand list ever held. Even a constant such as ``ln(0)`` is evaluated (and fails) only on
the rows that reach it, so constants are no exception. Since the SQL rewrite cannot
know the values, every function and operator the allow-lists admit is classified:

- ``TOTAL``: it raises for no argument values of the types it accepts (failing to
  *bind* is fine: that happens before any row is read, whatever the data);
- ``PARTIAL``: some values make it raise. ``guard_isolation.make_non_failing`` wraps
  each partial call or operator (the outermost one, with no aggregate, window or
  subquery inside: DuckDB refuses those in ``try()``) in DuckDB's ``try()``, which
  gives NULL instead of an error. It does so in every mode: in records and sandbox
  mode a WHERE condition can be evaluated on rows the scenario's row filter excludes
  (DuckDB pushes it into the source view and may reorder the conjunction);
- operators that *unify types* (comparisons, IN, BETWEEN, NULLIF, COALESCE,
  GREATEST/LEAST, CASE/IF results, lists) are total when DuckDB needs no cast that can
  fail between their operands' types (``COMPARABLE``, ``comparable``), and partial
  otherwise: ``varchar_column = 5`` casts every string to an integer and fails on
  ``'UA'``. The rewriter knows the types of dataset columns, literals and casts
  (``ColumnTypes``, ``type_of``); an operand of unknown type makes the operator partial.
  An operand used as a condition (WHERE, AND, CASE WHEN, ...) that is not known to be
  a BOOLEAN gets an explicit ``CAST(... AS BOOLEAN)``, which is partial and wrapped;
- aggregates cannot be wrapped (``try(sum(x))`` is refused by DuckDB). Statistical
  aggregates raise "out of range" on huge or non-finite inputs: their arguments are
  clamped to ``±AGGREGATE_BOUND`` (``CLAMPED_AGGREGATES``); ``sum``/``avg`` overflow only
  on 128-bit integers or intervals, so their argument is computed in DOUBLE unless its
  type is known to be narrow (``WIDE_SUMS``). The other partial aggregates raise only on
  extra arguments that must then be non-NULL constants, or only in records mode (where
  an aggregate sees only rows the user may see anyway).

``lpad``/``rpad`` also allocate what they are asked for: a length above ``PAD_LIMIT``
gives NULL (``cap_pad_lengths``), so a huge pad cannot turn into a memory or timing
oracle. ``repeat`` is not allow-listed at all.

How the classification is proven: ``tests/rewrite/test_function_safety.py`` enumerates
DuckDB's catalogue (``duckdb_functions()``), keeps every spelling that sqlglot parses
to an allow-listed node, adds the operators and casts of ``allowlists.SYNTAX``, and
calls each with arguments drawn from tables of data-dependent values (zero, -1, the
extremes of every integer type, NaN, infinities, empty, long and unicode strings,
date-like and format-like strings, extreme and infinite dates, NULLs...) of every type
its overloads accept, in every position, as table columns (never constants). A TOTAL
entry must never raise there; a PARTIAL one, after ``make_non_failing``, must not either;
every pair in ``COMPARABLE`` must compare, unify and CASE without raising. An entry
is TOTAL only because that test shows it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlglot import exp

from gateway.rewrite.allowlists import is_aggregate_call

if TYPE_CHECKING:
    from gateway.rewrite.context import State

# -- classification ------------------------------------------------------------------

# Functions and operators that raise for no argument values (see the module docstring).
TOTAL: frozenset[type[exp.Expr]] = frozenset({
    # scalars
    exp.Ascii, exp.Atan2, exp.Cbrt, exp.Ceil, exp.Concat, exp.ConcatWs, exp.CurrentDate,
    exp.Day, exp.Dayname, exp.Degrees, exp.EndsWith, exp.Exp, exp.Floor, exp.Hour,
    exp.IsInf, exp.IsNan, exp.Length, exp.Lower, exp.MD5, exp.Minute, exp.Month,
    exp.Monthname, exp.Pi, exp.Pow, exp.Quarter, exp.Radians, exp.RegexpExtract,
    exp.Replace, exp.Reverse, exp.Right, exp.Round, exp.SHA2, exp.Second, exp.Sign,
    exp.StartsWith, exp.StrPosition, exp.TimeToUnix, exp.Translate, exp.Trim, exp.Trunc,
    exp.Typeof, exp.Upper, exp.Year,
    # operators (AND/OR/NOT get BOOLEAN operands: see condition_operands)
    exp.DPipe, exp.Like, exp.ILike, exp.Collate, exp.Exists, exp.And, exp.Or,
    exp.Columns, exp.Struct, exp.SplitPart,
    # aggregates
    exp.Count, exp.CountIf, exp.LogicalAnd, exp.LogicalOr, exp.ApproxDistinct,
    exp.CovarPop, exp.CovarSamp, exp.RegrCount, exp.AnyValue, exp.First, exp.Last,
    exp.Mode, exp.ArrayAgg, exp.GroupConcat,
    # window functions
    exp.RowNumber, exp.Rank, exp.DenseRank, exp.PercentRank, exp.CumeDist, exp.FirstValue,
    exp.LastValue,
})
PARTIAL: frozenset[type[exp.Expr]] = frozenset({
    # scalars
    exp.Abs, exp.Chr, exp.Contains, exp.Cos, exp.Sin, exp.Tan, exp.DateAdd, exp.DateBin,
    exp.DateDiff, exp.DateFromParts, exp.DateTrunc, exp.TimestampTrunc, exp.DayOfWeek,
    exp.DayOfWeekIso, exp.DayOfYear, exp.LastDay, exp.Left, exp.Ln, exp.Log, exp.Pad,
    exp.RegexpLike, exp.RegexpReplace, exp.Sqrt, exp.StrToTime, exp.Substring,
    exp.TimeToStr, exp.UnixToTime, exp.Week, exp.WeekOfYear, exp.Initcap,
    # operators and casts
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.Neg, exp.Cast,
    exp.TryCast, exp.Extract, exp.Interval, exp.Bracket, exp.SimilarTo,
    # aggregates (never wrapped: see CLAMPED_AGGREGATES, WIDE_SUMS)
    exp.Sum, exp.Avg, exp.Median, exp.Quantile, exp.PercentileCont, exp.PercentileDisc,
    exp.ApproxQuantile, exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance,
    exp.VariancePop, exp.Corr, exp.RegrSlope, exp.RegrIntercept, exp.RegrR2,
    exp.Skewness, exp.Kurtosis, exp.Min, exp.Max, exp.ArgMin, exp.ArgMax, exp.ApproxTopK,
    exp.BitwiseAndAgg, exp.BitwiseOrAgg, exp.BitwiseXorAgg,
    # window functions (never wrapped)
    exp.Lag, exp.Lead, exp.NthValue, exp.Ntile,
})
TOTAL_ANONYMOUS: frozenset[str] = frozenset({
    "strlen", "prefix", "suffix", "isfinite", "even", "millisecond", "age",
    "try_strptime", "favg", "fsum", "sumkahan", "entropy", "arbitrary", "product",
    "list", "array_agg", "string_agg", "geomean", "try",
})
PARTIAL_ANONYMOUS: frozenset[str] = frozenset({
    "date_part", "datepart", "date_sub", "gcd", "lcm", "isoyear", "yearweek", "mean",
    "histogram", "bitstring_agg", "reservoir_quantile",
})
# Nodes that compare or unify their operands' types (total when ``comparable``).
UNIFYING: frozenset[type[exp.Expr]] = frozenset({
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ,
    exp.In, exp.Between, exp.Nullif, exp.Coalesce, exp.Greatest, exp.Least, exp.Case,
    exp.If, exp.Array,
})
# Nodes whose operands DuckDB casts to BOOLEAN (a string that is not 'true' fails).
BOOLEAN_OPERANDS: frozenset[type[exp.Expr]] = frozenset({
    exp.And, exp.Or, exp.Not, exp.Is, exp.Case, exp.If, exp.Where, exp.Having, exp.Qualify,
    exp.Join,
})

# Statistical aggregates raise "out of range" when their result is not finite: their
# arguments are clamped to +-AGGREGATE_BOUND, where no n < 10^100 rows can overflow a
# fourth power sum (kurtosis). Values beyond it (and NaN, infinities) count as the bound.
AGGREGATE_BOUND = 1e50
CLAMPED_AGGREGATES: frozenset[type[exp.Expr]] = frozenset({
    exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance, exp.VariancePop, exp.Corr,
    exp.RegrSlope, exp.RegrIntercept, exp.RegrR2, exp.Skewness, exp.Kurtosis,
})
# sum/avg overflow on HUGEINT/UHUGEINT (and avg on INTERVAL) inputs only: computed in
# DOUBLE unless the argument's type is known to be one of NARROW_TYPES.
WIDE_SUMS: frozenset[type[exp.Expr]] = frozenset({exp.Sum, exp.Avg})
WIDE_SUMS_ANONYMOUS: frozenset[str] = frozenset({"mean"})
# lpad/rpad build a string as long as asked: above this length the result is NULL.
PAD_LIMIT = 10_000

# -- types ---------------------------------------------------------------------------

# Pseudo-types of literals: DuckDB gives them the type that fits the other operand.
INTEGER_LITERAL = "INTEGER_LITERAL"
DECIMAL_LITERAL = "DECIMAL_LITERAL"
DOUBLE_LITERAL = "DOUBLE_LITERAL"
STRING_LITERAL = "STRING_LITERAL"
BOOLEAN_LITERAL = "BOOLEAN_LITERAL"
NULL = "NULL"
BOOLEAN = "BOOLEAN"
VARCHAR = "VARCHAR"
BIGINT = "BIGINT"

_NUMBERS = frozenset({
    "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", INTEGER_LITERAL, DECIMAL_LITERAL,
    DOUBLE_LITERAL, BOOLEAN_LITERAL,
})
# Groups of types any two of which DuckDB compares and unifies without a failing cast
# (proven pairwise by the test). NULL goes with every type, and a type with itself;
# DECIMAL(p,s) with a number when the common decimal type fits 38 digits (``comparable``).
COMPARABLE: tuple[frozenset[str], ...] = (
    _NUMBERS,
    frozenset({VARCHAR, STRING_LITERAL}),
    frozenset({"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS"}),
    frozenset({"TIME", "TIMETZ"}),
)
# Digits of the integer types, for the decimal rule.
_DIGITS: dict[str, int] = {
    "BOOLEAN": 1, BOOLEAN_LITERAL: 1, "TINYINT": 3, "UTINYINT": 3, "SMALLINT": 5,
    "USMALLINT": 5, "INTEGER": 10, "UINTEGER": 10, "BIGINT": 19, "UBIGINT": 20,
}
_FLOATS = frozenset({"FLOAT", "DOUBLE", DOUBLE_LITERAL})
# Argument types for which sum/avg cannot overflow (see WIDE_SUMS).
NARROW_TYPES = frozenset({*_NUMBERS, NULL})
_DECIMAL = re.compile(r"^DECIMAL\((\d+),(\d+)\)$")

# sqlglot type -> DuckDB type name, for the types the rewriter reasons about.
_TYPE_NAMES: dict[exp.DataType.Type, str] = {
    exp.DataType.Type.BOOLEAN: "BOOLEAN", exp.DataType.Type.TINYINT: "TINYINT",
    exp.DataType.Type.SMALLINT: "SMALLINT", exp.DataType.Type.INT: "INTEGER",
    exp.DataType.Type.BIGINT: "BIGINT", exp.DataType.Type.INT128: "HUGEINT",
    exp.DataType.Type.UTINYINT: "UTINYINT", exp.DataType.Type.USMALLINT: "USMALLINT",
    exp.DataType.Type.UINT: "UINTEGER", exp.DataType.Type.UBIGINT: "UBIGINT",
    exp.DataType.Type.UINT128: "UHUGEINT", exp.DataType.Type.FLOAT: "FLOAT",
    exp.DataType.Type.DOUBLE: "DOUBLE", exp.DataType.Type.TEXT: VARCHAR,
    exp.DataType.Type.VARCHAR: VARCHAR, exp.DataType.Type.DATE: "DATE",
    exp.DataType.Type.TIMESTAMP: "TIMESTAMP", exp.DataType.Type.TIMESTAMPNTZ: "TIMESTAMP",
    exp.DataType.Type.TIMESTAMPTZ: "TIMESTAMPTZ", exp.DataType.Type.TIMESTAMP_S: "TIMESTAMP_S",
    exp.DataType.Type.TIMESTAMP_MS: "TIMESTAMP_MS",
    exp.DataType.Type.TIMESTAMP_NS: "TIMESTAMP_NS", exp.DataType.Type.TIME: "TIME",
    exp.DataType.Type.TIMETZ: "TIMETZ", exp.DataType.Type.INTERVAL: "INTERVAL",
    exp.DataType.Type.VARBINARY: "BLOB", exp.DataType.Type.UUID: "UUID",
}
# Declared dataset column types (gateway.policy.models.COLUMN_TYPES) -> DuckDB names.
_DECLARED = {"REAL": "FLOAT", "FLOAT4": "FLOAT", "INT": "INTEGER", "INT4": "INTEGER",
             "INT8": BIGINT, "TEXT": VARCHAR, "STRING": VARCHAR,
             "TIMESTAMPWITHTIMEZONE": "TIMESTAMPTZ"}

# Nodes whose result type is always the same (proven by the test with typeof()).
RESULT_TYPES: dict[type[exp.Expr], str] = {
    exp.Lower: VARCHAR, exp.Upper: VARCHAR, exp.Trim: VARCHAR, exp.ConcatWs: VARCHAR,
    exp.Replace: VARCHAR, exp.Reverse: VARCHAR,
    exp.Translate: VARCHAR, exp.Pad: VARCHAR, exp.Left: VARCHAR, exp.Right: VARCHAR,
    exp.Substring: VARCHAR, exp.Dayname: VARCHAR, exp.Monthname: VARCHAR, exp.MD5: VARCHAR,
    exp.SHA2: VARCHAR, exp.Typeof: VARCHAR, exp.TimeToStr: VARCHAR,
    exp.Length: BIGINT, exp.StrPosition: BIGINT, exp.Year: BIGINT, exp.Month: BIGINT,
    exp.Day: BIGINT, exp.Hour: BIGINT, exp.Minute: BIGINT, exp.Quarter: BIGINT,
    exp.Count: BIGINT, exp.CountIf: BIGINT,
}
_BOOLEAN_RESULTS: tuple[type[exp.Expr], ...] = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ,
    exp.In, exp.Between, exp.Like, exp.ILike, exp.SimilarTo, exp.Is, exp.Not, exp.And,
    exp.Or, exp.Exists, exp.StartsWith, exp.EndsWith, exp.RegexpLike, exp.IsNan,
    exp.IsInf, exp.LogicalAnd, exp.LogicalOr,
)
_BOOLEAN_ANONYMOUS = frozenset({"isfinite", "prefix", "suffix"})


@dataclass(frozen=True)
class ColumnTypes:
    """What the rewriter knows of a statement's columns.

    ``types``: column name (lower case) -> DuckDB type, only for names that denote a
    dataset column of that one type wherever they occur in the statement (no alias,
    derived column, set operation or mask gives the name another type).
    ``relations``: names (lower case) a column may be qualified with (tables, views,
    subqueries, CTEs); ``s.a`` with any other ``s`` is a struct field, of unknown type.
    """

    types: Mapping[str, str] = field(default_factory=dict)
    relations: frozenset[str] = frozenset()


NO_TYPES = ColumnTypes()


def declared_type(text: str) -> str:
    """A dataset column's declared type as the DuckDB name ``type_of`` uses."""
    name = text.upper().replace(" ", "")
    return _DECLARED.get(name, name)


def datatype_name(node: exp.DataType) -> str | None:
    """DuckDB's name of a sqlglot type (``DECIMAL(p,s)`` with its parameters)."""
    if node.this == exp.DataType.Type.DECIMAL:
        params = [p.name for p in node.expressions]
        precision, scale = (params + ["18", "3"][len(params):])[:2]
        return f"DECIMAL({precision},{scale})"
    return _TYPE_NAMES.get(node.this)


def _literal_type(node: exp.Literal) -> str | None:
    if node.is_string:
        return STRING_LITERAL
    text = node.name
    if re.fullmatch(r"\d+", text):
        return INTEGER_LITERAL if int(text) <= 2**63 - 1 else None
    if re.fullmatch(r"\d*\.\d+|\d+\.\d*", text):
        return DECIMAL_LITERAL if len(text) <= 19 else None
    if re.fullmatch(r"(\d+\.?\d*|\.\d+)[eE][-+]?\d+", text):
        return DOUBLE_LITERAL
    return None


def _is_try(node: exp.Expr) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.lower() == "try"


def type_of(node: exp.Expr, columns: ColumnTypes = NO_TYPES) -> str | None:
    """The DuckDB type of ``node`` when the rewriter can tell it, else None."""
    while isinstance(node, exp.Paren) or (_is_try(node) and len(node.expressions) == 1):
        node = node.this if isinstance(node, exp.Paren) else node.expressions[0]
    if isinstance(node, exp.Null):
        return NULL
    if isinstance(node, exp.Boolean):
        return BOOLEAN_LITERAL
    if isinstance(node, exp.Literal):
        return _literal_type(node)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) \
            and not node.this.is_string:
        return _literal_type(node.this)
    if isinstance(node, (exp.Cast, exp.TryCast)) and isinstance(node.to, exp.DataType):
        return datatype_name(node.to)
    if isinstance(node, _BOOLEAN_RESULTS):
        return BOOLEAN
    if isinstance(node, exp.Anonymous):
        return BOOLEAN if node.name.lower() in _BOOLEAN_ANONYMOUS else None
    if isinstance(node, exp.Column):
        if not isinstance(node.this, exp.Identifier) or node.args.get("db") \
                or node.args.get("catalog"):
            return None
        if node.table and node.table.lower() not in columns.relations:
            return None  # a struct field, not a table's column
        return columns.types.get(node.name.lower())
    if isinstance(node, (exp.Any, exp.All)):
        node = node.this
    if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Select) \
            and len(node.this.expressions) == 1:
        return type_of(node.this.expressions[0].unalias(), columns)
    return RESULT_TYPES.get(type(node))


def _decimal(kind: str) -> tuple[int, int] | None:
    match = _DECIMAL.match(kind)
    return (int(match.group(1)), int(match.group(2))) if match else None


def comparable(a: str | None, b: str | None) -> bool:
    """True if DuckDB compares/unifies values of types ``a`` and ``b`` without a cast
    that can fail (None: unknown type, never comparable)."""
    if a is None or b is None:
        return False
    if a == b or NULL in (a, b):
        return True
    if any(a in group and b in group for group in COMPARABLE):
        return True
    da, db = _decimal(a), _decimal(b)
    if da is None and db is None:
        return False
    if da is None:
        a, b, da, db = b, a, db, da
    assert da is not None
    precision, scale = da
    if b in _FLOATS:
        return True
    if db is not None:
        return max(precision - scale, db[0] - db[1]) + max(scale, db[1]) <= 38
    digits = _DIGITS.get(b)
    return digits is not None and max(precision - scale, digits) + scale <= 38


def _unified(node: exp.Expr) -> list[list[exp.Expr]]:
    """Operand groups ``node`` compares or unifies (each group must be comparable)."""
    if isinstance(node, exp.In):
        query = node.args.get("query")
        return [[node.this, *node.expressions, *([query] if query is not None else [])]]
    if isinstance(node, exp.Between):
        return [[node.this, node.args.get("low"), node.args.get("high")]]
    if isinstance(node, exp.Case):
        ifs = node.args.get("ifs") or []
        results = [i.args.get("true") for i in ifs] + [node.args.get("default")]
        groups = [[r for r in results if r is not None]]
        if node.this is not None:
            groups.append([node.this, *(i.this for i in ifs)])
        return groups
    if isinstance(node, exp.If):
        if isinstance(node.parent, exp.Case):
            return []  # a branch: its CASE unifies it
        return [[v for v in (node.args.get("true"), node.args.get("false")) if v is not None]]
    if isinstance(node, (exp.Coalesce, exp.Greatest, exp.Least, exp.Array)):
        return [[node.this, *node.expressions] if node.this is not None else node.expressions]
    return [[node.this, node.expression]]


def _all_comparable(operands: Iterable[exp.Expr | None], columns: ColumnTypes) -> bool:
    kinds = [type_of(o, columns) for o in operands if o is not None]
    return all(comparable(a, b) for i, a in enumerate(kinds) for b in kinds[i + 1:])


def is_partial(node: exp.Expr, columns: ColumnTypes = NO_TYPES) -> bool:
    """True if ``node`` itself (not counting its operands) can raise on some data.

        >>> from sqlglot import parse_one
        >>> is_partial(parse_one("ln(x)")), is_partial(parse_one("upper(x)"))
        (True, False)
        >>> is_partial(parse_one("x = 5")), is_partial(parse_one("x = 5"),
        ...                                            ColumnTypes({"x": "INTEGER"}))
        (True, False)
    """
    kind = type(node)
    if isinstance(node, exp.Anonymous):
        name = node.name.lower()
        return name not in TOTAL_ANONYMOUS or name in PARTIAL_ANONYMOUS
    if kind in PARTIAL:
        return True
    if kind in UNIFYING:
        return not all(_all_comparable(group, columns) for group in _unified(node))
    if kind in TOTAL or not isinstance(node, exp.Func):
        return False
    return True  # a function nobody classified: assume the worst


def condition_operands(node: exp.Expr) -> list[exp.Expr]:
    """Operands of ``node`` that DuckDB uses (and so casts) as BOOLEAN."""
    if isinstance(node, (exp.And, exp.Or)):
        return [node.this, node.expression]
    if isinstance(node, exp.Not):
        return [node.this]
    if isinstance(node, exp.Is):
        return [node.this] if isinstance(node.expression, exp.Boolean) else []
    if isinstance(node, exp.Case):
        return [] if node.this is not None else [i.this for i in node.args.get("ifs") or []]
    if isinstance(node, exp.If):
        return [] if isinstance(node.parent, exp.Case) else [node.this]
    if isinstance(node, (exp.Where, exp.Having, exp.Qualify)):
        return [node.this]
    if isinstance(node, exp.Join):
        on = node.args.get("on")
        return [on] if on is not None else []
    return []


def is_boolean(node: exp.Expr, columns: ColumnTypes = NO_TYPES) -> bool:
    return type_of(node, columns) in (BOOLEAN, BOOLEAN_LITERAL, NULL)


# -- what can be wrapped -------------------------------------------------------------

def has_unwrappable(node: exp.Expr) -> bool:
    """An aggregate, window or subquery in ``node``: DuckDB refuses it inside try()."""
    for n in node.walk():
        if isinstance(n, (exp.Window, exp.Query, exp.Subquery, exp.AggFunc)):
            return True
        if isinstance(n, exp.Func) and is_aggregate_call(n):
            return True
    return False


def narrow(node: exp.Expr, columns: ColumnTypes = NO_TYPES) -> bool:
    """True if ``node``'s type is known to be one sum/avg cannot overflow on."""
    while isinstance(node, exp.Paren) or (_is_try(node) and len(node.expressions) == 1):
        node = node.this if isinstance(node, exp.Paren) else node.expressions[0]
    kind = type_of(node, columns)
    if kind is not None:
        return kind in NARROW_TYPES or _decimal(kind) is not None
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod)):
        return narrow(node.this, columns) and narrow(node.expression, columns)
    if isinstance(node, exp.Neg):
        return narrow(node.this, columns)
    if isinstance(node, exp.Nullif):
        return narrow(node.this, columns)
    if isinstance(node, exp.Case):
        results = [i.args.get("true") for i in node.args.get("ifs") or []]
        results.append(node.args.get("default"))
        return all(narrow(r, columns) for r in results if r is not None)
    if isinstance(node, exp.If):
        return all(narrow(r, columns) for r in (node.args.get("true"), node.args.get("false"))
                   if r is not None)
    return False


def _clamp(value: exp.Expr) -> exp.Expr:
    bound = exp.Literal.number(f"{AGGREGATE_BOUND:.0e}".replace("+", ""))
    neg = exp.Neg(this=bound.copy())
    return exp.Greatest(this=exp.Least(this=value, expressions=[bound]), expressions=[neg])


def guard_aggregate(call: exp.Expr, columns: ColumnTypes = NO_TYPES) -> bool:
    """Make a partial aggregate's arguments such that it cannot raise (in place).

        >>> from sqlglot import parse_one
        >>> call = parse_one("stddev(x)"); _ = guard_aggregate(call); call.sql()
        'STDDEV(GREATEST(LEAST(x, 1e50), -1e50))'
        >>> call = parse_one("sum(x)"); _ = guard_aggregate(call); call.sql()
        'SUM(CAST(x AS DOUBLE))'
        >>> call = parse_one("sum(x)"); guard_aggregate(call, ColumnTypes({"x": "INTEGER"}))
        False
    """
    if call.meta.get("dsb_guarded"):
        return False
    name = call.name.lower() if isinstance(call, exp.Anonymous) else ""
    changed = False
    if type(call) in CLAMPED_AGGREGATES:
        for key in ("this", "expression"):
            value = call.args.get(key)
            if isinstance(value, exp.Expr) and not isinstance(value, exp.Star):
                call.set(key, _clamp(value))
                changed = True
    elif type(call) in WIDE_SUMS or name in WIDE_SUMS_ANONYMOUS:
        key, value = ("this", call.this) if not isinstance(call, exp.Anonymous) else \
            ("expressions", call.expressions[0] if call.expressions else None)
        if isinstance(value, exp.Distinct) and len(value.expressions) == 1:
            holder, value = value, value.expressions[0]
        else:
            holder = None
        if isinstance(value, exp.Expr) and not narrow(value, columns):
            double = exp.Cast(this=value.copy(), to=exp.DataType.build("DOUBLE"))
            if holder is not None:
                holder.set("expressions", [double])
            elif key == "expressions":
                call.set("expressions", [double, *call.expressions[1:]])
            else:
                call.set("this", double)
            changed = True
    call.meta["dsb_guarded"] = True
    return changed


def cap_pad_lengths(tree: exp.Expr) -> bool:
    """``lpad(s, n, p)`` -> ``lpad(s, CASE WHEN n > PAD_LIMIT THEN NULL ELSE n END, p)``.

        >>> from sqlglot import parse_one
        >>> t = parse_one("lpad(s, n, 'x')"); _ = cap_pad_lengths(t); t.sql()
        "LPAD(s, CASE WHEN n > 10000 THEN NULL ELSE n END, 'x')"
    """
    changed = False
    for pad in list(tree.find_all(exp.Pad)):
        length = pad.expression
        if length is None or pad.meta.get("dsb_capped"):
            continue
        if isinstance(length, exp.Literal) and not length.is_string \
                and length.name.isdigit() and int(length.name) <= PAD_LIMIT:
            continue
        limit = exp.Literal.number(PAD_LIMIT)
        capped = exp.Case(ifs=[exp.If(this=exp.GT(this=length.copy(), expression=limit),
                                      true=exp.Null())], default=length.copy())
        pad.set("expression", capped)
        pad.meta["dsb_capped"] = True
        changed = True
    return changed


# -- the columns a statement can vouch for -------------------------------------------

def column_types(tree: exp.Expr, columns: Iterable[tuple[str, str]],
                 hidden: Iterable[str] = ()) -> ColumnTypes:
    """``ColumnTypes`` of a statement over dataset columns ``(name, declared type)``.

    A name is typed only if every dataset column of that name has the same type, no
    mask (``hidden``) changes it, and the statement defines no other column of that name
    (an alias, a derived table's or CTE's column list, a branch of an inner set
    operation). ``relations`` are the statement's table, subquery and CTE names.
    """
    types: dict[str, str | None] = {}
    for name, declared in columns:
        kind = declared_type(declared)
        key = name.lower()
        types[key] = kind if types.get(key, kind) == kind else None
    for name in hidden:
        types[name.lower()] = None
    relations: set[str] = set()
    aliases: list[exp.Alias] = []
    opaque = False  # syntax that names columns by other columns' names, whatever the type
    for node in tree.walk():
        if isinstance(node, (exp.Columns, exp.Dot, exp.PositionalColumn)) or (
                isinstance(node, exp.Star) and any(node.args.get(k) for k in
                                                   ("replace", "rename", "except"))):
            opaque = True
        elif isinstance(node, exp.Alias):
            aliases.append(node)
        elif isinstance(node, exp.TableAlias):
            relations.add(node.name.lower())
            for column in node.columns:
                types[column.name.lower()] = None
        elif isinstance(node, exp.Table):
            relations.add(node.name.lower())
            relations.add(node.alias_or_name.lower())
        elif isinstance(node, exp.SetOperation) and node is not tree:
            for select in node.find_all(exp.Select):
                for projection in select.expressions:
                    types[projection.alias_or_name.lower()] = None
    changed = True
    while changed:  # an alias keeps a name typed only if it gives it the same type
        changed = False
        known = ColumnTypes({n: k for n, k in types.items() if k is not None},
                            frozenset(relations))
        for alias in aliases:
            name = alias.alias.lower()
            if types.get(name) is not None and type_of(alias.this, known) != types[name]:
                types[name] = None
                changed = True
    for node in tree.find_all(exp.Column):
        if node.table and node.table.lower() not in relations:
            opaque = True  # a struct field, named like a column
    if opaque:
        return ColumnTypes({}, frozenset(relations))
    known = {name: kind for name, kind in types.items() if kind is not None}
    return ColumnTypes(known, frozenset(relations))


def statement_column_types(state: State) -> ColumnTypes:
    """``column_types`` of the statement in ``state`` over its datasets' columns."""
    columns: list[tuple[str, str]] = []
    hidden: list[str] = []
    for dataset_id in state.used_datasets:
        grant = state.ctx.scenario.datasets[dataset_id]
        for column in state.ctx.datasets[dataset_id].columns:
            columns.append((column.name, column.type))
            if column.name in grant.masks:
                hidden.append(column.name)
    return column_types(state.query, columns, hidden)
