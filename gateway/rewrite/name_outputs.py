"""Rule (last): the result's column names are the user's, never the engine's.

DuckDB names an unaliased projection by its SQL text as it executes it: after the
rewrite that text can hold the scenario's views, a mask and its salt (and a salted hash
is reversed by dictionary once the salt is known). So the names are fixed from the
statement as the user wrote it, before any rule changes it:

- a projection's alias; else a plain column's name; else the user's own expression
  text, printed as DuckDB prints it (function names in lower case);
- ``*``, ``t.*``, ``#n`` and ``COLUMNS(...)`` expand to columns of the scenario's
  views, whose names are safe: they stay unnamed (``None``);
- a set operation is named by its left-most branch, as SQL does.

``record`` runs right after parsing (``parse_statement``); ``name_outputs`` runs after
every other rule and aliases the outermost select's projections (the left-most branch;
inside the wrapper ``cap_rows`` may add) to the recorded names. Unaliased projections
of inner selects (subqueries, CTEs, the other branches of a set operation) are marked
at parse time and get their own text as alias too: ``SELECT *`` over a subquery and
``UNION BY NAME`` take their names from there.

    >>> from gateway.rewrite.parse_statement import parse
    >>> output_names(parse("SELECT count(*), Avg(f.dep_delay) AS d, f.carrier, * FROM flights f"))
    ['count(*)', 'd', 'carrier', None]
    >>> output_names(parse("(SELECT upper(x) FROM a) UNION SELECT y FROM b"))
    ['upper(x)']
"""

from __future__ import annotations

from sqlglot import exp

from gateway.rewrite.cap_rows import CAPPED
from gateway.rewrite.context import RESERVED_PREFIX, State

USER_NAME = "dsb_user_name"  # projection.meta: the name the user's own text gives it


def user_text(node: exp.Expr) -> str:
    """The user's expression as DuckDB prints a column name: lower-case function names."""
    return node.sql(dialect="duckdb", normalize_functions="lower", comments=False)


def expands(projection: exp.Expr) -> bool:
    """A star, ``t.*``, ``#n`` or anything with COLUMNS(...): named by the views' columns."""
    node = projection.unalias()
    if isinstance(node, (exp.Star, exp.PositionalColumn)):
        return True
    if isinstance(node, exp.Column) and isinstance(node.this, exp.Star):
        return True
    return node.find(exp.Columns) is not None


def user_name(projection: exp.Expr) -> str | None:
    """Alias, else column name, else the user's text; None for an expansion."""
    if expands(projection):
        return None
    if isinstance(projection, exp.Alias):
        return projection.alias
    if isinstance(projection, exp.Column):
        return projection.name
    return user_text(projection)


def leftmost(query: exp.Expr) -> exp.Select | None:
    """The select that names a query's columns: set operations name by their left branch."""
    node = query
    while isinstance(node, (exp.SetOperation, exp.Subquery)):
        node = node.this
    return node if isinstance(node, exp.Select) else None


def output_names(query: exp.Expr) -> list[str | None]:
    select = leftmost(query)
    return [user_name(p) for p in select.expressions] if select is not None else []


def _mark_inner(query: exp.Expr) -> None:
    for select in query.find_all(exp.Select):
        for projection in select.expressions:
            if not isinstance(projection, (exp.Alias, exp.Column)) and not expands(projection):
                projection.meta[USER_NAME] = user_text(projection)


def record(query: exp.Expr) -> list[str | None]:
    """Right after parsing: mark every select's projections; the outer query's names."""
    _mark_inner(query)
    return output_names(query)


def _outermost(query: exp.Expr) -> exp.Select | None:
    """The select naming the result, inside ``cap_rows``' ``SELECT * FROM (...)``."""
    select = leftmost(query)
    source = select.args.get("from_") if select is not None else None
    inner = source.this if isinstance(source, exp.From) else None
    if isinstance(inner, exp.Subquery) and inner.alias == CAPPED:
        return _outermost(inner.this)
    return select


def _hidden(projection: exp.Expr) -> bool:
    return projection.alias_or_name.startswith(RESERVED_PREFIX)


def _pairs(visible: list[exp.Expr], names: list[str | None]
           ) -> list[tuple[exp.Expr, str | None]]:
    """Projections and recorded names by position; around expansions, from both ends."""
    if len(visible) == len(names):
        return list(zip(visible, names, strict=True))
    if None not in names:
        return []  # a rule changed the projections: names come from the marks only
    first = names.index(None)
    tail = names[len(names) - names[::-1].index(None):]
    if len(visible) < first + len(tail):
        return []
    pairs = list(zip(visible[:first], names[:first], strict=True))
    return pairs + list(zip(visible[len(visible) - len(tail):], tail, strict=True))


# Clauses of a select (or set operation) that may name its outputs by alias.
ALIAS_CLAUSES = ("group", "having", "qualify", "order", "distinct")


def _references(query: exp.Expr, name: str) -> list[exp.Column]:
    """Unqualified columns called ``name`` in ``query``'s own clauses (not subqueries)."""
    found: list[exp.Column] = []
    stack = [query.args[c] for c in ALIAS_CLAUSES if isinstance(query.args.get(c), exp.Expr)]
    while stack:
        node = stack.pop()
        if isinstance(node, exp.Column) and not node.table and node.name.lower() == name:
            found.append(node)
        elif not isinstance(node, exp.Query):
            stack.extend(node.iter_expressions())
    return found


def _rename_references(select: exp.Select, old: str, new: str) -> None:
    """An alias a rule made (``_col_1``) may be referenced by ORDER BY or HAVING, of the
    select or of the set operations it names."""
    node: exp.Expr | None = select
    while node is not None and (node is select or isinstance(node, exp.SetOperation)):
        for column in _references(node, old.lower()):
            column.set("this", exp.to_identifier(new, quoted=True))
        parent = node.parent
        while isinstance(parent, exp.Subquery) and not parent.alias:
            parent = parent.parent
        node = parent


def _set_name(select: exp.Select, projection: exp.Expr, name: str) -> str:
    """Alias ``projection`` (of ``select``) to ``name``; its previous output name."""
    before = projection.alias_or_name
    if isinstance(projection, exp.Alias):
        projection.set("alias", exp.to_identifier(name, quoted=True))
        if before and before != name:
            _rename_references(select, before, name)
    elif not (isinstance(projection, exp.Column) and projection.name == name):
        alias = exp.Alias(alias=exp.to_identifier(name, quoted=True))
        projection.replace(alias)
        alias.set("this", projection)
    return before


def _name_marked(query: exp.Expr) -> None:
    """Every still unaliased projection the user wrote gets its own text as alias."""
    for select in list(query.find_all(exp.Select)):
        for projection in list(select.expressions):
            name = projection.meta.get(USER_NAME)
            if name is not None and not isinstance(projection, exp.Alias):
                _set_name(select, projection, name)


def output_name(state: State, index: int, projection: exp.Expr) -> str:
    """The released name of the outer query's ``index``-th column (e.g. for a noise plan)."""
    names = state.output_names
    recorded = names[index] if index < len(names) else None
    return recorded or projection.alias_or_name or user_text(projection)


def name_outputs(state: State) -> None:
    if state.noise is not None:
        return  # the noise plan releases its columns under the recorded names
    select = _outermost(state.query)
    if select is not None:
        visible = [p for p in select.expressions if not _hidden(p)]
        renamed: dict[str, str] = {}
        for projection, name in _pairs(visible, state.output_names):
            if name is not None:
                renamed[_set_name(select, projection, name)] = name
        state.key_columns = [renamed.get(k, k) for k in state.key_columns]
    _name_marked(state.query)
