"""Rule (aggregate mode with ``noise``): bound each entity's contribution, then aggregate.

Noise hides one entity only if one entity can move a released value by a known amount.
The user's aggregate query is split in two levels:

- inside, the user's FROM / JOIN / WHERE, unchanged, projecting every row-level
  expression the query needs (group keys, aggregate arguments, FILTER conditions) and,
  per entity column, ``row_number() OVER (PARTITION BY <entity>)``; values to be summed
  are clamped to the scenario's bounds there;
- outside, only rows numbered ``<= max_rows_per_entity`` are kept (after joins, so a
  join cannot multiply an entity's rows past the cap), then grouped as the user asked.
  Counts and clamped sums come out in hidden columns; the gateway adds the noise
  (``gateway.privacy.noise``) and computes averages from the noisy sum and count.

Only what the sensitivity is known for is accepted: each output column is a group key or
one ``count``, ``sum`` or ``avg`` (FILTER allowed), summed columns need clamp bounds, no
HAVING (it would filter on exact values). ORDER BY and LIMIT are applied by the gateway
after the noise, for the same reason.

    >>> # SELECT carrier, count(*) AS n FROM flights GROUP BY carrier  becomes
    >>> # SELECT __dsb_x1 AS carrier, COUNT(*) AS __dsb_v2, ... FROM (SELECT carrier AS
    >>> #   __dsb_x1, ROW_NUMBER() OVER (PARTITION BY f.__dsb_e1) AS __dsb_r4 ... FROM
    >>> #   flights ...) AS __dsb_b WHERE __dsb_r4 <= 300 GROUP BY __dsb_x1
"""

from __future__ import annotations

from sqlglot import exp

from gateway.policy.models import Mode, Noise
from gateway.privacy.plan import NoisePlan, NoisyOutput, Ordering, Statistic
from gateway.rewrite.allowlists import function_name, is_aggregate_call
from gateway.rewrite.context import GROUP_SIZE_COLUMN, State, reject, snippet
from gateway.rewrite.name_outputs import output_name

CODE = "noise_unsupported"
INNER = "__dsb_b"


def _has_aggregate(node: exp.Expr) -> bool:
    return any(isinstance(n, exp.Func) and is_aggregate_call(n) for n in node.walk())


class _Inner:
    """The inner select's projections: each row-level expression once, by its SQL."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.projections: list[exp.Expr] = []
        self.names: dict[str, str] = {}

    def ref(self, node: exp.Expr) -> exp.Column:
        """Move ``node`` into the inner select (once per distinct SQL); a column for it."""
        text = node.sql(dialect="duckdb")
        name = self.names.get(text)
        if name is None:
            name = self.names[text] = self.state.fresh("x")
            # The node itself moves (not a copy): table references inside it stay the
            # ones the later rules replace with the scenario's views.
            if node.parent is not None:
                node.pop()
            self.projections.append(exp.alias_(node, name))
        return exp.column(name)

    def add(self, node: exp.Expr, stem: str) -> exp.Column:
        name = self.state.fresh(stem)
        self.projections.append(exp.alias_(node, name))
        return exp.column(name)


def _clamped(column: exp.Expr, bounds: tuple[float, float]) -> exp.Expr:
    """CASE, not least/greatest: DuckDB's least(NULL, x) is x, a NULL must stay NULL."""
    lower, upper = (exp.Literal.number(b) for b in bounds)
    value = exp.TryCast(this=column, to=exp.DataType.build("DOUBLE"))
    return exp.Case(ifs=[exp.If(this=exp.LT(this=value.copy(), expression=lower.copy()),
                                true=exp.TryCast(this=lower, to=exp.DataType.build("DOUBLE"))),
                         exp.If(this=exp.GT(this=value.copy(), expression=upper.copy()),
                                true=exp.TryCast(this=upper, to=exp.DataType.build("DOUBLE")))],
                    default=value)


