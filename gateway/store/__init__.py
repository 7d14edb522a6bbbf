"""Metadata store: SQLAlchemy models, engine set-up and Alembic migrations."""

from gateway.store.db import Base, Store, open_store

__all__ = ["Base", "Store", "open_store"]
