"""Rule (aggregate mode): compile the query into what each released value means, then check.

The other aggregate-mode rules used to judge names and shapes; an attacker works with
meaning (what each released number is computed from). This rule builds one semantic
model of the query, from sqlglot's qualified scopes, and every later rule consults it:

- the tree is *qualified* against the scenario's view of the datasets: every column is
  bound to its source, stars are expanded, so a derived table or CTE that renames a
  column cannot hide where it comes from;
- every derived column has a **lineage** (``Lineage``): the source columns it is computed
  from and its kind: a plain *value* (arithmetic on columns and constants), a *condition*
  (a comparison, or a cast of one), a *category* (a CASE whose results are constants), an
  *aggregate* of an inner aggregate query (two-level aggregation), or a *step* (rounding,
  string functions, a CASE over values...: usable as a group key or in conditions, never
  as the measure of an aggregate);
- every aggregate call compiles to ``function(measure) FILTER (predicate)``: its measure
  is the set of source columns its value is computed from, wherever they were renamed;
  each condition that reaches inside the value (CASE branches, casts of comparisons,
  comparisons used as numbers, category columns) is marked as an **indicator**, whose
  branches ``enforce_min_group`` counts in distinct entities like any group;
- what cannot be compiled is refused: ``not_analyzable`` (with the supported forms), or
  ``isolating_aggregate`` for a step function inside an aggregate's value,
  ``row_level_aggregate`` for min/max/median/quantiles whose argument traces to a column
  that is not public, ``forbidden_subquery`` for a subquery that reads the outer query's
  rows (DuckDB binds ``(SELECT sum(x) FILTER (...))`` to the outer query).

The supported grammar, after qualification (in the spirit of SmartNoise SQL and AWS Clean
Rooms' aggregation rule, which also restrict what may stand inside an aggregate)::

    query     := SELECT dims, releases FROM sources [WHERE cond] [GROUP BY dims]
                 [HAVING cond] [ORDER BY outputs] [LIMIT n]  | query UNION query
    sources   := dataset | row-level derived table/CTE (no GROUP BY, DISTINCT, LIMIT)
                 | inner aggregate query (two-level) ; joined on join keys
    release   := agg(value) [FILTER (WHERE cond)] | arithmetic of releases
    value     := column | constant | value (+ - * /) value | -value
                 | CAST(value AS DOUBLE/FLOAT/REAL) | CAST(column AS any)
                 | CAST(cond AS any) | cond | CASE WHEN cond THEN value ... END
    cond      := anything the scenario's functions allow (it selects rows; its branches
                 are counted)

Over an inner aggregate (two-level), the outer aggregates are min, max, median,
quantiles and count: each inner group already covers ``k`` entities, and a sum or
average of released groups would give a suppressed group away by subtraction from a
direct total.

    >>> from pathlib import Path
    >>> from gateway.policy.loading import load_policies
    >>> from gateway.rewrite import RewriteContext, rewrite
    >>> p = load_policies(Path("policies"), require_signatures=False)
    >>> s = p.scenario("flights-aggregate")
    >>> ctx = RewriteContext(s, {d: p.dataset(d) for d in s.datasets}, salt="x" * 32)
    >>> form = rewrite("SELECT hour, avg(CAST(arr_delay > 15 AS INT)) AS late "
    ...                "FROM flights GROUP BY hour", ctx).form
    >>> for line in describe_form(form): print(line)
    levels: 1
    dimensions: flights.hour
    filters: (none)
    release late: avg of rows; indicators counted per branch: flights.arr_delay > 15
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope

from gateway.policy.models import Mode, Sensitivity
from gateway.rewrite.allowlists import (
    VALUE_AGGREGATES,
    aggregates_here,
    call_arguments,
    function_name,
    is_aggregate_call,
)
from gateway.rewrite.context import State, reject, snippet
from gateway.rewrite.identifying_columns import IdentifierGuard, identifying_columns
from gateway.rewrite.parse_statement import too_complex
from gateway.rewrite.resolve_tables import resolve_tables
from gateway.rewrite.value_scale import scale_of

INDICATOR = "dsb_indicator"  # node.meta: this node is a condition used as a number
CATEGORIES = "dsb_categories"  # node.meta: constant values a category column takes
MEASURE = "dsb_measure"  # call.meta: what the call measures (source columns, or *)
INNER = "dsb_inner"  # select.meta: an inner aggregate query (two-level aggregation)

PREDICATES: tuple[type[exp.Expr], ...] = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Is, exp.NullSafeEQ,
    exp.NullSafeNEQ, exp.In, exp.Between, exp.Like, exp.ILike, exp.SimilarTo, exp.And,
    exp.Or, exp.Not, exp.Boolean, exp.Exists,
)
ARITHMETIC: tuple[type[exp.Expr], ...] = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Neg,
                                          exp.Paren)
CONSTANTS: tuple[type[exp.Expr], ...] = (exp.Literal, exp.Null)
# Casts that keep every value apart (no rounding into steps).
EXACT_TYPES = frozenset({exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT})
# Over an inner aggregate: aggregates that pick one released group's value, or count them.
OVER_GROUPS: tuple[type[exp.Expr], ...] = (
    exp.Min, exp.Max, exp.Median, exp.Quantile, exp.PercentileCont, exp.PercentileDisc,
    exp.ApproxQuantile, exp.Count,
)
ROWS = "*"
# AND/OR operators an aggregate-mode statement may hold (qualification is quadratic:
# about 1 s at this many).
MAX_CONNECTORS = 1000
SUPPORTED = ("an aggregate's value may be a column, arithmetic (+ - * /) on columns and "
             "constants, CAST to DOUBLE, a condition used as 0/1, or a flat CASE WHEN "
             "<condition> THEN <value> ... END")


class Kind(StrEnum):
    value = "value"
    condition = "condition"
    category = "category"
    aggregate = "aggregate"
    step = "step"


@dataclass(frozen=True)
class Lineage:
    """What a column of a scope is computed from."""

    kind: Kind
    sources: frozenset[str] = frozenset()  # "dataset.column"
    categories: tuple[exp.Expr, ...] = ()  # category: the constants it takes
    # A source column as stored (renamed or cast to DOUBLE at most), nothing computed.
    stored: bool = False


@dataclass(frozen=True)
class Release:
    """One released value: ``function(measure) FILTER (predicate)`` and its indicators."""

    name: str
    function: str
    measure: tuple[str, ...]
    predicate: str | None
    indicators: tuple[str, ...]


@dataclass(frozen=True)
class AggregateForm:
    """The compiled form of an aggregate-mode query (``dsb sql explain`` shows it)."""

    dimensions: tuple[str, ...]
    filters: tuple[str, ...]
    releases: tuple[Release, ...]
    levels: int = 1
    branches: tuple[AggregateForm, ...] = field(default=())


def _text(node: exp.Expr) -> str:
    return node.sql(dialect="duckdb", comments=False)


class Compiler:
    def __init__(self, state: State) -> None:
        self.state = state
        self.refs = {id(r.node): r for r in state.refs}
        self.cache: dict[tuple[int, str], Lineage] = {}

    # -- lineage of columns ---------------------------------------------------------------

    def column(self, column: exp.Column, scope: Scope) -> Lineage:
        source = scope.sources.get(column.table)
        if isinstance(source, exp.Table):
            ref = self.refs.get(id(source))
            if ref is None:
                raise reject("not_analyzable", f"cannot trace {snippet(column)} to a dataset",
                             column)
            return Lineage(Kind.value, frozenset({f"{ref.dataset_id}.{column.name.lower()}"}),
                           stored=True)
        if isinstance(source, Scope):
            key = (id(source.expression), column.name.lower())
            found = self.cache.get(key)
            if found is None:
                found = self.cache[key] = self._derived(source, column)
            return found
        if not column.table:
            # An output alias (ORDER BY, HAVING) of this select: its own lineage.
            select = scope.expression
            for projection in select.selects if isinstance(select, exp.Query) else []:
                if projection.alias_or_name.lower() == column.name.lower():
                    return self.expression(projection.unalias(), scope)
        raise reject("not_analyzable", f"cannot trace {snippet(column)} to its source", column)

    def _derived(self, source: Scope, column: exp.Column) -> Lineage:
        select = source.expression
        if not isinstance(select, exp.Select):
            raise reject("not_analyzable", f"cannot analyse {snippet(select)} in aggregate "
                         "mode: set operations and VALUES in FROM are not supported", select)
        projection = next((p for p in select.selects
                           if p.alias_or_name.lower() == column.name.lower()), None)
        if projection is None:
            raise reject("not_analyzable", f"cannot trace {snippet(column)} to its source",
                         column)
        inner = self.expression(projection.unalias(), source)
        if aggregates_here(select):
            return Lineage(Kind.aggregate, inner.sources)
        return inner

    def expression(self, node: exp.Expr, scope: Scope) -> Lineage:
        """Lineage of a row-level expression of ``scope``."""
        if isinstance(node, exp.Column):
            return self.column(node, scope)
        if isinstance(node, CONSTANTS):
            return Lineage(Kind.value)
        sources = frozenset().union(*(self.expression(c, scope).sources
                                      for c in node.iter_expressions()
                                      if not isinstance(c, (exp.DataType, exp.Query))))
        if isinstance(node, PREDICATES):
            return Lineage(Kind.condition, sources)
        if isinstance(node, (exp.Cast, exp.TryCast)):
            inner = self.expression(node.this, scope)
            if inner.kind in (Kind.condition, Kind.category, Kind.aggregate):
                return inner
            if inner.kind is Kind.value and (_exact(node) or isinstance(node.this, exp.Column)):
                return inner
            return Lineage(Kind.step, sources)
        if isinstance(node, ARITHMETIC):
            kinds = {self.expression(c, scope).kind for c in node.iter_expressions()}
            if kinds <= {Kind.value} and _linear(
                    node, lambda c: bool(self.expression(c, scope).sources),
                    lambda d: self.plain_divisor(d, scope)):
                return Lineage(Kind.value, sources)
            if Kind.aggregate in kinds and kinds <= {Kind.value, Kind.aggregate}:
                return Lineage(Kind.aggregate, sources)
            return Lineage(Kind.step, sources)
        if isinstance(node, exp.Case) and _constant_results(node):
            results = [i.args["true"] for i in node.args.get("ifs") or []]
            results.append(node.args.get("default") or exp.Null())
            return Lineage(Kind.category, sources, tuple(r.copy() for r in results))
        if isinstance(node, exp.Func) and is_aggregate_call(node):
            return Lineage(Kind.aggregate, sources)
        return Lineage(Kind.step, sources)

    # -- aggregate calls ------------------------------------------------------------------

    def call(self, call: exp.Func, scope: Scope, over_groups: bool, name: str = "") -> Release:
        function = function_name(call)
        measure: set[str] = set()
        distinct = isinstance(call.this, exp.Distinct)
        for arg in call_arguments(call):
            measure |= self.value(arg, scope, call)
            scale_of(arg, scope)
        if over_groups and not isinstance(call, OVER_GROUPS):
            raise reject("not_analyzable",
                         f"{function}() over the groups of an inner aggregate query "
                         f"({snippet(call)}): only min, max, median, quantiles and count are "
                         "supported there; a sum or average of released groups would give "
                         "a suppressed group away by subtraction from a direct total", call)
        if type(call) in VALUE_AGGREGATES and not over_groups:
            hidden = sorted(s for s in measure if s not in self.public)
            if hidden or not measure:
                raise reject("row_level_aggregate",
                             f"{function}() over {snippet(call)} would reveal a single value of "
                             f"{', '.join(hidden) or 'a computed value'}, which is not a public "
                             "column; use avg or a count instead (or min/max over an inner "
                             "aggregate query)", call)
        label: tuple[str, ...]
        if isinstance(call, (exp.Count, exp.CountIf, exp.RegrCount)) and not distinct:
            label = (ROWS,)
        elif distinct or isinstance(call, exp.ApproxDistinct):
            label = ("distinct " + ", ".join(sorted(measure)),)
        elif type(call) in VALUE_AGGREGATES:
            # A rank is not subtracted from a sum: order statistics are compared apart.
            label = tuple(f"order {m}" for m in sorted(measure)) or (ROWS,)
        else:
            label = tuple(sorted(measure)) or (ROWS,)
        call.meta[MEASURE] = label
        parent = call.parent
        predicate = _text(parent.expression.this) \
            if isinstance(parent, exp.Filter) and parent.this is call else None
        indicators = tuple(_text(n) for n in call.walk() if n.meta.get(INDICATOR))
        return Release(name, function, label, predicate, indicators)

    def value(self, node: exp.Expr, scope: Scope, call: exp.Func) -> set[str]:
        """Check ``node`` is a value an aggregate may take; its source columns."""
        if isinstance(node, exp.Column):
            lineage = self.column(node, scope)
            if lineage.kind in (Kind.value, Kind.aggregate):
                return set(lineage.sources)
            if lineage.kind is Kind.condition:
                node.meta[INDICATOR] = True
                return set()
            if lineage.kind is Kind.category:
                node.meta[INDICATOR] = True
                node.meta[CATEGORIES] = lineage.categories
                return set()
            raise self._step(node, call, derived=True)
        if isinstance(node, (*CONSTANTS, exp.Boolean)):
            return set()
        if isinstance(node, PREDICATES):
            self._condition(node, scope)
            node.meta[INDICATOR] = True
            return set()
        if isinstance(node, (exp.Cast, exp.TryCast)):
            inner = node.this
            while isinstance(inner, exp.Paren):
                inner = inner.this
            if isinstance(inner, PREDICATES):
                self._condition(inner, scope)
                inner.meta[INDICATOR] = True
                return set()
            if isinstance(inner, exp.Column) or _exact(node):
                return self.value(inner, scope, call)
            raise reject("isolating_aggregate",
                         f"{snippet(node)} inside the aggregate {snippet(call)} rounds its "
                         "value into steps that could single out a few rows of a large group; "
                         f"{SUPPORTED}; cast to DOUBLE instead", node)
        if isinstance(node, ARITHMETIC):
            out: set[str] = set()
            dependent = 0
            switches = 0
            for child in node.iter_expressions():
                found = self.value(child, scope, call)
                out |= found
                dependent += bool(found)
                switches += any(n.meta.get(INDICATOR) or isinstance(n, (exp.Case, exp.If))
                                for n in child.walk())
            if isinstance(node, exp.Mul) and (dependent > 1 or switches > 1):
                raise reject("isolating_aggregate",
                             f"{snippet(node)} inside the aggregate {snippet(call)} multiplies "
                             "two data-dependent factors: products of columns or of conditions "
                             "can build a 0/1 that singles out one entity; multiply a value by "
                             "constants or by one condition, or put the conditions in one CASE",
                             node)
            if isinstance(node, exp.Div) and not self.plain_divisor(node.expression, scope):
                raise reject("isolating_aggregate",
                             f"{snippet(node)} inside the aggregate {snippet(call)} divides by a "
                             "computed value (here, or in the CTE or subquery it comes from): "
                             "a divisor near zero for one row weights it above all others; "
                             "divide by a stored column or a constant", node)
            return out
        if isinstance(node, (exp.Case, exp.If)):
            return self._case(node, scope, call)
        if isinstance(node, exp.Distinct):
            out = set()
            for child in node.expressions:
                out |= self.value(child, scope, call)
            return out
        raise self._step(node, call, derived=False)

    def plain_divisor(self, node: exp.Expr, scope: Scope) -> bool:
        """A constant, or a source column as stored (``air_time``), traced through CTEs
        and subqueries. Not ``air_time - 19.999``: a divisor moved near zero for chosen
        rows weights them by a billion inside a group that otherwise passes k."""
        while isinstance(node, (exp.Paren, exp.Cast, exp.TryCast)):
            if isinstance(node, (exp.Cast, exp.TryCast)) and not _exact(node):
                return False
            node = node.this
        if isinstance(node, CONSTANTS):
            return True
        return isinstance(node, exp.Column) and self.column(node, scope).stored

    def _case(self, node: exp.Case | exp.If, scope: Scope, call: exp.Func) -> set[str]:
        branches = node.args.get("ifs") or [] if isinstance(node, exp.Case) else [node]
        values = [b.args.get("true") for b in branches]
        values.append(node.args.get("default") if isinstance(node, exp.Case)
                      else node.args.get("false"))
        out: set[str] = set()
        for branch in branches:
            self._condition(branch.this, scope)
        for value in values:
            if value is None:
                continue
            if value.find(exp.Case, exp.If) is not None:
                raise reject("isolating_aggregate",
                             f"nested CASE/IF inside an aggregate ({snippet(call)}) is not "
                             "allowed in aggregate mode: write one flat CASE, or put the "
                             "condition in GROUP BY so each group is counted", value)
            out |= self.value(value, scope, call)
        return out

    def _condition(self, node: exp.Expr, scope: Scope) -> None:
        """A condition may use any allowed column; its source must be traceable."""
        for column in node.find_all(exp.Column):
            if column.find_ancestor(exp.Query) is scope.expression or \
                    column.find_ancestor(exp.Query) is None:
                self.column(column, scope)

    @staticmethod
    def _step(node: exp.Expr, call: exp.Func, *, derived: bool) -> Exception:
        what = (f"{snippet(node)} is computed in a subquery or CTE by something other than "
                "arithmetic (a function, rounding, or a CASE over values)") if derived else \
            f"{snippet(node)} inside the aggregate {snippet(call)} could single out a few rows " \
            "of a large group"
        return reject("isolating_aggregate",
                      f"{what}; in aggregate mode {SUPPORTED} (each branch or condition must "
                      "cover k entities). Move the condition to WHERE, FILTER or GROUP BY, or "
                      "the transformation outside the aggregate", node)

    @property
    def public(self) -> frozenset[str]:
        names = set()
        for dataset_id in self.state.used_datasets:
            dataset = self.state.ctx.datasets[dataset_id]
            grant = self.state.ctx.scenario.datasets[dataset_id]
            for column in dataset.columns:
                if (column.sensitivity is Sensitivity.public and column.name in grant.columns
                        and column.name not in grant.masks
                        and column.name != dataset.entity_key):
                    names.add(f"{dataset_id}.{column.name.lower()}")
        return frozenset(names)

    # -- the query ------------------------------------------------------------------------

    def compile(self, root: Scope) -> AggregateForm:
        query = root.expression
        if isinstance(query, exp.SetOperation):
            left = self.compile(root.set_operation_scopes[0])
            right = self.compile(root.set_operation_scopes[1])
            return AggregateForm((), (), (), max(left.levels, right.levels), (left, right))
        if not isinstance(query, exp.Select):
            raise reject("not_analyzable", f"cannot analyse {snippet(query)}", query)
        levels = 1
        for child in root.derived_table_scopes + root.cte_scopes:
            if isinstance(child.expression, exp.Select) and aggregates_here(child.expression):
                if child.expression.meta.get(INNER):
                    self.compile_inner(child)
                    levels = 2
        over_groups = self._reads_inner(root)
        if over_groups:
            self._no_inner_values(query, root)
        releases = []
        for projection in query.selects:
            for call in _calls(projection):
                releases.append(self.call(call, root, over_groups, projection.alias_or_name))
        for name in ("having", "order"):
            clause = query.args.get(name)
            for call in _calls(clause) if clause is not None else []:
                self.call(call, root, over_groups)
        group = query.args.get("group")
        dims = tuple(_text(k) for k in group.expressions) if group is not None else ()
        where = query.args.get("where")
        filters: tuple[str, ...] = (_text(where.this),) if where is not None else ()
        for sub in root.derived_table_scopes + root.cte_scopes:
            inner_where = sub.expression.args.get("where") \
                if isinstance(sub.expression, exp.Select) else None
            if inner_where is not None and not sub.expression.meta.get(INNER):
                filters += (_text(inner_where.this),)
        return AggregateForm(dims, filters, tuple(releases), levels)

    def compile_inner(self, scope: Scope) -> None:
        select = scope.expression
        assert isinstance(select, exp.Select)
        for projection in select.selects:
            for call in _calls(projection):
                self.call(call, scope, over_groups=False)

    def _no_inner_values(self, query: exp.Select, scope: Scope) -> None:
        """Over an inner aggregate, rows are chosen by its keys, never by its values: a
        condition on the value of a group below k would tell something about it."""
        places: list[exp.Expr] = []
        where = query.args.get("where")
        places += [where] if where is not None else []
        places += [j.args["on"] for j in query.args.get("joins") or [] if j.args.get("on")]
        for call in _calls(query):
            places += [n for n in call.walk()
                       if isinstance(n, (exp.Case, exp.If, exp.Filter, *PREDICATES))]
            if isinstance(call.parent, exp.Filter):
                places.append(call.parent.expression)
        for place in places:
            for column in place.find_all(exp.Column):
                if self.column(column, scope).kind is Kind.aggregate:
                    raise reject("not_analyzable",
                                 f"{snippet(column)} is a value of an inner aggregate query; "
                                 "over an inner aggregate, choose rows by its group keys only "
                                 "(a condition on a value could tell something about a group "
                                 "that is suppressed)", column)

    @staticmethod
    def _reads_inner(scope: Scope) -> bool:
        return any(isinstance(s, Scope) and s.expression.meta.get(INNER)
                   for s in scope.sources.values())


def _linear(node: exp.Expr, dependent: Callable[[exp.Expr], bool],
            plain_divisor: Callable[[exp.Expr], bool]) -> bool:
    """Arithmetic without a product of two data-dependent factors or a computed divisor."""
    if isinstance(node, exp.Mul) and all(dependent(c) for c in node.iter_expressions()):
        return False
    if isinstance(node, exp.Div) and not plain_divisor(node.expression):
        return False
    return True


def _exact(cast: exp.Cast | exp.TryCast) -> bool:
    to = cast.args.get("to")
    return isinstance(to, exp.DataType) and to.this in EXACT_TYPES


def _constant_results(case: exp.Case) -> bool:
    results = [i.args.get("true") for i in case.args.get("ifs") or []]
    results.append(case.args.get("default"))
    return all(r is None or isinstance(r, (*CONSTANTS, exp.Boolean)) for r in results)


def _calls(node: exp.Expr) -> list[exp.Func]:
    """Aggregate calls of ``node`` itself, not of nested queries."""
    found = []
    for sub in node.walk(prune=lambda n: isinstance(n, exp.Query) and n is not node):
        if isinstance(sub, exp.Func) and is_aggregate_call(sub):
            found.append(sub)
    return found


def _check_subqueries(root: Scope, tree: exp.Expr) -> None:
    """Expression subqueries must stand on their own: nothing of the outer rows inside."""
    for scope in root.traverse():
        if scope.is_subquery or (scope.is_root and scope.expression is not tree):
            select = scope.expression
            if isinstance(select, exp.Select) and select.args.get("from_") is None \
                    and any(True for _ in select.find_all(exp.Column)):
                raise reject("forbidden_subquery",
                             f"a subquery without FROM ({snippet(select)}) is evaluated on the "
                             "outer query's rows; aggregate in the outer query instead", select)
            if scope.external_columns:
                column = scope.external_columns[0]
                raise reject("forbidden_subquery",
                             f"correlated subqueries are not allowed in aggregate mode: "
                             f"{snippet(column)} refers to the outer query ({snippet(select)})",
                             column)


def _check_stars(query: exp.Expr) -> None:
    """Before qualification expands them: a star in an aggregating select lists rows."""
    while isinstance(query, exp.Subquery) and not query.alias:
        query = query.this
    if isinstance(query, exp.SetOperation):
        _check_stars(query.left)
        _check_stars(query.right)
        return
    for projection in query.selects if isinstance(query, exp.Select) else []:
        star = projection.unalias()
        if isinstance(star, exp.Star) or (isinstance(star, exp.Column)
                                          and isinstance(star.this, exp.Star)):
            raise reject("not_aggregated",
                         "* lists rows, not aggregates; name the grouped columns", projection)


def _compile_subqueries(compiler: Compiler, root: Scope) -> None:
    """Aggregates inside expression subqueries are judged by lineage too."""
    for scope in root.traverse():
        if scope.is_subquery and isinstance(scope.expression, exp.Select):
            for projection in scope.expression.selects:
                for call in _calls(projection):
                    compiler.call(call, scope, over_groups=False)


def _schema(state: State) -> dict[str, object]:
    schema: dict[str, object] = {}
    for dataset_id in state.used_datasets:
        dataset = state.ctx.datasets[dataset_id]
        grant = state.ctx.scenario.datasets[dataset_id]
        schema[dataset_id] = {c.name: c.type for c in dataset.columns if c.name in grant.columns}
    return schema


def _mark_inner(root: Scope) -> None:
    """Derived tables that aggregate: the inner level of a two-level query."""
    for scope in root.traverse():
        select = scope.expression
        if scope is root or not isinstance(select, exp.Select) or not aggregates_here(select):
            continue
        if scope.is_derived_table or scope.is_cte:
            select.meta[INNER] = True


def compile_aggregate(state: State) -> None:
    if state.ctx.mode is not Mode.aggregate:
        return
    _check_stars(state.query)
    operators = sum(1 for _ in state.query.find_all(exp.Connector))
    if operators > MAX_CONNECTORS:
        # qualify() takes time quadratic in long AND/OR chains: 4,000 terms cost 15 s.
        raise too_complex(f"the statement joins {operators} conditions with AND/OR (at most "
                          f"{MAX_CONNECTORS} in aggregate mode); use IN lists or BETWEEN")
    try:
        qualify(state.query, schema=_schema(state), dialect="duckdb",
                validate_qualify_columns=True, identify=False, quote_identifiers=False)
    except OptimizeError as exc:
        raise reject("not_analyzable", f"cannot analyse the query: {exc}; name every column "
                     "with its table when several tables have it") from None
    state.refs.clear()
    resolve_tables(state)  # the same table nodes, re-recorded after qualification
    root = build_scope(state.query)
    if root is None:
        raise reject("not_analyzable", "cannot analyse the query")
    _check_subqueries(root, state.query)
    _mark_inner(root)
    compiler = Compiler(state)
    state.form = compiler.compile(root)
    _compile_subqueries(compiler, root)
    IdentifierGuard(identifying_columns(state),
                    lambda column, scope: compiler.column(column, scope).sources).check(root)


def describe_form(form: AggregateForm, indent: str = "") -> list[str]:
    """The compiled form in lines of text (``dsb sql explain``)."""
    if form.branches:
        lines = [f"{indent}set operation of {len(form.branches)} aggregate queries:"]
        for branch in form.branches:
            lines += describe_form(branch, indent + "  ")
        return lines
    lines = [f"{indent}levels: {form.levels}",
             f"{indent}dimensions: {', '.join(form.dimensions) or '(none: one total row)'}",
             f"{indent}filters: {' AND '.join(form.filters) or '(none)'}"]
    for release in form.releases:
        measure = ", ".join("rows" if m == ROWS else m for m in release.measure)
        text = f"{indent}release {release.name}: {release.function} of {measure}"
        if release.predicate:
            text += f" over rows where {release.predicate}"
        if release.indicators:
            text += f"; indicators counted per branch: {'; '.join(release.indicators)}"
        lines.append(text)
    return lines
