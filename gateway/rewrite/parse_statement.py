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

The parser and every rule recurse once per level of nesting, so a few KB of nested
parentheses or CASE would exhaust the stack: statements nesting deeper than
``max_nesting_depth`` levels (counted on the tokens before parsing, and on the tree after
it) are refused as ``too_complex``, and so is anything that still recurses too deep.

    >>> try:
    ...     parse("SELECT " + "(" * 100 + "1" + ")" * 100)
    ... except Exception as exc:
    ...     print(exc.code)
    too_complex
"""

from __future__ import annotations

import logging
import re
import unicodedata

from sqlglot import Token, TokenType, exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError

from gateway.errors import QueryRejected
from gateway.rewrite.context import MAX_NESTING_DEPTH, State, reject
from gateway.rewrite.name_outputs import record

MAX_SQL_CHARS = 100_000
# SELECTs in one statement, at most: 2,000 chained CTEs cost seconds of analysis before
# any other limit could refuse them.
MAX_SELECTS = 256
# Plain ASCII whitespace is fine; every other separator, control or format character
# (categories Z*, C*) is a parser differential waiting to happen.
_ASCII_SPACE = frozenset(" \t\n\r")
# Statements sqlglot cannot parse at all; named so the refusal says what it is.
NOT_QUERIES = frozenset({"EXPORT", "IMPORT", "INSTALL", "LOAD", "ATTACH", "DETACH", "COPY",
                         "CHECKPOINT", "VACUUM", "PRAGMA", "SET", "RESET", "CALL", "USE"})
QUERY_ROOTS = (exp.Select, exp.SetOperation, exp.Values)
# Tokens that open and close one level of nesting.
OPENERS = frozenset({TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE, TokenType.CASE})
CLOSERS = frozenset({TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE, TokenType.END})
# Tree levels one level of nesting may take: `(SELECT * FROM (` is Subquery, Select, From.
NODES_PER_LEVEL = 4
DUCKDB = Dialect.get_or_raise("duckdb")
# sqlglot warns on stderr when it falls back to an opaque Command; we reject those anyway.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _check_characters(sql: str) -> None:
    if len(sql) > MAX_SQL_CHARS:
        raise QueryRejected("parse_error", f"statement longer than {MAX_SQL_CHARS} characters")
    if sql.isascii() and not _ASCII_CONTROL.search(sql):
        return  # the common case, without a Python loop over every character
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


def too_complex(message: str, position: int | None = None) -> QueryRejected:
    return QueryRejected("too_complex", message + "; flatten it (CTEs, IN lists, one CASE "
                         "with several WHEN branches)", position=position)


def _check_nesting(tokens: list[Token], limit: int) -> None:
    """Refuse before parsing: parentheses, brackets, braces and CASE nested too deep."""
    depth = 0
    for token in tokens:
        if token.token_type in OPENERS:
            depth += 1
            if depth > limit:
                raise too_complex(f"the statement nests more than {limit} levels deep "
                                  f"(parentheses, brackets and CASE; at character "
                                  f"{token.start})", token.start)
        elif token.token_type in CLOSERS:
            depth = max(depth - 1, 0)


def tree_depth(tree: exp.Expr) -> int:
    """Levels of the tree; a chain ``a AND b AND c`` (left-deep) counts as one level, as
    DuckDB flattens it too (not ``a + b + c``: past 1000 terms DuckDB refuses that)."""
    deepest = 0
    stack: list[tuple[exp.Expr, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        for child in node.iter_expressions():
            chained = (isinstance(child, exp.Connector) and type(child) is type(node)
                       and child.arg_key == "this")
            stack.append((child, depth if chained else depth + 1))
    return deepest


def _check_tree(tree: exp.Expr, limit: int) -> None:
    levels = tree_depth(tree)
    if levels > limit * NODES_PER_LEVEL:
        raise too_complex(f"the statement's expressions nest {levels} levels deep (NOT, "
                          f"unary minus and other operators); at most "
                          f"{limit * NODES_PER_LEVEL} are accepted")


def parse(sql: str, max_depth: int = MAX_NESTING_DEPTH) -> exp.Query:
    """Parse ``sql`` (DuckDB dialect) into one query tree, or raise QueryRejected."""
    _check_characters(sql)
    try:
        tokens = DUCKDB.tokenize(sql)
        _check_nesting(tokens, max_depth)
        selects = sum(1 for t in tokens if t.token_type is TokenType.SELECT)
        if selects > MAX_SELECTS:
            raise too_complex(f"the statement has {selects} SELECTs (at most {MAX_SELECTS})")
        statements = [
            s for s in DUCKDB.parser().parse(tokens, sql)
            if s is not None and not isinstance(s, exp.Semicolon)  # `;` then a comment
        ]
        for statement in statements:
            _check_tree(statement, max_depth)
    except RecursionError:
        raise too_complex("the statement nests too deep to be analysed") from None
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
    state.tree = parse(state.sql, state.ctx.max_nesting_depth)
    state.output_names = record(state.tree)
