"""Audit trail: hash-chained events and the head row appenders lock.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
# 64-bit on PostgreSQL (years of events); INTEGER on SQLite, where that is the rowid.
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=False),
        sa.Column("ts", sa.String(27), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor_user", sa.String(128), nullable=False),
        sa.Column("actor_role", sa.String(32), nullable=False),
        sa.Column("actor_org", sa.String(255), nullable=False),
        sa.Column("agreement_id", sa.String(128), nullable=True),
        sa.Column("job_id", sa.String(128), nullable=True),
        sa.Column("datasets", sa.Text, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_events_actor_user", "audit_events", ["actor_user"])
    op.create_index("ix_audit_events_agreement_id", "audit_events", ["agreement_id"])
    op.create_index("ix_audit_events_job_id", "audit_events", ["job_id"])
    op.create_index("ix_audit_events_ts", "audit_events", ["ts"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", SEQ, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_head_single_row"),
    )
    # The row exists from the start so that the first appenders have something to lock.
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_index("ix_audit_events_ts", "audit_events")
    op.drop_index("ix_audit_events_job_id", "audit_events")
    op.drop_index("ix_audit_events_agreement_id", "audit_events")
    op.drop_index("ix_audit_events_actor_user", "audit_events")
    op.drop_table("audit_events")
