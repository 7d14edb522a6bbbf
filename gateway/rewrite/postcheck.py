"""Defence in depth: check an executed result again before it is released.

The rewriter already guarantees these properties; the post-check makes a bug in it
fail closed instead of leaking:

- no column named like a column the scenario does not allow, nor any other hidden
  (``__dsb*``) column than the rewriter's own bookkeeping ones;
- aggregate mode: rows whose hidden group size ``__dsb_n`` is below ``k`` (or missing)
  are dropped and counted; the hidden column is stripped;
- at most ``max_rows`` rows (records mode fetches one more, to know it was cut), a row
  holding a LIST or MAP of n values counting as n rows;
- at most ``result_cells`` cells, counted element by element: a LIST of n values is n
  cells, a STRUCT its fields, a MAP its keys and values, recursively (a NULL, an empty
  list, a scalar: one). ``list(t)`` packs a whole table into one row: the result is cut
  to the rows that fit, and withheld if not even its first row fits. In aggregate mode
  a nested column (LIST, STRUCT, MAP, UNION) is refused outright: one released value
  could carry the rows of a whole group.

The streaming path post-checks batch by batch and passes one ``Allowance`` along, so
the row and cell caps hold across batches.

    >>> import pyarrow as pa
    >>> # postcheck(pa.table({"carrier": ["AA", "ZZ"], "__dsb_n": [40, 2]}), rewritten_k5)
    >>> # -> Released(table=<carrier: ["AA"]>, suppressed_groups=1, truncated=False)
    >>> row_cells(pa.table({"a": [1, None], "b": [[1, 2, 3], None]})).tolist()
    [4, 2]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gateway.errors import ResultWithheld
from gateway.policy.models import Mode
from gateway.rewrite.context import GROUP_SIZE_COLUMN, RESERVED_PREFIX, Rewritten


@dataclass(frozen=True)
class Released:
    table: pa.Table
    suppressed_groups: int
    truncated: bool
    # The stripped bookkeeping columns of the released rows (same order): query
    # auditing reads the entity sets there. Never sent to the user.
    hidden: pa.Table | None = None


@dataclass
class Allowance:
    """What one result may still release. The streaming path passes the same one to the
    post-check of each batch, so the caps hold for the result as a whole."""

    rows: int
    cells: int
    released_rows: int = 0

    @classmethod
    def of(cls, rewritten: Rewritten) -> Allowance:
        return cls(rows=rewritten.max_rows, cells=rewritten.result_cells)

    @property
    def spent(self) -> bool:
        return self.rows <= 0 or self.cells <= 0


def _fail(message: str) -> ResultWithheld:
    return ResultWithheld(f"result withheld by the post-check: {message}")


def _python_cells(value: Any) -> int:
    if isinstance(value, dict):
        return max(1, sum(_python_cells(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return max(1, sum(_python_cells(v) for v in value))
    return 1


def _array_cells(array: pa.Array) -> np.ndarray:
    """Cells of each value of ``array``: nested values element by element, at least 1."""
    kind, n = array.type, len(array)
    if not pa.types.is_nested(kind):
        return np.ones(n, dtype=np.int64)
    if pa.types.is_struct(kind):
        counts = np.zeros(n, dtype=np.int64)
        for field in array.flatten():
            counts += _array_cells(field)
    elif pa.types.is_union(kind):  # rare: counted value by value
        counts = np.array([_python_cells(v) for v in array.to_pylist()], dtype=np.int64)
    else:  # list, large list, fixed-size list, list view; a map is a list of entries
        lists = pa.ListArray.from_arrays(array.offsets, array.values) \
            if pa.types.is_map(kind) else array
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        inner = _array_cells(pc.list_flatten(lists))
        counts = np.bincount(parents, weights=inner, minlength=n).astype(np.int64)
    counts = np.maximum(counts, 1)
    if array.null_count:
        counts[array.is_null().to_numpy(zero_copy_only=False)] = 1
    return counts


def row_cells(table: pa.Table) -> np.ndarray:
    """Cells of each row of ``table`` (see the module's docstring)."""
    counts = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        if pa.types.is_nested(column.type):
            counts += np.concatenate([_array_cells(chunk) for chunk in column.chunks]
                                     or [np.zeros(0, dtype=np.int64)])
        else:
            counts += 1
    return counts


def row_weights(table: pa.Table) -> np.ndarray:
    """How many rows each row counts for against ``max_rows``: a LIST or MAP of n values
    counts n (``quantile_disc(x, [0, 0.001, ...])`` or ``max(x, 1000)`` held a thousand
    records in one row), other rows one."""
    weights = np.ones(table.num_rows, dtype=np.int64)
    for column in table.columns:
        kind = column.type
        if pa.types.is_nested(kind) and not pa.types.is_struct(kind):
            weights = np.maximum(weights, np.concatenate(
                [_array_cells(chunk) for chunk in column.chunks] or [np.zeros(0, np.int64)]))
    return weights


def _refuse_nested(table: pa.Table) -> None:
    for field in table.schema:
        if pa.types.is_nested(field.type):
            raise _fail(f"column {field.name!r} holds nested values ({field.type}); aggregate "
                        "mode releases single values only, since a LIST, STRUCT, MAP or "
                        "UNION can pack the rows of a whole group into one cell")


def _fit(table: pa.Table, allowance: Allowance) -> tuple[int, int, int]:
    """(rows, cells, rows counted) of the longest prefix of ``table`` within the
    allowance; nested values count element by element (``row_cells``, ``row_weights``)."""
    rows = min(table.num_rows, allowance.rows)
    if rows == 0:
        return 0, 0, 0
    if not any(pa.types.is_nested(t) for t in table.schema.types):  # flat: no counting
        width = table.num_columns
        fits = rows if width == 0 else min(rows, allowance.cells // width)
        return fits, fits * width, fits
    head = table.slice(0, rows)
    cells = np.cumsum(row_cells(head))
    weights = np.cumsum(row_weights(head))
    fits = min(int(np.searchsorted(cells, allowance.cells, side="right")),
               int(np.searchsorted(weights, allowance.rows, side="right")))
    if not fits:
        return 0, 0, 0
    return fits, int(cells[fits - 1]), int(weights[fits - 1])


def postcheck(table: pa.Table, rewritten: Rewritten,
              allowance: Allowance | None = None) -> Released:
    names = [name.lower() for name in table.column_names]
    for name in names:
        if name in rewritten.forbidden_columns:
            raise _fail(f"column {name!r} is not allowed in this scenario")
        if name.startswith(RESERVED_PREFIX) and name not in rewritten.hidden_columns:
            raise _fail(f"unexpected internal column {name!r}")
    if rewritten.mode is Mode.aggregate:
        _refuse_nested(table.select([i for i, name in enumerate(names)
                                     if not name.startswith(RESERVED_PREFIX)]))
    suppressed = 0
    if rewritten.mode is Mode.aggregate:
        if rewritten.k is None or GROUP_SIZE_COLUMN not in names:
            raise _fail("group sizes are missing from an aggregate result")
        if names.count(GROUP_SIZE_COLUMN) != 1:
            raise _fail("ambiguous group-size column")
        sizes = table.column(names.index(GROUP_SIZE_COLUMN))
        keep = pc.fill_null(pc.greater_equal(sizes, rewritten.k), False)
        suppressed = table.num_rows - pc.sum(keep).as_py() if table.num_rows else 0
        table = table.filter(keep)
    hidden = [table.column_names[i] for i, name in enumerate(names)
              if name.startswith(RESERVED_PREFIX)]
    kept = table.select(hidden) if hidden else None
    if hidden:
        table = table.drop_columns(hidden)
    allowance = allowance if allowance is not None else Allowance.of(rewritten)
    rows, cells, counted = _fit(table, allowance)
    if rows == 0 and table.num_rows and not allowance.released_rows:
        first = table.slice(0, 1)
        raise _fail(f"its first row alone holds {int(row_cells(first)[0])} cells and counts "
                    f"for {int(row_weights(first)[0])} rows, more than this scenario's "
                    f"limits.result_cells ({rewritten.result_cells}) or max_rows "
                    f"({rewritten.max_rows}); a list or map counts each of its values: "
                    "aggregate fewer rows into one value")
    truncated = rows < table.num_rows
    if truncated:
        table = table.slice(0, rows)
        kept = kept.slice(0, rows) if kept is not None else None
    allowance.rows -= counted
    allowance.cells -= cells
    allowance.released_rows += rows
    return Released(table=table, suppressed_groups=int(suppressed), truncated=truncated,
                    hidden=kept)
