"""Rule: every node of the tree is plain query syntax from an allow-list.

Functions are left to ``check_functions``; everything else that is not listed in
``allowlists.SYNTAX`` (PIVOT, TABLESAMPLE, lambdas, JSON arrows, parameters, ...) is
refused, so a construct sqlglot learns tomorrow is refused until someone reviews it.

    >>> from gateway.rewrite.parse_statement import parse
    >>> try:
    ...     check_tree(parse("SELECT * FROM t PIVOT (sum(x) FOR y IN ('a'))"), aggregate=False)
    ... except Exception as exc:
    ...     print(exc.code)
    forbidden_syntax
"""

from __future__ import annotations

import re

from sqlglot import exp

from gateway.policy.models import Mode
from gateway.rewrite.allowlists import RECORDS_ONLY_SYNTAX, SYNTAX
from gateway.rewrite.context import State, reject, snippet

_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Only the clauses sqlglot fills for an ordinary table reference.
TABLE_ARGS = frozenset({"this", "alias", "db", "catalog"})


def check_tree(tree: exp.Expr, *, aggregate: bool) -> None:
    for node in tree.walk():
        kind = type(node)
        if isinstance(node, exp.Func) and kind not in SYNTAX:
            continue  # check_functions decides
        if kind not in SYNTAX:
            raise reject("forbidden_syntax",
                         f"{node.key.upper()} is not allowed here ({snippet(node)})", node)
        if aggregate and kind in RECORDS_ONLY_SYNTAX:
            what = "window functions" if kind in (exp.Window, exp.WindowSpec) else node.key.upper()
            code = "row_level_aggregate" if kind is exp.Window else "forbidden_syntax"
            raise reject(code, f"{what} are not allowed in aggregate mode ({snippet(node)})", node)
        if isinstance(node, exp.With) and node.args.get("recursive"):
            # A recursive step that appends each next record to a running text packed
            # the whole table into a hundred rows (red team round 8).
            raise reject("forbidden_syntax", "WITH RECURSIVE is not allowed: a recursion "
                         "can fold any number of rows into one; use plain CTEs", node)
        if isinstance(node, exp.Var) and not _VAR.match(node.name):
            raise reject("forbidden_syntax", f"unexpected keyword {node.name!r}", node)
        if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.USERDEFINED:
            raise reject("forbidden_syntax", f"unknown type {snippet(node)}", node)
        if isinstance(node, exp.Table):
            extra = sorted(k for k, v in node.args.items() if v and k not in TABLE_ARGS)
            if extra:
                raise reject("forbidden_syntax", f"table modifiers ({', '.join(extra)}) "
                             f"are not allowed: {snippet(node)}", node)
        if isinstance(node, exp.Join) and node.args.get("method"):
            method = str(node.args["method"]).upper()
            if aggregate or method not in {"NATURAL", "POSITIONAL", "ASOF"}:
                raise reject("forbidden_join",
                             f"{method} JOIN is not allowed in this mode ({snippet(node)})", node)


def check_syntax(state: State) -> None:
    check_tree(state.query, aggregate=state.ctx.mode is Mode.aggregate)
