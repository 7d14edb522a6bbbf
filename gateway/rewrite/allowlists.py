"""What SQL may contain: node types and functions, as allow-lists.

Anything not listed is refused. sqlglot turns known functions into typed nodes
(``exp.Sum``) and unknown ones into ``exp.Anonymous``; the lists name node classes for
the former and lower-case names for the latter. Adding a function here is a security
decision: it must not read files, settings, the catalog, the environment or SQL text,
and must not return a value that identifies a row in aggregate mode.
"""

from __future__ import annotations

from sqlglot import exp

# Clauses, operators and literals: the grammar of a plain analytic query.
SYNTAX: frozenset[type[exp.Expr]] = frozenset({
    exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery, exp.With, exp.CTE,
    exp.From, exp.Join, exp.Where, exp.Group, exp.Having, exp.Order, exp.Ordered,
    exp.Limit, exp.Offset, exp.Fetch, exp.LimitOptions, exp.Qualify, exp.Distinct,
    exp.Table, exp.TableAlias, exp.Alias, exp.Column, exp.Identifier, exp.Star,
    exp.Literal, exp.Boolean, exp.Null, exp.Paren, exp.Tuple, exp.Values, exp.Lateral,
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.Neg, exp.Not,
    exp.And, exp.Or, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Is,
    exp.NullSafeEQ, exp.NullSafeNEQ, exp.In, exp.Between, exp.Like, exp.ILike,
    exp.SimilarTo, exp.Escape, exp.Exists, exp.Any, exp.All, exp.DPipe,
    exp.Case, exp.If, exp.Cast, exp.TryCast, exp.DataType, exp.DataTypeParam,
    exp.Interval, exp.Var, exp.Window, exp.WindowSpec, exp.Filter, exp.IgnoreNulls,
    exp.RespectNulls, exp.Extract, exp.RawString, exp.Array,
    exp.Struct, exp.PropertyEQ, exp.Bracket, exp.Dot, exp.Columns, exp.PositionalColumn,
    exp.Collate, exp.Rollup, exp.Cube, exp.GroupingSets,
})
# Syntax that reaches around column names (whole rows, positions, regexes over names) or
# that aggregate mode cannot analyse: allowed in records mode, where the source views
# hold only allowed columns, refused in aggregate mode.
RECORDS_ONLY_SYNTAX: frozenset[type[exp.Expr]] = frozenset({
    exp.Lateral, exp.Qualify, exp.Dot, exp.Bracket, exp.Columns, exp.PositionalColumn,
    exp.Struct, exp.PropertyEQ, exp.Array, exp.Window, exp.WindowSpec, exp.Values,
    exp.Intersect, exp.Except,
})

SCALARS: frozenset[type[exp.Expr]] = frozenset({
    exp.Abs, exp.Ceil, exp.Floor, exp.Round, exp.Sqrt, exp.Cbrt, exp.Ln, exp.Log, exp.Exp,
    exp.Pow, exp.Sign, exp.Greatest, exp.Least, exp.Coalesce, exp.Nullif, exp.Lower,
    exp.Upper, exp.Length, exp.Substring, exp.Left, exp.Right, exp.Trim, exp.Concat,
    exp.ConcatWs, exp.Replace, exp.StrPosition, exp.Pad, exp.Initcap, exp.Reverse,
    exp.RegexpLike, exp.RegexpExtract, exp.RegexpReplace, exp.StartsWith, exp.EndsWith,
    exp.Contains, exp.Year, exp.Month, exp.Day, exp.DayOfWeek, exp.DayOfWeekIso,
    exp.DayOfYear, exp.Week, exp.WeekOfYear, exp.Quarter, exp.Hour, exp.Minute,
    exp.Second, exp.TimestampTrunc, exp.DateTrunc, exp.DateDiff, exp.DateAdd,
    exp.DateFromParts, exp.TimeToStr, exp.StrToTime, exp.CurrentDate, exp.TimeToUnix,
    exp.UnixToTime, exp.MD5, exp.SHA2, exp.IsNan, exp.IsInf, exp.Radians, exp.Degrees,
    exp.Sin, exp.Cos, exp.Tan, exp.Atan2, exp.Pi, exp.Trunc, exp.Ascii, exp.Chr,
    exp.SplitPart, exp.Translate, exp.LastDay, exp.Typeof, exp.Dayname, exp.Monthname, exp.DateBin,
})
ANONYMOUS_SCALARS: frozenset[str] = frozenset({
    "strlen", "prefix", "suffix", "date_part", "datepart", "date_sub", "try_strptime",
    "isfinite", "even", "gcd", "lcm", "isoyear", "yearweek", "millisecond", "age",
})

