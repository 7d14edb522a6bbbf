"""Rule (aggregate mode): every output row covers at least ``k`` distinct entities.

Only shapes whose aggregation can be shown are accepted:

- the outer query (or each branch of a set operation) aggregates: GROUP BY and/or
  aggregate functions, every other column covered by the grouping, no ROLLUP/CUBE/
  GROUPING SETS (their totals give suppressed groups away by subtraction);
- everything it reads from (joins, derived tables, CTEs) is row-level: no aggregates,
  DISTINCT, LIMIT/OFFSET or set operations — aggregating per entity in a subquery and
  then listing the rows is refused, not guessed at;
- subqueries inside expressions (IN, EXISTS, scalar) may read reference data only
  (datasets without an entity key);
- joins are explicit, on the scenario's join keys.

Each dataset reference with an entity key carries a hidden column (a keyed hash of the
key, added by ``mount_sources``) up through the derived tables; the outer query gets one
hidden column ``__dsb_n``: the least of the distinct-entity counts of the group and of
the rows each aggregate actually used (so ``sum(x) FILTER (WHERE <one person>)`` counts
one). The post-check drops rows with ``__dsb_n < k`` and reports how many.

    >>> # SELECT carrier, count(*) FROM flights GROUP BY carrier  becomes
    >>> # SELECT carrier, count(*), count(DISTINCT flights.__dsb_e1) AS __dsb_n FROM ...
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from gateway.policy.models import Mode
from gateway.rewrite.allowlists import call_arguments, is_aggregate_call
from gateway.rewrite.compile_aggregate import INNER
from gateway.rewrite.context import (
    GROUP_SIZE_COLUMN,
    SETS_COLUMN,
    DatasetRef,
    State,
    normal,
    reject,
    snippet,
)
from gateway.rewrite.entity_sets import column_terms, is_nonzero, sets_column
from gateway.rewrite.guard_isolation import branch_conditions
from gateway.rewrite.make_total import MOMENT_BOUND

Hidden = list[tuple[str, str]]  # (source alias, hidden column name)
# Aggregates whose value every non-zero row moves (the rest only by being non-NULL).
NUMERIC: tuple[type[exp.Expr], ...] = (
    exp.Sum, exp.Avg, exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance,
    exp.VariancePop, exp.Corr, exp.CovarPop, exp.CovarSamp, exp.RegrSlope, exp.RegrIntercept,
    exp.RegrR2, exp.Skewness, exp.Kurtosis,
)
NUMERIC_ANONYMOUS = frozenset({"mean", "favg", "fsum", "sumkahan"})
# What an inner aggregate query passes up to the outer level.
LEVEL_COLUMNS = (GROUP_SIZE_COLUMN, SETS_COLUMN)


@dataclass
class _Analysis:
    state: State
    refs: dict[int, DatasetRef]
    ctes: dict[str, exp.CTE]
    join_keys: frozenset[str]
    cte_outputs: dict[int, list[str]] = field(default_factory=dict)
    row_level: set[int] = field(default_factory=set)  # ids of selects analysed as sources


def _unwrap(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Subquery) and not node.alias:
        node = node.this
    return node


def _aggregates(select: exp.Select) -> list[exp.Expr]:
    """Aggregate calls of this select itself (not of nested subqueries)."""
    found: list[exp.Expr] = []
    for node in select.walk(prune=lambda n: n is not select and isinstance(n, exp.Query)):
        if node is not select and isinstance(node, exp.Func) and is_aggregate_call(node):
            found.append(node)
    return found


class Analyser:
    def __init__(self, analysis: _Analysis) -> None:
        self.a = analysis

    # -- outer query ------------------------------------------------------------------

    def top(self, query: exp.Expr) -> None:
        query = _unwrap(query)
        if isinstance(query, exp.SetOperation):
            self.top(query.left)
            self.top(query.right)
            return
        if not isinstance(query, exp.Select):
            raise reject("not_aggregated", f"cannot show that {snippet(query)} aggregates", query)
        self.a.row_level.add(id(query))
        group = query.args.get("group")
        aggregates = _aggregates(query)
        if group is None and not aggregates:
            raise reject("not_aggregated",
                         "aggregate mode releases only aggregates: add GROUP BY and aggregate "
                         f"functions such as count(*) or avg(...) ({snippet(query)})", query)
        distinct = query.args.get("distinct")
        if distinct is not None and distinct.args.get("on"):
            raise reject("not_aggregated", "DISTINCT ON is not allowed in aggregate mode",
                         distinct)
        self._check_grouping(query, group)
        hidden = self._sources(query)
        state = self.a.state
        if not state.key_columns and not state.entity_columns:  # the first (outer) select
            state.entity_columns = [(a, c) for a, c in hidden if c not in LEVEL_COLUMNS]
            state.key_columns = [p.alias_or_name for p in query.expressions
                                 if not any(is_aggregate_call(n) for n in p.find_all(exp.Func))]
        self._append_group_size(query, hidden, aggregates)

    def _check_grouping(self, query: exp.Select, group: exp.Group | None) -> None:
        for projection in query.expressions:
            star = projection.unalias()
            if isinstance(star, exp.Star) or (isinstance(star, exp.Column)
                                              and isinstance(star.this, exp.Star)):
                raise reject("not_aggregated",
                             "* lists rows, not aggregates; name the grouped columns", projection)
        if group is not None:
            for key in group.expressions:
                if isinstance(key, (exp.Rollup, exp.Cube, exp.GroupingSets)):
                    raise reject("forbidden_grouping",
                                 f"{key.key.upper()} is refused in aggregate mode: its totals "
                                 "reveal suppressed groups by subtraction; group plainly", key)
            if group.args.get("all"):
                return
        keys = set()
        projections = query.expressions
        for key in group.expressions if group is not None else []:
            if isinstance(key, exp.Literal) and not key.is_string:
                index = int(key.name) - 1
                if 0 <= index < len(projections):
                    keys.add(normal(projections[index].unalias()))
                continue
            keys.add(normal(key))
            for projection in projections:  # GROUP BY <select alias>
                if isinstance(projection, exp.Alias) and isinstance(key, exp.Column) \
                        and not key.table and projection.alias.lower() == key.name.lower():
                    keys.add(normal(projection.this))

        def covered(node: exp.Expr) -> bool:
            if normal(node) in keys:
                return True
            if isinstance(node, exp.Func) and is_aggregate_call(node):
                return True
            if isinstance(node, (exp.Filter, exp.IgnoreNulls, exp.RespectNulls)) \
                    and isinstance(node.this, exp.Func) and is_aggregate_call(node.this):
                return True
            if isinstance(node, (exp.Query, exp.Subquery)):
                return True  # checked by _check_expression_subqueries
            if isinstance(node, exp.Column):
                return False
            if isinstance(node, exp.Star):
                return False
            return all(covered(child) for child in node.iter_expressions())

        for projection in projections:
            if not covered(projection.unalias()):
                raise reject("not_aggregated",
                             f"{snippet(projection)} is neither aggregated nor in GROUP BY; "
                             "aggregate mode releases only aggregates", projection)
        having = query.args.get("having")
        outputs = {p.alias.lower() for p in projections if isinstance(p, exp.Alias)}
        for column in having.find_all(exp.Column) if having is not None else []:
            if column.find_ancestor(exp.Query) is not query or not column.table and \
                    column.name.lower() in outputs:
                continue  # in a subquery, or an output's alias
            inside = column.parent
            while inside is not None and inside is not having and not covered(inside):
                inside = inside.parent
            if inside is having:
                raise reject("not_aggregated",
                             f"HAVING reads {snippet(column)}, which is neither aggregated nor "
                             "in GROUP BY", column)

    def _append_group_size(self, query: exp.Select, hidden: Hidden,
                           aggregates: list[exp.Expr]) -> exp.Expr:
        """Append the hidden group size (and entity sets); return the size expression.

        HAVING and ORDER BY ... LIMIT act on exact values inside the engine, before the
        post-check: a group below ``k`` dropped by HAVING, or pushed out by LIMIT, would
        say something about its values through the count of suppressed groups. Small
        groups are therefore kept past HAVING and sorted after the others."""
        groups = [(a, c) for a, c in hidden if c in LEVEL_COLUMNS]
        size = self._append_over_groups(query, hidden, groups) if groups \
            else self._append_entity_counts(query, hidden, aggregates)
        small = exp.LT(this=size.copy(), expression=exp.Literal.number(
            self.a.state.ctx.scenario.k))
        having = query.args.get("having")
        if having is not None:
            query.set("having", exp.Having(this=exp.or_(exp.Paren(this=having.this),
                                                        small.copy())))
        _small_last(query, small)
        return size

    def _append_entity_counts(self, query: exp.Select, hidden: Hidden,
                              aggregates: list[exp.Expr]) -> exp.Expr:
        counts: dict[str, exp.Expr] = {}

        def entity_counts(condition: exp.Expr | None) -> list[exp.Expr]:
            if not hidden:
                value: exp.Expr = exp.Literal.number(1)
                if condition is not None:
                    value = exp.Case(ifs=[exp.If(this=condition, true=value)])
                return [exp.Count(this=value)]
            out: list[exp.Expr] = []
            for alias, column in hidden:
                value = exp.column(column, table=alias)
                if condition is not None:
                    value = exp.Case(ifs=[exp.If(this=condition.copy(), true=value)])
                out.append(exp.Count(this=exp.Distinct(expressions=[value])))
            return out

        for count in entity_counts(None):
            counts[count.sql()] = count
        for call in aggregates:
            condition = self._contribution(call)
            moving = self._moving(call)
            for rows in (condition, moving, *column_terms(call, condition, moving)):
                for count in entity_counts(rows) if rows is not None else []:
                    counts.setdefault(count.sql(), count)
            # Each CASE/IF branch inside the aggregate must itself cover k entities, or
            # padding (ELSE 0) would hide a one-person branch inside a big group.
            for branch in branch_conditions(call):
                taken = exp.and_(condition.copy(), exp.Paren(this=branch)) \
                    if condition is not None else branch
                for count in entity_counts(taken):
                    counts.setdefault(count.sql(), count)
        terms = list(counts.values())
        # least() of counts (never NULL); Anonymous keeps sqlglot from adding NULL guards.
        size = terms[0] if len(terms) == 1 else exp.Anonymous(this="least", expressions=terms)
        query.select(exp.alias_(size, GROUP_SIZE_COLUMN), copy=False)
        self.a.state.hidden_columns = [GROUP_SIZE_COLUMN]
        scenario = self.a.state.ctx.scenario
        if scenario.query_auditing and scenario.noise is None:
            sets = sets_column(hidden, aggregates, self._contribution, self._moving)
            if sets is not None:
                query.select(exp.alias_(sets, SETS_COLUMN), copy=False)
                self.a.state.hidden_columns.append(SETS_COLUMN)
        return size

    def _append_over_groups(self, query: exp.Select, hidden: Hidden, groups: Hidden) -> exp.Expr:
        """Outer level of a two-level query: each group it reads covers k entities."""
        if len(groups) != len(hidden):
            raise reject("not_analyzable", "an inner aggregate query may be joined only with "
                         f"reference data in aggregate mode ({snippet(query)})", query)
        sizes: list[exp.Expr] = [exp.Min(this=exp.column(c, table=a)) for a, c in groups
                                 if c == GROUP_SIZE_COLUMN]
        size = sizes[0] if len(sizes) == 1 else exp.Anonymous(this="least", expressions=sizes)
        query.select(exp.alias_(size, GROUP_SIZE_COLUMN), copy=False)
        self.a.state.hidden_columns = [GROUP_SIZE_COLUMN]
        sets: list[exp.Expr] = [exp.Anonymous(this="flatten", expressions=[
            exp.ArrayAgg(this=exp.column(c, table=a))]) for a, c in groups if c == SETS_COLUMN]
        if sets:
            # Every inner group whose value the outer aggregates may pick is audited as
            # released: min/max/median return one of them.
            merged = sets[0] if len(sets) == 1 else exp.Anonymous(this="list_concat",
                                                                  expressions=sets)
            query.select(exp.alias_(merged, SETS_COLUMN), copy=False)
            self.a.state.hidden_columns.append(SETS_COLUMN)
        return size

    @staticmethod
    def _contribution(call: exp.Expr) -> exp.Expr | None:
        """Condition under which a row feeds ``call``: its arguments non-NULL, its FILTER."""
        return _rows_where(call, nonzero=False)

    @staticmethod
    def _moving(call: exp.Expr) -> exp.Expr | None:
        """For a numeric aggregate, the rows that move its value: also non-zero.

        A zero adds nothing to a sum: a measure multiplied by a 0/1 made of arithmetic
        (``income * (1 - (age - 37) * (age - 37))`` over integer ages...) is one person's
        value however many rows it runs over; counted here, whatever the syntax."""
        numeric = isinstance(call, NUMERIC) or (
            isinstance(call, exp.Anonymous) and call.name.lower() in NUMERIC_ANONYMOUS)
        return _rows_where(call, nonzero=True) if numeric else None

    # -- what the outer query reads from ------------------------------------------------

    def _sources(self, select: exp.Select) -> Hidden:
        hidden: Hidden = []
        from_ = select.args.get("from_")
        joins = select.args.get("joins") or []
        if from_ is not None:
            hidden += self._source(from_.this)
        for join in joins:
            self._check_join(join)
            hidden += self._source(join.this)
        return hidden

    def _check_join(self, join: exp.Join) -> None:
        on = join.args.get("on")
        using = join.args.get("using") or []
        if on is None and not using:
            raise reject("forbidden_join",
                         f"cross joins are not allowed in aggregate mode ({snippet(join)}); "
                         "join with ON or USING on the scenario's join keys", join)
        names = [c for c in (on.find_all(exp.Column) if on is not None else [])]
        for column in names:
            if column.name.lower() not in self.a.join_keys:
                raise reject("forbidden_join",
                             f"{column.sql(dialect='duckdb')} is not a join key of this scenario "
                             f"(join keys: {', '.join(sorted(self.a.join_keys))})", column)
        for ident in using:
            if ident.name.lower() not in self.a.join_keys:
                raise reject("forbidden_join", f"{ident.name} is not a join key of this scenario",
                             ident)

    def _source(self, source: exp.Expr) -> Hidden:
        alias_node = source.args.get("alias")
        if isinstance(alias_node, exp.TableAlias) and alias_node.columns:
            raise reject("forbidden_syntax", "column alias lists are not allowed in aggregate "
                         f"mode ({snippet(source)})", source)
        if isinstance(source, exp.Table):
            name = source.alias or source.name
            ref = self.a.refs.get(id(source))
            if ref is not None:
                return [(name, ref.hidden)] if ref.hidden else []
            cte = self.a.ctes.get(source.name.lower())
            if cte is None:
                raise reject("unknown_table", f"cannot resolve {snippet(source)}", source)
            if isinstance(cte.args.get("alias"), exp.TableAlias) and cte.args["alias"].columns:
                raise reject("forbidden_syntax",
                             "column alias lists are not allowed in aggregate mode", cte)
            key = id(cte)
            if key not in self.a.cte_outputs:
                self.a.cte_outputs[key] = []  # recursion guard
                self.a.cte_outputs[key] = self.row_level(cte.this)
            return [(name, column) for column in self.a.cte_outputs[key]]
        if isinstance(source, exp.Subquery):
            if not source.alias:
                source.set("alias", exp.TableAlias(this=exp.to_identifier(self.a.state.fresh("s"))))
            return [(source.alias, column) for column in self.row_level(source.this)]
        raise reject("not_aggregated", f"cannot analyse {snippet(source)} in aggregate mode",
                     source)

    def row_level(self, query: exp.Expr) -> list[str]:
        """Check a derived table/CTE is row-level; return the hidden columns it now exposes."""
        query = _unwrap(query)
        if isinstance(query, exp.Select) and query.meta.get(INNER):
            return self.inner_level(query)
        if not isinstance(query, exp.Select):
            raise reject("not_aggregated",
                         f"set operations and VALUES inside an aggregate query cannot be shown to "
                         f"aggregate ({snippet(query)}); aggregate each part separately", query)
        self.a.row_level.add(id(query))
        for clause in ("group", "having", "distinct", "limit", "offset", "qualify"):
            if query.args.get(clause) is not None:
                raise reject("not_aggregated",
                             f"{clause.upper()} in a subquery: the outer query must do all the "
                             f"aggregating in aggregate mode ({snippet(query)})", query)
        aggregates = _aggregates(query)
        if aggregates:
            raise reject("not_aggregated",
                         f"aggregate {snippet(aggregates[0])} in a subquery: the outer query must "
                         "do all the aggregating in aggregate mode", aggregates[0])
        hidden = self._sources(query)
        names = [column for _, column in hidden]
        for projection in query.expressions:
            star = projection if isinstance(projection, exp.Star) else (
                projection.this if isinstance(projection, exp.Column)
                and isinstance(projection.this, exp.Star) else None)
            if star is not None and names:
                # Keep `*` from duplicating the hidden columns appended below.
                excluded = list(star.args.get("except_") or [])
                excluded += [exp.column(n) for n in dict.fromkeys(names)]
                star.set("except_", excluded)
        outputs = []
        for alias, column in hidden:
            output = self.a.state.fresh("h")
            query.select(exp.alias_(exp.column(column, table=alias), output), copy=False)
            outputs.append(output)
        return outputs

    def inner_level(self, query: exp.Select) -> list[str]:
        """An inner aggregate query (two-level aggregation), analysed like an outer one.

        The outer query reads its group size (and its entity sets, for auditing): an
        outer group that holds an inner group below ``k`` is suppressed whole, so what is
        released equals the plain answer. ``compile_aggregate`` keeps conditions on the
        inner values out of the outer query, so no group is chosen by a hidden value."""
        state = self.a.state
        if state.ctx.scenario.noise is not None:
            raise reject("noise_unsupported", "with noise, aggregate in one level: an inner "
                         f"aggregate query ({snippet(query)}) would release exact values",
                         query)
        self.a.row_level.add(id(query))
        for clause in ("distinct", "limit", "offset", "qualify"):
            if query.args.get(clause) is not None:
                raise reject("not_analyzable", f"{clause.upper()} in an inner aggregate query "
                             f"is not supported ({snippet(query)})", query)
        self._check_grouping(query, query.args.get("group"))
        hidden = self._sources(query)
        if any(column in LEVEL_COLUMNS for _, column in hidden):
            raise reject("not_analyzable", "at most two levels of aggregation are supported "
                         f"({snippet(query)})", query)
        self._append_group_size(query, hidden, _aggregates(query))
        names = {p.alias_or_name for p in query.selects}
        return [c for c in LEVEL_COLUMNS if c in names]


def _small_last(query: exp.Query, small: exp.Expr) -> None:
    """Under LIMIT, sort groups below k after the others (``small`` is true for them)."""
    if query.args.get("limit") is None and query.args.get("offset") is None:
        return
    order = query.args.get("order")
    keys = list(order.expressions) if order is not None else []
    query.set("order", exp.Order(expressions=[exp.Ordered(this=small), *keys]))


def _rows_where(call: exp.Expr, *, nonzero: bool) -> exp.Expr | None:
    args: list[exp.Expr] = []
    for arg in call_arguments(call):
        if not isinstance(arg, exp.Literal):
            if nonzero:
                # Not zero, and inside the bound beyond which make_total's sums ignore a
                # value: a row that is ignored moved nothing (red team round 7 pushed
                # every other row past the bound with x + (t - c) * 1e20).
                args.append(is_nonzero(arg, MOMENT_BOUND))
            else:
                args.append(exp.Not(this=exp.Is(this=arg.copy(), expression=exp.Null())))
    parent = call.parent
    if isinstance(parent, exp.Filter) and parent.this is call:
        args.append(exp.Paren(this=parent.expression.this.copy()))
    if not args:
        return None
    return exp.and_(*args) if len(args) > 1 else args[0]


def _check_expression_subqueries(analysis: _Analysis, tree: exp.Expr) -> None:
    """Selects not analysed as sources are expression subqueries: reference data only."""
    for select in tree.find_all(exp.Select):
        if id(select) in analysis.row_level:
            continue
        for table in _tables_reached(analysis, select, set()):
            ref = analysis.refs.get(id(table))
            if ref is not None and ref.hidden:
                raise reject("forbidden_subquery",
                             f"subqueries in expressions may read only reference data in "
                             f"aggregate mode; {ref.dataset_id} is about people or firms "
                             f"({snippet(select)})", table)


def _tables_reached(analysis: _Analysis, node: exp.Expr, seen: set[int]) -> list[exp.Table]:
    out = []
    for table in node.find_all(exp.Table):
        if id(table) in analysis.refs:
            out.append(table)
            continue
        cte = analysis.ctes.get(table.name.lower())
        if cte is not None and id(cte) not in seen:
            seen.add(id(cte))
            out += _tables_reached(analysis, cte.this, seen)
    return out


def enforce_min_group(state: State) -> None:
    if state.ctx.mode is not Mode.aggregate:
        return
    for ref in state.refs:
        if state.ctx.datasets[ref.dataset_id].entity_key:
            ref.hidden = f"__dsb_e{ref.index}"
    join_keys = frozenset(
        key for grant in state.ctx.scenario.datasets.values() for key in grant.join_keys
    )
    ctes = {cte.alias_or_name.lower(): cte for cte in state.query.find_all(exp.CTE)}
    analysis = _Analysis(state, {id(r.node): r for r in state.refs}, ctes, join_keys)
    tree = state.query
    Analyser(analysis).top(tree)
    root = _unwrap(tree)
    if isinstance(root, exp.SetOperation):
        _small_last(root, exp.LT(this=exp.column(GROUP_SIZE_COLUMN),
                                 expression=exp.Literal.number(state.ctx.scenario.k)))
    _check_expression_subqueries(analysis, tree)
    k = state.ctx.scenario.k
    entities = sorted({state.ctx.datasets[r.dataset_id].entity_key or "" for r in state.refs
                       if r.hidden})
    what = f"distinct {', '.join(entities)}" if entities else "rows"
    state.note("enforce_min_group",
               f"threshold added: groups covering fewer than {k} {what} (in the group, or "
               "among the rows an aggregate used) are suppressed and counted")
    if SETS_COLUMN in state.hidden_columns:
        state.note("enforce_min_group",
                   f"query auditing: which {what} each released value covers is recorded "
                   "(keyed hashes, kept by the gateway); a result that, with an earlier one "
                   f"of this agreement, would single out fewer than {k} of them is refused")
