"""Rule: exactly one statement, and it is a query.

    >>> from gateway.rewrite.parse_statement import parse
    >>> parse("SELECT 1;").sql()
    'SELECT 1'
    >>> try:
    ...     parse("DROP TABLE flights")
    ... except Exception as exc:
    ...     print(exc.code)
    not_a_query

Characters that DuckDB treats as whitespace but sqlglot does not (U+200B, U+00A0, ...)
are refused before parsing: the executed SQL is regenerated from sqlglot's tree, and
the two parsers must never disagree on where a token ends.
"""

from __future__ import annotations

import logging
import unicodedata

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from gateway.errors import QueryRejected
from gateway.rewrite.context import State, reject

MAX_SQL_CHARS = 100_000
# Plain ASCII whitespace is fine; every other separator, control or format character
# (categories Z*, C*) is a parser differential waiting to happen.
_ASCII_SPACE = frozenset(" \t\n\r")
# Statements sqlglot cannot parse at all; named so the refusal says what it is.
NOT_QUERIES = frozenset({"EXPORT", "IMPORT", "INSTALL", "LOAD", "ATTACH", "DETACH", "COPY",
                         "CHECKPOINT", "VACUUM", "PRAGMA", "SET", "RESET", "CALL", "USE"})
QUERY_ROOTS = (exp.Select, exp.SetOperation, exp.Values)
# sqlglot warns on stderr when it falls back to an opaque Command; we reject those anyway.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


def _check_characters(sql: str) -> None:
    if len(sql) > MAX_SQL_CHARS:
        raise QueryRejected("parse_error", f"statement longer than {MAX_SQL_CHARS} characters")
    for offset, char in enumerate(sql):
        if char in _ASCII_SPACE:
            continue
        category = unicodedata.category(char)
        if category[0] in "ZC":
            name = unicodedata.name(char, "unnamed")
            raise QueryRejected(
                "parse_error",
                f"character U+{ord(char):04X} ({name}) at character {offset} is not allowed; "
                "use plain spaces and newlines",
                position=offset,
            )


def parse(sql: str) -> exp.Query:
    """Parse ``sql`` (DuckDB dialect) into one query tree, or raise QueryRejected."""
    _check_characters(sql)
    try:
        statements = [
            s for s in sqlglot.parse(sql, read="duckdb")
            if s is not None and not isinstance(s, exp.Semicolon)  # `;` then a comment
        ]
    except (ParseError, TokenError) as exc:
        words = sql.split(None, 1)
        if words and words[0].upper() in NOT_QUERIES:
            raise QueryRejected("not_a_query", f"only queries are accepted, not {words[0].upper()}",
                                position=0) from None
        errors = getattr(exc, "errors", None) or [{}]
        first = errors[0]
        message = str(first.get("description") or exc).splitlines()[0]
        pos = first.get("start_context")
        raise QueryRejected(
            "parse_error",
            f"cannot parse the statement: {message}"
            + (f" (line {first['line']}, column {first['col']})" if "line" in first else ""),
            position=len(pos) if isinstance(pos, str) else None,
        ) from None
    if not statements:
        raise QueryRejected("parse_error", "empty statement")
    if len(statements) > 1:
        raise reject(
            "multiple_statements",
            f"send one statement at a time ({len(statements)} found)",
            statements[1],
        )
    root = statements[0]
    while isinstance(root, exp.Subquery) and not root.args.get("alias"):
        root = root.this  # a parenthesised query is still a query
    if not isinstance(root, QUERY_ROOTS):
        kind = root.key.upper() if not isinstance(root, exp.Command) else str(root.this).upper()
        raise reject(
            "not_a_query",
            "only queries are accepted (SELECT, WITH, VALUES, set operations), not " + kind,
            root,
        )
    if isinstance(root, exp.Values):
        # Bare VALUES: give it a SELECT so every later rule sees one shape of query.
        alias = exp.TableAlias(this=exp.to_identifier("v"))
        return exp.select("*").from_(exp.Subquery(this=root, alias=alias))
    assert isinstance(root, exp.Query)
    return root


def parse_statement(state: State) -> None:
    state.tree = parse(state.sql)
