"""Gateway of the data sandbox: policies, query rewriting, audit, metadata store, CLI."""

__version__ = "0.1.0"
