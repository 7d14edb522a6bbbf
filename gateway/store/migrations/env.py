"""Alembic environment: runs on the connection handed over by ``gateway.store.db.upgrade``."""

from __future__ import annotations

from alembic import context

import gateway.airlock.models  # noqa: F401  (registers the airlock table)
import gateway.audit.models  # noqa: F401  (registers the audit tables on Base.metadata)
import gateway.governance.models  # noqa: F401  (registers the governance tables)
import gateway.store.models  # noqa: F401  (registers the tables on Base.metadata)
from gateway.store.db import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `dsb db upgrade`, which supplies the connection")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
