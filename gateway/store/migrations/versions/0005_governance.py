"""Governance workflows: objections, complaints, misuse records, usage reports.

Revision ID: 0005
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "objections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset_id", sa.String(128), nullable=False, index=True),
        sa.Column("field", sa.String(128), nullable=False),
        sa.Column("row_range", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("filed_by", sa.String(128), nullable=False),
        sa.Column("filed_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("answered_by", sa.String(128), nullable=False),
        sa.Column("answered_at", TS, nullable=True),
    )
    op.create_table(
        "complaints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset_id", sa.String(128), nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("filed_by", sa.String(128), nullable=False),
        sa.Column("filed_at", TS, nullable=False),
        sa.Column("status", sa.String(24), nullable=False, index=True),
        sa.Column("resolution", sa.Text, nullable=False),
        sa.Column("resolved_by", sa.String(128), nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
    )
    op.create_table(
        "misuse_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False, index=True),
        sa.Column("violation", sa.Text, nullable=False),
        sa.Column("measure", sa.String(16), nullable=False),
        sa.Column("affected", sa.Text, nullable=False),
        sa.Column("recorded_by", sa.String(128), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("published", sa.Boolean, nullable=False),
    )
    op.create_table(
        "usage_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agreement_id", sa.String(128), nullable=False, index=True),
        sa.Column("period_start", sa.Date, nullable=False),
        sa.Column("period_end", sa.Date, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("outputs", sa.Text, nullable=False),
        sa.Column("filed_by", sa.String(128), nullable=False),
        sa.Column("filed_at", TS, nullable=False, index=True),
    )


def downgrade() -> None:
    for table in ("usage_reports", "misuse_records", "complaints", "objections"):
        op.drop_table(table)
