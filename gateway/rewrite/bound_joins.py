"""Rule (aggregate mode): no join multiplies rows many-to-many.

``flights f1 JOIN flights f2 ON f1.carrier = f2.carrier JOIN flights f3 ON ...`` turns
one row into billions: with the first table narrowed to one flight by a condition on a
hidden value, the job times out or answers at once, and the timeout is the answer. So
each join must match at most one row on one of its sides: it equates all columns of a
key that side declares unique (``unique_keys`` in the dataset policy: planes by
``tailnum``, weather by ``origin`` and ``time_hour``), or all group keys of an
aggregated subquery or CTE on that side. Joining flights to planes, airlines, airports
or weather is many-to-one; flights to flights on a carrier is refused with
``forbidden_join``.

    >>> from gateway.rewrite.parse_statement import parse
    >>> pairs = equated(parse("SELECT 1 FROM a JOIN b ON a.x = b.y AND b.z > 1").args["joins"][0])
    >>> sorted((l.sql(), r.sql()) for l, r in pairs)
    [('a.x', 'b.y')]
"""

from __future__ import annotations

from sqlglot import exp

from gateway.policy.models import Mode
from gateway.rewrite.context import State, reject, snippet


def equated(join: exp.Join) -> list[tuple[exp.Column, exp.Column]]:
    """Pairs of columns the join's ON condition sets equal (in its AND-ed terms)."""
    on = join.args.get("on")
    if on is None:
        return []
    terms = list(on.flatten()) if isinstance(on, exp.And) else [on]
    pairs = []
    for term in terms:
        while isinstance(term, exp.Paren):
            term = term.this
        if isinstance(term, exp.EQ) and isinstance(term.this, exp.Column) \
                and isinstance(term.expression, exp.Column):
            pairs.append((term.this, term.expression))
    return pairs


class Joins:
    def __init__(self, state: State) -> None:
        self.state = state
        self.refs = {id(r.node): r for r in state.refs}

    def _ctes(self, node: exp.Expr) -> dict[str, exp.Expr]:
        found: dict[str, exp.Expr] = {}
        scope: exp.Expr | None = node
        while scope is not None:
            with_ = scope.args.get("with_") if isinstance(scope, exp.Query) else None
            for cte in with_.expressions if isinstance(with_, exp.With) else []:
                found.setdefault(cte.alias_or_name.lower(), cte.this)
            scope = scope.parent
        return found

    def unique_on(self, source: exp.Expr, names: set[str]) -> bool:
        """True when ``source`` (a FROM or JOIN item) has at most one row per value of
        the columns ``names``: a dataset by its declared keys, an aggregated subquery by
        its group keys, a subquery that renames one source by that source's keys."""
        if isinstance(source, exp.Table):
            ref = self.refs.get(id(source))
            if ref is not None:
                dataset = self.state.ctx.datasets[ref.dataset_id]
                return any(set(key) <= names for key in dataset.unique_keys)
            inner = self._ctes(source).get(source.name.lower())
        elif isinstance(source, exp.Subquery):
            inner = source.this
        else:
            return False
        while isinstance(inner, exp.Subquery):
            inner = inner.this
        if not isinstance(inner, exp.Select):
            return False
        group = inner.args.get("group")
        if group is None:
            return self._passes_through(inner, names)
        keys = set()
        for key in group.expressions:
            output = next((p for p in inner.selects if p.unalias() == key), None)
            if output is None:
                return False
            keys.add(output.alias_or_name.lower())
        return bool(keys) and keys <= names

    def _passes_through(self, inner: exp.Select, names: set[str]) -> bool:
        """A subquery that only renames the columns of one source keeps its keys."""
        from_ = inner.args.get("from_")
        if from_ is None or inner.args.get("joins") or inner.args.get("distinct"):
            return False
        underlying: set[str] = set()
        for name in names:
            output = next((p for p in inner.selects if p.alias_or_name.lower() == name), None)
            column = output.unalias() if output is not None else None
            if not isinstance(column, exp.Column):
                return False
            underlying.add(column.name.lower())
        return self.unique_on(from_.this, underlying)

    def check(self, select: exp.Select) -> None:
        from_ = select.args.get("from_")
        sources: dict[str, exp.Expr] = {}
        # Sources whose rows appear at most once in the rows joined so far. A table joined
        # as the "one" side (planes by tailnum) repeats once per flight, so it no longer
        # vouches for a later join: flights f JOIN planes p ... JOIN flights f2 ON
        # f2.tailnum = p.tailnum pairs every flight of an aircraft with every other.
        once: set[str] = set()
        if from_ is not None:
            sources[from_.this.alias_or_name.lower()] = from_.this
            once.add(from_.this.alias_or_name.lower())
        for join in select.args.get("joins") or []:
            right = join.this
            name = right.alias_or_name.lower()
            using = {i.name.lower() for i in join.args.get("using") or []}
            if using:
                theirs = {t: using for t in sources}
                mine = using
            else:
                mine = set()
                theirs = {}
                for left, other in equated(join):
                    for a, b in ((left, other), (other, left)):
                        if a.table.lower() == name and b.table.lower() != name:
                            mine.add(a.name.lower())
                            theirs.setdefault(b.table.lower(), set()).add(b.name.lower())
            ok = self.unique_on(right, mine)
            if not ok and any(table in once and table in sources
                              and self.unique_on(sources[table], cols)
                              for table, cols in theirs.items()):
                # The new table is the "many" side: now only its rows appear once.
                ok, once = True, {name}
            if not ok:
                raise reject("forbidden_join",
                             f"{snippet(join)} could match many rows to many: in aggregate "
                             "mode one side of each join must be matched on a key it declares "
                             "unique (such as planes.tailnum, airports.faa, weather.origin and "
                             "weather.time_hour) or on all group keys of an aggregated "
                             "subquery; a many-to-many join can multiply a row a billion "
                             "times, and the timeout would be an answer", join)
            sources[name] = right


def bound_joins(state: State) -> None:
    if state.ctx.mode is not Mode.aggregate:
        return
    joins = Joins(state)
    for select in state.query.find_all(exp.Select):
        if select.args.get("joins"):
            joins.check(select)