class _Outer:
    """Builds the outer select and the noise plan from the user's outer select."""

    def __init__(self, state: State, noise: Noise, query: exp.Select) -> None:
        self.state, self.noise, self.query = state, noise, query
        self.inner = _Inner(state)
        self.select: list[exp.Expr] = []
        self.group: dict[str, exp.Column] = {}
        self.outputs: list[str | NoisyOutput] = []
        self.conditions: list[exp.Expr] = []  # rows each noisy statistic used (group size)

    def key(self, node: exp.Expr, name: str) -> None:
        if not any(True for _ in node.find_all(exp.Column)):
            self.select.append(exp.alias_(node.copy(), name))  # a constant
        else:
            ref = self.inner.ref(node)
            self.group[ref.name] = ref
            self.select.append(exp.alias_(ref.copy(), name))
        self.outputs.append(name)

    def statistic(self, node: exp.Expr, name: str) -> None:
        call, where = (node.this, node.expression.this) if isinstance(node, exp.Filter) \
            else (node, None)
        condition = self.inner.ref(where) if where is not None else None
        if isinstance(call, exp.Count) and not isinstance(call.this, exp.Distinct):
            value = None if isinstance(call.this, exp.Star) or call.this is None \
                else self.inner.ref(call.this)
            counted: exp.Expr = exp.Star() if value is None else value
            rows = self._hidden(exp.Count(this=counted), condition)
            self._used(value, condition)
            self.outputs.append(NoisyOutput(name, Statistic.rows, count_column=rows))
            return
        if isinstance(call, (exp.Sum, exp.Avg)) and not isinstance(call.this, exp.Distinct):
            column = call.this.unnest() if isinstance(call.this, exp.Paren) else call.this
            bounds = self.noise.clamp.get(column.name) if isinstance(column, exp.Column) \
                else None
            if bounds is None:
                raise reject(CODE, f"{snippet(call)}: with noise, sum and avg take one column "
                             "that the scenario's noise.clamp bounds (bounded columns: "
                             f"{', '.join(sorted(self.noise.clamp)) or 'none'})", call)
            value = self.inner.ref(_clamped(column.copy(), bounds))
            total = self._hidden(exp.Sum(this=value), condition)
            count: str | None = self._hidden(exp.Count(this=value.copy()), condition) \
                if isinstance(call, exp.Avg) else None
            self._used(value, condition)
            kind = Statistic.mean if isinstance(call, exp.Avg) else Statistic.total
            self.outputs.append(NoisyOutput(name, kind, sum_column=total, count_column=count,
                                            bounds=bounds))
            return
        raise reject(CODE, f"{function_name(call)}(...) cannot be released with noise: its "
                     "sensitivity is not bounded here; use count, sum or avg (FILTER "
                     "allowed), one per output column", call)

    def _hidden(self, aggregate: exp.Expr, condition: exp.Column | None) -> str:
        if condition is not None:
            aggregate = exp.Filter(this=aggregate, expression=exp.Where(this=condition.copy()))
        name = self.state.fresh("v")
        self.select.append(exp.alias_(aggregate, name))
        self.state.hidden_columns.append(name)
        return name

    def _used(self, value: exp.Column | None, condition: exp.Column | None) -> None:
        parts: list[exp.Expr] = [] if value is None else [
            exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null()))]
        parts += [condition.copy()] if condition is not None else []
        if parts:
            self.conditions.append(exp.and_(*parts) if len(parts) > 1 else parts[0])

    def group_size(self, entities: list[exp.Column]) -> exp.Expr:
        """Least distinct-entity count over the group and the rows each statistic used."""
        terms: list[exp.Expr] = []
        for entity in entities:
            terms.append(exp.Count(this=exp.Distinct(expressions=[entity.copy()])))
            for condition in self.conditions:
                only = exp.Case(ifs=[exp.If(this=condition.copy(), true=entity.copy())])
                terms.append(exp.Count(this=exp.Distinct(expressions=[only])))
        return terms[0] if len(terms) == 1 else exp.Anonymous(this="least", expressions=terms)


def _group_keys(query: exp.Select, projections: list[exp.Expr]) -> list[exp.Expr]:
    """GROUP BY keys as expressions: positions and select aliases resolved."""
    group = query.args.get("group")
    keys: list[exp.Expr] = []
    aliases = {p.alias.lower(): p.this for p in projections if isinstance(p, exp.Alias)}
    for key in group.expressions if group is not None else []:
        if isinstance(key, exp.Literal) and not key.is_string:
            keys.append(projections[int(key.name) - 1].unalias())
        elif isinstance(key, exp.Column) and not key.table and key.name.lower() in aliases:
            keys.append(aliases[key.name.lower()])
        else:
            keys.append(key)
    return keys


def _ordering(query: exp.Select, projections: list[exp.Expr], names: list[str]
              ) -> tuple[Ordering, ...]:
    order = query.args.get("order")
    out: list[Ordering] = []
    texts = [p.unalias().sql(dialect="duckdb").lower() for p in projections]
    lowered = [n.lower() for n in names]
    for ordered in order.expressions if order is not None else []:
        key, desc = ordered.this, bool(ordered.args.get("desc"))
        if isinstance(key, exp.Var) and key.name.upper() == "ALL":
            out += [Ordering(i, desc) for i in range(len(names))]
        elif isinstance(key, exp.Literal) and not key.is_string:
            out.append(Ordering(int(key.name) - 1, desc))
        elif isinstance(key, exp.Column) and not key.table and key.name.lower() in lowered:
            out.append(Ordering(lowered.index(key.name.lower()), desc))
        elif key.sql(dialect="duckdb").lower() in texts:
            out.append(Ordering(texts.index(key.sql(dialect="duckdb").lower()), desc))
        else:
            raise reject(CODE, f"ORDER BY {snippet(key)}: with noise, sort by an output "
                         "column's name or position", key)
    return tuple(out)


