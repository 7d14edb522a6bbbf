"""Provider accounts name the provider they act for.

Revision ID: 0007
Revises: 0006

Before this, any provider account could act on any dataset. An account with no
provider id (every provider account made before this revision) can act on none until
an operator sets one: ``dsb users set-provider USER PROVIDER_ID``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("provider_id", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("provider_id")
