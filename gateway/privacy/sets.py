"""The entity sets a released aggregate result was computed over, read from its hidden column.

Per released row, ``__dsb_sets`` (see ``gateway.rewrite.entity_sets``) lists each set of
rows its aggregates used as a histogram (keyed entity hash -> rows) with what was
measured over it. Besides those, the user can add up released rows: for each set
position, the rows together form one more set (the complement of a suppressed group is
exactly such a sum), so that union is audited too.

    >>> s = EntitySet.of("income", [7, 3, 7], [1, 1, 2], "the total")
    >>> s.entities.tolist(), s.rows.tolist(), s.size
    ([3, 7], [1, 3], 2)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from gateway.rewrite.context import SETS_COLUMN, Rewritten
from gateway.rewrite.postcheck import Released

LABEL_CHARS = 200


@dataclass(frozen=True)
class EntitySet:
    """Entities (keyed hashes) with their row counts, and what was measured."""

    measure: str
    entities: np.ndarray  # uint64, unique
    rows: np.ndarray  # uint64, aligned with entities
    label: str

    @classmethod
    def of(cls, measure: str, entities: Iterable[int] | np.ndarray,
           rows: Iterable[int] | np.ndarray, label: str) -> EntitySet:
        """Merge duplicates (summing their rows) and sort by entity."""
        keys = np.asarray(entities, dtype=np.uint64)
        counts = np.asarray(rows, dtype=np.uint64)
        unique, inverse = np.unique(keys, return_inverse=True)
        summed = np.bincount(inverse, weights=counts, minlength=len(unique))
        return cls(measure, unique, summed.astype(np.uint64), label[:LABEL_CHARS])

    @property
    def size(self) -> int:
        return len(self.entities)


def _label(table: pa.Table, keys: tuple[str, ...], row: int) -> str:
    present = [k for k in keys if k in table.column_names]
    if not present:
        return "the total" if table.num_rows == 1 else f"row {row + 1}"
    values = ", ".join(f"{k} = {table.column(k)[row].as_py()!r}" for k in present)
    return f"the group {values}"


def released_sets(released: Released, rewritten: Rewritten) -> list[EntitySet]:
    """Every set of the released rows, then per set position the union over rows."""
    hidden = released.hidden
    if not rewritten.audited or hidden is None or SETS_COLUMN not in hidden.column_names:
        return []
    column: Any = hidden.column(SETS_COLUMN).combine_chunks()
    if len(column) == 0:
        return []
    row_offsets = column.offsets.to_numpy()
    entries = column.values
    measures = entries.field("m").to_pylist()
    histograms = entries.field("h")
    h_offsets = histograms.offsets.to_numpy()
    keys = histograms.keys.to_numpy(zero_copy_only=False)
    counts = histograms.items.to_numpy(zero_copy_only=False)
    out: list[EntitySet] = []
    unions: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    for row in range(len(column)):
        label = _label(released.table, rewritten.key_columns, row)
        for position, entry in enumerate(range(row_offsets[row], row_offsets[row + 1])):
            start, end = h_offsets[entry], h_offsets[entry + 1]
            if start == end:
                continue
            # A histogram's keys are unique already: no merge needed.
            entities, rows = keys[start:end], counts[start:end]
            for what in measures[entry]:
                out.append(EntitySet(what, entities, rows, label[:LABEL_CHARS]))
                unions.setdefault((position, what), []).append((entities, rows))
    # Over an inner aggregate, a row's sets are its inner groups (in no fixed position):
    # each is audited as released; unions by position would mean nothing there.
    two_level = rewritten.form is not None and rewritten.form.levels > 1
    for (_, what), parts in unions.items() if not two_level else []:
        if len(parts) > 1:
            out.append(EntitySet.of(what, np.concatenate([p[0] for p in parts]),
                                    np.concatenate([p[1] for p in parts]),
                                    "the sum of all its groups"))
    return out
