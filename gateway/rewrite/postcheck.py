"""Defence in depth: check an executed result again before it is released.

The rewriter already guarantees these properties; the post-check makes a bug in it
fail closed instead of leaking:

- no column named like a column the scenario does not allow, nor any other hidden
  (``__dsb*``) column than the rewriter's own bookkeeping ones;
- aggregate mode: rows whose hidden group size ``__dsb_n`` is below ``k`` (or missing)
  are dropped and counted; the hidden column is stripped;
- at most ``max_rows`` rows (records mode fetches one more, to know it was cut).

    >>> import pyarrow as pa
    >>> # postcheck(pa.table({"carrier": ["AA", "ZZ"], "__dsb_n": [40, 2]}), rewritten_k5)
    >>> # -> Released(table=<carrier: ["AA"]>, suppressed_groups=1, truncated=False)
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _fail(message: str) -> ResultWithheld:
    return ResultWithheld(f"result withheld by the post-check: {message}")


def postcheck(table: pa.Table, rewritten: Rewritten) -> Released:
    names = [name.lower() for name in table.column_names]
    for name in names:
        if name in rewritten.forbidden_columns:
            raise _fail(f"column {name!r} is not allowed in this scenario")
        if name.startswith(RESERVED_PREFIX) and name not in rewritten.hidden_columns:
            raise _fail(f"unexpected internal column {name!r}")
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
    truncated = table.num_rows > rewritten.max_rows
    if truncated:
        table = table.slice(0, rewritten.max_rows)
        kept = kept.slice(0, rewritten.max_rows) if kept is not None else None
    return Released(table=table, suppressed_groups=int(suppressed), truncated=truncated,
                    hidden=kept)
