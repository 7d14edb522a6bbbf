"""Data passed into and out of the rewriter, and the working state rules share.

The rewriter is a pure function: policy objects and a salt in, SQL and an explanation
out. ``State`` is the mutable scratchpad the rules of one call pass along; it never
outlives the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlglot import exp

from gateway.errors import QueryRejected
from gateway.policy.models import Dataset, Limits, Mode, Scenario
from gateway.privacy.plan import NoisePlan

if TYPE_CHECKING:
    from gateway.rewrite.compile_aggregate import AggregateForm

# Every name the rewriter invents starts with this; users may not write it anywhere.
RESERVED_PREFIX = "__dsb"
# Hidden per-row column holding the number of distinct entities behind an output row.
GROUP_SIZE_COLUMN = "__dsb_n"
# Hidden per-row column: for each set of rows an aggregate of the row used, which
# entities (keyed hashes) contributed how many rows, and what was measured over them.
# Query auditing compares these with earlier releases; they never leave the gateway.
SETS_COLUMN = "__dsb_sets"
MIN_SALT_CHARS = 16
REDACTED = "<salt>"
# Levels of parentheses, brackets, braces and CASE a statement may nest (the parser and
# every rule recurse per level); DSB_MAX_NESTING_DEPTH overrides it per installation.
MAX_NESTING_DEPTH = 64
# What a scenario that sets no ``limits.result_cells`` allows (cells of one result).
DEFAULT_RESULT_CELLS: int = Limits().result_cells


@dataclass(frozen=True)
class Change:
    """One thing the rewriter changed, in words a user understands."""

    rule: str
    message: str


@dataclass(frozen=True)
class RewriteContext:
    """The policy a statement is rewritten to.

    ``salt`` keys hash masks (one per agreement). It is secret: it appears only in
    ``Rewritten.sql``, never in what a user sees.
    """

    scenario: Scenario
    datasets: Mapping[str, Dataset]
    salt: str
    # Statements nesting deeper than this many levels are refused (``too_complex``).
    max_nesting_depth: int = MAX_NESTING_DEPTH

    def __post_init__(self) -> None:
        # A short salt could also occur in innocent text, and redaction would miss it.
        if len(self.salt) < MIN_SALT_CHARS:
            raise ValueError(f"the mask salt must have at least {MIN_SALT_CHARS} characters")
        missing = sorted(set(self.scenario.datasets) - set(self.datasets))
        if missing:
            raise ValueError(f"policy objects missing for datasets: {', '.join(missing)}")

    @property
    def mode(self) -> Mode:
        return self.scenario.mode


@dataclass(frozen=True)
class Rewritten:
    """An accepted statement, ready to execute, with everything the post-check needs."""

    sql: str
    display_sql: str
    explanation: list[Change]
    datasets: tuple[str, ...]
    mode: Mode
    k: int | None
    max_rows: int
    # Cells the released result may hold (nested values counted element by element).
    result_cells: int = DEFAULT_RESULT_CELLS
    hidden_columns: tuple[str, ...] = ()
    allowed_columns: frozenset[str] = frozenset()
    forbidden_columns: frozenset[str] = frozenset()
    # Output columns that are group keys (labels for auditing messages).
    key_columns: tuple[str, ...] = ()
    # Set when the result carries ``SETS_COLUMN`` for query auditing.
    audited: bool = False
    # Set in a scenario with noise: how the released columns are made noisy.
    noise: NoisePlan | None = None
    # Aggregate mode: what each released value is computed from (``dsb sql explain``).
    form: AggregateForm | None = None


@dataclass
class DatasetRef:
    """One occurrence of a dataset in FROM/JOIN (a ``Table`` node of the user's tree)."""

    node: exp.Table
    dataset_id: str
    index: int
    hidden: str | None = None  # hidden entity column, aggregate mode only


@dataclass
class State:
    """Scratchpad the rules of one ``rewrite`` call share."""

    sql: str
    ctx: RewriteContext
    tree: exp.Query | None = None
    refs: list[DatasetRef] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    hidden_columns: list[str] = field(default_factory=list)
    # Aggregate mode, outer select: (source alias, hidden entity column) it reads.
    entity_columns: list[tuple[str, str]] = field(default_factory=list)
    key_columns: list[str] = field(default_factory=list)
    noise: NoisePlan | None = None
    # Aggregate mode: the compiled form of the query (``compile_aggregate``).
    form: AggregateForm | None = None
    # The outer query's output names, fixed from the user's text right after parsing
    # (``name_outputs``); None where a star or COLUMNS(...) expands to view columns.
    output_names: list[str | None] = field(default_factory=list)
    counter: int = 0

    def note(self, rule: str, message: str) -> None:
        change = Change(rule, message)
        if change not in self.changes:
            self.changes.append(change)

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{RESERVED_PREFIX}_{stem}{self.counter}"

    @property
    def query(self) -> exp.Query:
        assert self.tree is not None, "parse_statement runs first"
        return self.tree

    @property
    def used_datasets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(ref.dataset_id for ref in self.refs))


def position(node: exp.Expr) -> int | None:
    """Character offset of ``node`` in the user's SQL, if the parser recorded one."""
    for sub in node.walk():
        meta = sub.meta if isinstance(sub, exp.Expr) else {}
        if "start" in meta:
            return int(meta["start"])
    return None


def snippet(node: exp.Expr, limit: int = 80) -> str:
    text = node.sql(dialect="duckdb", comments=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def normal(node: exp.Expr) -> str:
    """SQL of an expression with table qualifiers dropped, for matching expressions."""
    def strip(n: exp.Expr) -> exp.Expr:
        return exp.column(n.name) if isinstance(n, exp.Column) and n.table else n
    return node.transform(strip).sql(dialect="duckdb").lower()


def reject(code: str, message: str, node: exp.Expr | None = None) -> QueryRejected:
    """Build the rejection for ``node``; the message names it and where it is."""
    pos = position(node) if node is not None else None
    where = f" (at character {pos})" if pos is not None else ""
    return QueryRejected(code, message + where, position=pos)
