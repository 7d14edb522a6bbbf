"""Rule (aggregate mode): casts cannot fail, so errors do not reveal values.

``CAST(x AS INTEGER)`` raises on a value that does not convert; a query can put such a
cast behind a condition on one person's row and read the answer from "error or not".
``TRY_CAST`` gives NULL instead. (Other data-dependent errors remain: see the report.)

    >>> from gateway.rewrite.parse_statement import parse
    >>> soften(parse("SELECT CAST(a AS INT) FROM t")).sql()
    'SELECT TRY_CAST(a AS INT) FROM t'
"""

from __future__ import annotations

from sqlglot import exp

from gateway.policy.models import Mode
from gateway.rewrite.context import State


def soften(tree: exp.Expr) -> exp.Expr:
    changed = False
    for cast in list(tree.find_all(exp.Cast)):
        if type(cast) is exp.Cast:
            cast.replace(exp.TryCast(this=cast.this, to=cast.args["to"]))
            changed = True
    tree.meta["softened"] = changed
    return tree


def soften_errors(state: State) -> None:
    if state.ctx.mode is not Mode.aggregate:
        return
    if soften(state.query).meta.get("softened"):
        state.note("soften_errors", "casts made non-failing (TRY_CAST): a value that does not "
                   "convert gives NULL instead of an error")
