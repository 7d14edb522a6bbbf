"""Add calibrated noise to bounded statistics (OpenDP's Laplace mechanisms).

The sampling is OpenDP's, not ours: integer counts get the discrete Laplace mechanism,
sums of clamped floats the (exact, floating-point-safe) continuous one. Each column of
statistics is one vector release whose L1 sensitivity follows from the contribution
bounds the rewriter enforced (``bound_contributions``): one entity contributes at most
``max_rows_per_entity`` rows to the whole result, each summed value within its clamp
bounds. The scale is found by OpenDP's own ``binary_search_param`` against its privacy
map, so the scale is whatever the library certifies for that epsilon.

A query's epsilon is split evenly over its noisy output columns and the entity counts
that k is checked against; an average splits its share between its two measurements, a
noisy sum and a noisy count. Everything after the
noise (averages, rounding negative counts up to 0, sorting, LIMIT) is post-processing
and costs no privacy.

    >>> scale_for(integer=True, sensitivity=10, epsilon=1.0)
    10.0
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import opendp.prelude as dp
import pyarrow as pa
import pyarrow.compute as pc

from gateway.privacy.plan import NoisePlan, NoisyOutput, Statistic
from gateway.rewrite.context import GROUP_SIZE_COLUMN

# OpenDP gates constructors that have not been through its full vetting process behind
# "contrib"; the Laplace mechanisms used here are among them in 0.16.
dp.enable_features("contrib")

MECHANISM = f"Laplace (OpenDP {dp.__version__}: discrete for counts, continuous for sums)"


@dataclass(frozen=True)
class ColumnNoise:
    statistic: str
    scale: float  # of the noise on the count (count) or on the sum (sum, avg)
    count_scale: float | None = None  # avg: the noise on its count


@dataclass(frozen=True)
class NoiseReport:
    """What was added, for the user: a column's noise is Laplace with this scale."""

    epsilon: float
    max_rows_per_entity: int
    columns: dict[str, ColumnNoise] = field(default_factory=dict)
    # Scale of the noise on each group's entity count, which k is checked against.
    threshold_scale: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"mechanism": MECHANISM, "epsilon": self.epsilon,
                "max_rows_per_entity": self.max_rows_per_entity,
                "threshold_scale": self.threshold_scale,
                "columns": {name: {k: v for k, v in vars(c).items() if v is not None}
                            for name, c in self.columns.items()}}


def _space(integer: bool) -> tuple[Any, Any]:
    if integer:
        return dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64")
    return dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l1_distance(T=float)


@functools.lru_cache(maxsize=256)
def _mechanism(integer: bool, sensitivity: float, epsilon: float) -> tuple[Any, float]:
    domain, metric = _space(integer)
    d_in: int | float = int(sensitivity) if integer else float(sensitivity)
    scale = dp.binary_search_param(
        lambda s: dp.m.make_laplace(domain, metric, scale=s), d_in=d_in, d_out=epsilon)
    measurement = dp.m.make_laplace(domain, metric, scale=scale)
    if measurement.map(d_in) > epsilon:  # type: ignore[no-untyped-call]  # fail closed if the search ever overshoots
        raise ValueError(f"OpenDP could not certify epsilon {epsilon} at scale {scale}")
    return measurement, float(scale)


def scale_for(*, integer: bool, sensitivity: float, epsilon: float) -> float:
    return _mechanism(integer, sensitivity, epsilon)[1]


def _release(values: np.ndarray, *, integer: bool, sensitivity: float, epsilon: float
             ) -> tuple[np.ndarray, float]:
    measurement, scale = _mechanism(integer, sensitivity, epsilon)
    if len(values) == 0:
        return values, scale
    noisy = measurement([int(v) for v in values] if integer else [float(v) for v in values])
    return np.asarray(noisy, dtype=np.int64 if integer else np.float64), scale


def _column(table: pa.Table, name: str, dtype: Any) -> np.ndarray:
    return np.asarray(pc.fill_null(table.column(name), 0).to_numpy(zero_copy_only=False),
                      dtype=dtype)


def _noisy(table: pa.Table, output: NoisyOutput, plan: NoisePlan, epsilon: float
           ) -> tuple[pa.Array, ColumnNoise]:
    rows = plan.max_rows_per_entity
    epsilon = epsilon / output.measurements
    count: np.ndarray | None = None
    count_scale = None
    if output.count_column is not None:
        count, count_scale = _release(_column(table, output.count_column, np.int64),
                                      integer=True, sensitivity=rows, epsilon=epsilon)
        count = np.maximum(count, 0)
    if output.statistic is Statistic.rows:
        assert count is not None and count_scale is not None
        return pa.array(count, pa.int64()), ColumnNoise("count", count_scale)
    assert output.sum_column is not None and output.bounds is not None
    lower, upper = output.bounds
    total, scale = _release(_column(table, output.sum_column, np.float64), integer=False,
                            sensitivity=rows * max(abs(lower), abs(upper)), epsilon=epsilon)
    if output.statistic is Statistic.total:
        return pa.array(total, pa.float64()), ColumnNoise("sum", scale)
    assert count is not None
    # A noisy count below 1 makes the ratio meaningless: NULL, not a wild number.
    mean = np.clip(total / np.maximum(count, 1), lower, upper)
    return (pa.array(mean, pa.float64(), mask=count < 1),
            ColumnNoise("avg", scale, count_scale=count_scale))


def _ordered(table: pa.Table, plan: NoisePlan) -> pa.Table:
    if plan.order_by:
        # Positions, not names: two output columns may share a name.
        keyed = pa.table({f"c{i}": table.column(i) for i in range(len(plan.outputs))})
        keys = [(f"c{o.index}", "descending" if o.descending else "ascending")
                for o in plan.order_by]
        table = table.take(pc.sort_indices(keyed, sort_keys=keys))
    if plan.limit is not None:
        table = table.slice(0, plan.limit)
    return table


def apply_noise(table: pa.Table, plan: NoisePlan) -> tuple[pa.Table, NoiseReport]:
    """The released columns (noisy) in the user's order, then ``__dsb_n`` for the post-check.

    ``__dsb_n`` (the entities behind each group, checked against k) gets noise too, from
    its own share of epsilon, and a group is released only when both the exact and the
    noisy count reach k: with the exact count alone, a group's presence is an exact answer
    and a binary search over a condition finds one person's value through it (24 queries
    in round four of the red team); now each step near k takes repeated, charged queries.
    ORDER BY and LIMIT of the user's statement are applied here, on the noisy values.
    """
    epsilon = plan.epsilon / (len(plan.noisy) + 1)  # per column, and one for the threshold
    columns: list[pa.Array | pa.ChunkedArray] = []
    names: list[str] = []
    exact = _column(table, GROUP_SIZE_COLUMN, np.int64)
    noisy, threshold_scale = _release(exact, integer=True,
                                      sensitivity=plan.max_rows_per_entity, epsilon=epsilon)
    # Both must reach k: never a group of fewer than k entities, and no sharp edge at k.
    sizes = np.minimum(exact, noisy) if len(exact) else exact
    report = NoiseReport(plan.epsilon, plan.max_rows_per_entity,
                         threshold_scale=threshold_scale)
    for output in plan.outputs:
        if isinstance(output, str):
            columns.append(table.column(output))
            names.append(output)
            continue
        values, noise = _noisy(table, output, plan, epsilon)
        columns.append(values)
        names.append(output.name)
        report.columns[output.name] = noise
    columns.append(pa.array(sizes, pa.int64()))
    names.append(GROUP_SIZE_COLUMN)
    return _ordered(pa.table(columns, names=names), plan), report