# Totality, for aggregate mode: a scalar that can raise for some input values is
# *partial* (the error itself would answer a question about a row) and is wrapped in
# ``try()`` by ``make_total``; every other scalar above is *total*. Arithmetic
# operators are partial too (overflow). ``tests/rewrite/totality_probe.py`` calls every
# allowed function with extreme values of every type and checks this classification.
PARTIAL: frozenset[type[exp.Expr]] = frozenset({
    exp.Ln, exp.Log, exp.Sqrt, exp.Pow, exp.Exp, exp.StrToTime, exp.DateFromParts,
    exp.Chr, exp.UnixToTime, exp.DateAdd, exp.DateDiff, exp.Ascii, exp.RegexpExtract,
    exp.RegexpReplace, exp.RegexpLike, exp.Pad, exp.DateTrunc, exp.TimestampTrunc, exp.Abs,
    exp.Substring, exp.Left, exp.Right, exp.Extract, exp.Sin, exp.Cos, exp.Tan,
    # They convert their arguments to one type, row by row (a DATE beyond TIMESTAMP's range).
    exp.Coalesce, exp.Greatest, exp.Least, exp.Nullif, exp.DateBin,
})
PARTIAL_ANONYMOUS: frozenset[str] = frozenset({"gcd", "lcm", "age", "date_sub", "date_part",
                                               "datepart"})

# Aggregates that summarise many rows into one number.
AGGREGATES: frozenset[type[exp.Expr]] = frozenset({
    exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max, exp.Median, exp.Quantile,
    exp.PercentileCont, exp.PercentileDisc, exp.ApproxQuantile, exp.Stddev, exp.StddevPop,
    exp.StddevSamp, exp.Variance, exp.VariancePop, exp.Corr, exp.CovarPop, exp.CovarSamp,
    exp.CountIf, exp.LogicalAnd, exp.LogicalOr, exp.ApproxDistinct, exp.RegrSlope,
    exp.RegrIntercept, exp.RegrR2, exp.RegrCount, exp.Skewness, exp.Kurtosis,
})
ANONYMOUS_AGGREGATES: frozenset[str] = frozenset({"mean", "favg", "fsum", "sumkahan", "entropy"})
# Aggregates DuckDB refuses to finish on some inputs (third and fourth moments of tiny
# or huge values are "out of range"): records mode only.
RECORDS_ONLY_AGGREGATES: frozenset[type[exp.Expr]] = frozenset({exp.Skewness, exp.Kurtosis})
# Aggregates whose result is one input value (or a function of very few): safe only
# over public columns in aggregate mode.
VALUE_AGGREGATES: frozenset[type[exp.Expr]] = frozenset({
    exp.Min, exp.Max, exp.Median, exp.Quantile, exp.PercentileCont, exp.PercentileDisc,
    exp.ApproxQuantile,
})
# Aggregates that return row-level values: records mode only.
ROW_LEVEL_AGGREGATES: frozenset[type[exp.Expr]] = frozenset({
    exp.ArrayAgg, exp.GroupConcat, exp.First, exp.Last, exp.AnyValue, exp.ArgMin,
    exp.ArgMax, exp.Mode, exp.ApproxTopK, exp.BitwiseAndAgg, exp.BitwiseOrAgg,
    exp.BitwiseXorAgg,
})
ANONYMOUS_ROW_LEVEL: frozenset[str] = frozenset({
    "histogram", "arbitrary", "list", "array_agg", "string_agg", "bitstring_agg",
    "reservoir_quantile", "product", "geomean",
})
# Aggregates that pack many rows into one value: refused in every mode.
PACKING: frozenset[type[exp.Expr]] = frozenset({exp.ArrayAgg, exp.GroupConcat})
ANONYMOUS_PACKING: frozenset[str] = frozenset({
    "histogram", "list", "array_agg", "string_agg", "bitstring_agg", "listagg",
})
# Window-only functions: records mode only.
WINDOW_FUNCTIONS: frozenset[type[exp.Expr]] = frozenset({
    exp.RowNumber, exp.Rank, exp.DenseRank, exp.PercentRank, exp.CumeDist, exp.Ntile,
    exp.Lag, exp.Lead, exp.FirstValue, exp.LastValue, exp.NthValue,
})


