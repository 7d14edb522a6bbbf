"""Privacy guard: epsilon budgets, cached noisy answers, released entity sets.

Revision ID: 0008
Revises: 0007

Numbered after the others although written alongside 0005: an installation already
at 0007 must still receive it (a revision slotted in before its head would be skipped).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "privacy_budgets",
        sa.Column("agreement_id", sa.String(128), primary_key=True),
        sa.Column("epsilon_spent", sa.Float, nullable=False),
        sa.Column("noisy_releases", sa.Integer, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "noisy_answers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agreement_id", sa.String(128), nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("epsilon", sa.Float, nullable=False),
        sa.Column("answer", sa.LargeBinary, nullable=False),
        sa.Column("report", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("agreement_id", "cache_key"),
    )
    op.create_table(
        "audit_entities",
        sa.Column("agreement_id", sa.String(128), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("entity", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("agreement_id", "entity"),
    )
    op.create_table(
        "released_sets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agreement_id", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("measure", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("members", sa.LargeBinary, nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("agreement_id", "fingerprint"),
    )
    # Loads read an agreement's sets in id order, after the last one seen.
    op.create_index("ix_released_sets_agreement_id", "released_sets", ["agreement_id", "id"])
    # Shown with each job's result: noise scales, epsilon, whether it was a cached answer.
    op.add_column("jobs", sa.Column("privacy", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("jobs", "privacy")
    op.drop_index("ix_released_sets_agreement_id", "released_sets")
    for table in ("released_sets", "audit_entities", "noisy_answers", "privacy_budgets"):
        op.drop_table(table)
