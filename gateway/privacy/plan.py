"""What the rewriter tells the noise step: which output columns get which noise.

In a scenario with ``noise`` the rewritten statement returns, per group, the key
columns as the user named them and, in hidden columns, the exact bounded statistics
(clamped sums, counts). ``NoisePlan`` says how to turn those into the released columns,
in the user's order, and which ORDER BY / LIMIT to apply once the values are noisy
(sorting by exact values would leak them).

    >>> plan = NoisePlan(outputs=("carrier", NoisyOutput("n", Statistic.rows,
    ...                  count_column="__dsb_v2")), epsilon=1.0, max_rows_per_entity=50)
    >>> plan.noisy[0].name
    'n'
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Statistic(StrEnum):
    """The SQL aggregate a noisy column releases (members named off ``str`` methods)."""

    rows = "count"
    total = "sum"
    mean = "avg"


@dataclass(frozen=True)
class NoisyOutput:
    """One released column computed from hidden exact statistics."""

    name: str
    statistic: Statistic
    sum_column: str | None = None  # clamped sum (sum, avg)
    count_column: str | None = None  # count of contributing rows (count, avg)
    bounds: tuple[float, float] | None = None  # clamp of the summed values (sum, avg)

    @property
    def measurements(self) -> int:
        return 2 if self.statistic is Statistic.mean else 1


@dataclass(frozen=True)
class Ordering:
    index: int  # position in ``NoisePlan.outputs``
    descending: bool = False


@dataclass(frozen=True)
class NoisePlan:
    """Output columns in order: a str is a key column passed through, else noisy."""

    outputs: tuple[str | NoisyOutput, ...]
    epsilon: float
    max_rows_per_entity: int
    order_by: tuple[Ordering, ...] = ()
    limit: int | None = None

    @property
    def noisy(self) -> tuple[NoisyOutput, ...]:
        return tuple(o for o in self.outputs if isinstance(o, NoisyOutput))

    def name(self, output: str | NoisyOutput) -> str:
        return output if isinstance(output, str) else output.name