# Window functions that copy other rows' values into this row: ``concat_ws(x, lag(x, 1),
# ..., lag(x, 22))`` packs 23 records into one, past max_rows. Refused in every mode.
PACKING_WINDOWS: frozenset[type[exp.Expr]] = frozenset({
    exp.Lag, exp.Lead, exp.FirstValue, exp.LastValue, exp.NthValue,
})


def function_name(node: exp.Expr) -> str:
    """The SQL name a user would recognise for a function node."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return str(node.sql_name()).lower()
    return node.key


def is_aggregate_function(node: exp.Expr) -> bool:
    """True for an aggregate function (of any kind), whether over a group or a window."""
    if isinstance(node, exp.Anonymous):
        name = function_name(node)
        return name in ANONYMOUS_AGGREGATES or name in ANONYMOUS_ROW_LEVEL
    return type(node) in AGGREGATES or type(node) in ROW_LEVEL_AGGREGATES


def is_aggregate_call(node: exp.Expr) -> bool:
    """True for an aggregate (of any kind) applied to a group, not as a window."""
    if isinstance(node.parent, exp.Window) and node.arg_key == "this":
        return False
    return is_aggregate_function(node)


def aggregates_here(select: exp.Select) -> bool:
    """Whether ``select`` itself groups or aggregates (not a query nested in it)."""
    if select.args.get("group") is not None:
        return True
    return any(isinstance(n, exp.Func) and is_aggregate_call(n) for p in select.selects
               for n in p.walk(prune=lambda n: isinstance(n, exp.Query)))


def is_row_level(node: exp.Expr) -> bool:
    if isinstance(node, exp.Anonymous):
        return function_name(node) in ANONYMOUS_ROW_LEVEL
    return type(node) in ROW_LEVEL_AGGREGATES or type(node) in WINDOW_FUNCTIONS


def is_packing(node: exp.Expr) -> bool:
    """An aggregate whose one value holds many rows (``list``, ``string_agg``...)."""
    if isinstance(node, exp.Anonymous):
        return function_name(node) in ANONYMOUS_PACKING
    return type(node) in PACKING


def call_arguments(call: exp.Expr) -> list[exp.Expr]:
    """Every argument of a call, in order: ``this``, ``expression`` and ``expressions``
    alike (``regr_slope(y, x)`` keeps ``x`` in ``expression``), DISTINCT unpacked."""
    out: list[exp.Expr] = []
    for child in call.iter_expressions():
        if isinstance(child, exp.Distinct):
            out += list(child.expressions)
        elif not isinstance(child, (exp.Star, exp.DataType)):
            out.append(child)
    return out


def total_function(node: exp.Expr) -> bool:
    """True for an allowed scalar function that cannot raise, whatever its arguments."""
    if isinstance(node, exp.Anonymous):
        name = function_name(node)
        return name in ANONYMOUS_SCALARS and name not in PARTIAL_ANONYMOUS
    return type(node) in SCALARS and type(node) not in PARTIAL