def _limit(query: exp.Select) -> int | None:
    limit = query.args.get("limit")
    if limit is None:
        return None
    value = limit.expression
    if type(limit) is exp.Limit and isinstance(value, exp.Literal) and value.name.isdigit():
        return int(value.name)
    raise reject(CODE, "with noise, LIMIT takes a plain number (it is applied after the noise)",
                 limit)


def _check_shape(state: State) -> exp.Select:
    query = state.query
    while isinstance(query, exp.Subquery) and not query.alias:
        query = query.this
    if not isinstance(query, exp.Select):
        raise reject(CODE, "with noise, set operations are not supported: send each part as "
                     "its own query", query)
    for clause in ("having", "qualify", "offset", "distinct"):
        if query.args.get(clause) is not None:
            raise reject(CODE, f"{clause.upper()} is not supported with noise: it would act on "
                         "exact values; filter or deduplicate the noisy result yourself",
                         query.args[clause])
    return query


def bound_contributions(state: State) -> None:
    noise = state.ctx.scenario.noise
    if state.ctx.mode is not Mode.aggregate or noise is None or not state.entity_columns:
        return  # no noise, or only reference data (about no one): nothing to bound
    query = _check_shape(state)
    projections = [p for p in query.expressions if p.alias_or_name != GROUP_SIZE_COLUMN]
    names = [output_name(state, i, p) for i, p in enumerate(projections)]
    order_by, limit = _ordering(query, projections, names), _limit(query)
    keys = _group_keys(query, projections)
    outer = _Outer(state, noise, query)
    state.hidden_columns = [GROUP_SIZE_COLUMN]
    for projection, name in zip(projections, names, strict=True):
        node = projection.unalias()
        if not _has_aggregate(node):
            outer.key(node, name)
        elif isinstance(node, exp.Filter) or (isinstance(node, exp.Func)
                                               and is_aggregate_call(node)):
            outer.statistic(node, name)
        else:
            raise reject(CODE, f"{snippet(node)}: with noise, each output column is a group key "
                         "or one count/sum/avg; compute ratios, rounding and other functions "
                         "of the noisy results yourself", node)
    for key in keys:
        ref = outer.inner.ref(key)
        outer.group[ref.name] = ref
    cap = noise.max_rows_per_entity
    entities, kept = [], []
    for alias, column in state.entity_columns:
        entity = outer.inner.ref(exp.column(column, table=alias))
        number = exp.Window(this=exp.RowNumber(),
                            partition_by=[exp.column(column, table=alias)])
        kept.append(exp.LTE(this=outer.inner.add(number, "r"),
                            expression=exp.Literal.number(cap)))
        entities.append(entity)
    outer.select.append(exp.alias_(outer.group_size(entities), GROUP_SIZE_COLUMN))
    inner = exp.Select(expressions=outer.inner.projections)
    for clause in ("from_", "joins", "where"):
        if query.args.get(clause) is not None:
            inner.set(clause, query.args[clause])
    rebuilt = exp.Select(expressions=outer.select).from_(
        exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(INNER))),
        copy=False)
    rebuilt.set("where", exp.Where(this=exp.and_(*kept)))
    if outer.group:
        rebuilt.set("group", exp.Group(expressions=list(outer.group.values())))
    if query.args.get("with_") is not None:
        rebuilt.set("with_", query.args["with_"])
    state.tree = rebuilt
    state.noise = NoisePlan(outputs=tuple(outer.outputs), epsilon=noise.epsilon_per_query,
                            max_rows_per_entity=cap, order_by=order_by, limit=limit)
    clamps = ", ".join(f"{c} to [{lo:g}, {hi:g}]" for c, (lo, hi) in sorted(noise.clamp.items()))
    state.note("bound_contributions",
               f"noise: each entity contributes at most {cap} rows"
               + (f", summed values are clamped ({clamps})" if clamps else "")
               + f"; counts and sums get Laplace noise for epsilon {noise.epsilon_per_query:g} "
               "per query, charged to the agreement's budget; ORDER BY and LIMIT are applied "
               "after the noise")
